"""MediaPipe's face mesh in video mode on clips, for benchmarks/video.py, run by the Python of a separate venv
(mediapipe 0.10.21 needs numpy<2; its models are in its wheel, so it runs offline):

    python3 -m venv /tmp/mpvenv && /tmp/mpvenv/bin/pip install mediapipe==0.10.21 opencv-python-headless
    /tmp/mpvenv/bin/python benchmarks/video_mediapipe.py OUT.npz FACES:CLIP.mp4...

Imports nothing of kfkd. FACES: the clip's number of faces, FaceMesh's max_num_faces (in video mode it runs its
face detector on every frame where it tracks fewer, so a higher number would slow it on one face). Writes
OUT.npz: for each clip i, `points_i` (frames, FACES, 468, 2): the faces' 468 points in the frame's pixels, NaN
where fewer were found; `seconds_i`: the seconds its frames took, decoding with OpenCV included, one FaceMesh
per clip (made before the clock starts).
"""

import sys
import time

import cv2
import mediapipe as mp
import numpy as np


def run(path: str, faces: int) -> tuple[np.ndarray, float]:
    capture = cv2.VideoCapture(path)
    mesh = mp.solutions.face_mesh.FaceMesh(static_image_mode=False, max_num_faces=faces)
    frames, start = [], time.perf_counter()
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        found = mesh.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).multi_face_landmarks or []
        points = np.full((faces, 468, 2), np.nan)
        h, w = bgr.shape[:2]
        for k, face in enumerate(found):
            points[k] = [(p.x * w, p.y * h) for p in face.landmark[:468]]
        frames.append(points)
    seconds = time.perf_counter() - start
    mesh.close()
    capture.release()
    return np.array(frames), seconds


def main():
    out, clips = sys.argv[1], sys.argv[2:]
    results = {}
    for i, clip in enumerate(clips):
        faces, path = clip.split(":", 1)
        results[f"points_{i}"], results[f"seconds_{i}"] = run(path, int(faces))
    np.savez(out, **results)


if __name__ == "__main__":
    main()

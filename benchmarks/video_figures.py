"""The pictures of docs/video.md, from benchmarks/video.py's answers on held-out (scored) clips:
video_frame.png, a frame of a moving clip with kfkd's tracked keypoints and skeleton; video_jitter.png, the
points' movement from frame to frame on a still clip, kfkd tracked and smoothed against the other systems."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from benchmarks.video import moved
from keypoints.photos import video


def frame_png(path: Path, clip, answer, skeleton, side: int = 320) -> None:
    """The middle frame of `clip` with the tracked faces drawn, cropped about the face, `side` px square."""
    t = len(answer) // 2
    rgb = next(f for i, _, f, _ in video.Source(str(clip.path)) if i == t)
    faces = [video.Tracked(k, box, points) for k, box, points in answer[t]]
    drawn = Image.fromarray(video.annotate(rgb, faces, skeleton))
    box = faces[0].box
    centre, half = (box[:2] + box[2:]) / 2, 0.8 * (box[2] - box[0])
    drawn.crop(tuple(np.r_[centre - half, centre + half].round().astype(int))).resize((side, side)).save(
        path, optimize=True
    )


def movement(clip, answer, mesh: bool) -> np.ndarray:
    """Each frame's movement of the first face's points since the frame before (`moved`; NaN where it was
    not found on both)."""
    out = np.full(len(answer), np.nan)
    for t in range(1, len(answer)):
        if answer[t] and answer[t - 1]:
            out[t] = moved(clip, t, 0, answer[t - 1][0][2], answer[t][0][2], mesh)
    return out


def jitter_png(path: Path, clip, answers: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = {
        "tracked": "kfkd tracked + smoothed",
        "raw": "kfkd tracked, unsmoothed",
        "per-frame": "kfkd finder on every frame (detect)",
        "dlib": "dlib per frame",
        "mediapipe": "MediaPipe face mesh (own eye corners)",
    }
    fig, ax = plt.subplots(figsize=(6.4, 2.8), dpi=100)
    for name, got in ((n, g) for n, g in answers.items() if n in labels):  # `told` would draw over `tracked`
        m = movement(clip, got[clip.name][0], name == "mediapipe")
        ax.plot(np.arange(len(m)) / 30, m, label=f"{labels[name]}: mean {np.nanmean(m):.2f} %", lw=1.2)
    ax.set_xlabel("time (s)")
    ax.set_ylabel("movement per frame\n(% of the NME's eye distance)")
    ax.set_title(f"A still face (clip {clip.name}): any movement is jitter", fontsize=10)
    ax.legend(fontsize=7, loc="upper right")
    ax.set_ylim(bottom=0)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def figures(folder: Path, clips: list, answers: dict, detector) -> None:
    still = next(c for c in clips if c.kind == "still")
    moving = next(c for c in clips if c.kind == "moving")
    folder.mkdir(parents=True, exist_ok=True)
    frame_png(folder / "video_frame.png", moving, answers["tracked"][moving.name][0], detector.skeleton)
    jitter_png(folder / "video_jitter.png", still, answers)
    print(f"wrote {folder / 'video_frame.png'} and {folder / 'video_jitter.png'}")

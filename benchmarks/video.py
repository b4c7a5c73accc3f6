"""Keypoints on video: kfkd tracked (with and without smoothing) against the finder on every frame, dlib and
MediaPipe's face mesh, every system on the same clips with truth (benchmarks/video_clips.py), in one run.

    python -m benchmarks.video MODEL --clips outputs/video/clips/scored [--mediapipe-python /tmp/mpvenv/bin/python]
        [--set KEY=VALUE ...] [--systems NAME ...] [--figures docs]

MODEL: an ibug68 or kaggle15 run or its exported .onnx, trained on people other than the clips' (video_clips.py
makes the clips from an ibug68 run's validation people and lists them in people.csv, for a kaggle15 run's
`data.exclude_groups`). The clips' truth is iBUG's 68 points; a kaggle15 model is scored on Kaggle's 15 made
from them as realfaces makes them (keypoints.data.build.kaggle15). Systems:

- `tracked`: kfkd's Tracker (conf/video.yaml, overridden by `--set`), smoothed; `raw`: the same unsmoothed;
  `told`: tracked, told the clip's number of faces (`max_faces`), as MediaPipe is (its `max_num_faces`), so
  that it stops searching while it tracks them;
- `per-frame`: detect on every frame (the finder, then conf/detect.yaml's re-frames), as `kfkd detect` does;
- `dlib`: dlib's HOG detector upsampled once with its 68-point predictor on every frame, its points at pixel
  centres (+0.5 px), as benchmarks/coco_photos.py scores it (optional: pip install dlib-bin face-recognition-models);
- `mediapipe`: MediaPipe's face mesh 0.10.21 in video mode (it tracks), run by benchmarks/video_mediapipe.py in
  the venv whose Python `--mediapipe-python` names; skipped where it is not given.

`--systems` with none (and `--no-command`) prints only how far the net follows its crop (below).

Figures, over the clips' frames where a face is fully visible (all 68 points in the frame); a true face is
found where a system's box holds the midpoint of its outer eye corners (points 36 and 45):

- found %: of those faces; rolled: those of the moving clips rolled more than 10 degrees;
- NME %: the mean point error over the distance of the model's set's `nme` pair (ibug68: the outer eye
  corners; kaggle15: the eye centres), of the faces found, per kind, in the model's keypoint set (dlib's 68
  points too); MediaPipe gets none (its 468 points are not the 68);
- jitter %: on the still clips (the truth does not move), the mean movement of a point from one frame to the
  next, over that true distance (MediaPipe's: over the distance of its own points 33 and 263);
- lag: on the moving clips, the NME smoothing adds (tracked against raw); and tracked against per-frame on the
  still and moving clips over only the faces both found (a system's own mean leaves out the faces it missed);
- tracks kept %: faces (still, moving and two-face clips) given one id for the whole clip; ids kept: two-face
  clips where both faces keep one id each; re-found: the most frames a cut face waits, after it is fully back
  in the frame, to be found again; wrong faces: boxes that hold no true face's eye midpoint and overlap no
  face (the box of its true points), so that a box on a face leaving the frame is not counted;
- follows its crop: how far the face the net draws moves with its crop (`follows`); a net that follows it
  closely lets a still face's track drift;
- fps: frames per second over the moving clips (640x480, one face), decoding with OpenCV included; for
  tracked, raw, told and MediaPipe the median of `--repeats` passes (3), taken in turns, since one pass's figure
  varies by 10-40 % on a shared host; and
  `kfkd video` end to end (decode, find or track, predict, smooth, write the CSV; the model loaded too) on the
  same clips: as it is, with `--max-faces 1`, and with `--video` (an H.264 MP4).

The host (AVX-512 BF16 or AVX2) and the load averages are printed; compare fps only within one run.
`--figures DIR` writes DIR/video_frame.png (a frame of a scored moving clip with kfkd's keypoints) and
DIR/video_jitter.png (the points' movement over time on a still clip, kfkd against the per-frame path).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from benchmarks.photos import dlib_landmarks
from keypoints.core import keypointset
from keypoints.core.errors import DataError
from keypoints.core.paths import VIDEO
from keypoints.data import build
from keypoints.photos import detect, video
from keypoints.photos.framefit import face_in

SYSTEMS = ("tracked", "raw", "told", "per-frame", "dlib", "mediapipe")
FAST = ("tracked", "raw", "told", "mediapipe")  # timed in `--repeats` passes
KINDS = ("still", "moving", "cut", "two", "real")
OUTER = (36, 45)  # ibug68's outer eye corners: where a face is (their midpoint), and its roll
MESH_OUTER = (33, 263)  # MediaPipe's
FROM_IBUG68 = {"ibug68": lambda points: points, "kaggle15": build.kaggle15}  # the truth in each set scored


class Clip:
    """One of video_clips.py's clips: its MP4, kind (from its name) and truth (iBUG's 68 points, and in the
    `keypoint_set` scored), with each true face's normalising distance (the set's `nme` pair) and roll on each
    frame."""

    def __init__(self, mp4: Path, keypoint_set: keypointset.KeypointSet):
        self.path, self.name = mp4, mp4.stem
        self.kind = mp4.stem.rstrip("0123456789")
        truth = np.load(mp4.with_suffix(".npz"))
        self.points, self.visible = truth["points"], truth["visible"]  # (T, F, 68, 2), (T, F)
        self.truth = FROM_IBUG68[keypoint_set.name](self.points)  # (T, F, K, 2)
        a, b = (keypoint_set.names.index(k) for k in keypoint_set.nme)
        self.norm = np.linalg.norm(self.truth[:, :, b] - self.truth[:, :, a], axis=-1)  # (T, F)
        eyes = self.points[:, :, OUTER[1]] - self.points[:, :, OUTER[0]]
        self.roll = np.degrees(np.arctan2(eyes[..., 1], eyes[..., 0]))


# A system's answer for a clip: for each frame, its faces as (track id or None, box, points (K, 2)).


def frames(clip: Clip):
    return video.Source(str(clip.path))


def tracked(detector: detect.Detector, cfg, smooth: bool, told: bool = False):
    def run(clip: Clip):
        faces = OmegaConf.merge(cfg, {"max_faces": clip.visible.shape[1]}) if told else cfg
        tracker = video.Tracker(detector, faces, smooth=smooth)
        source, out = frames(clip), []
        start = time.perf_counter()
        for _, t, _, grey in source:
            out.append([(f.track, f.box, f.keypoints) for f in tracker.step(grey, t)])
        return out, time.perf_counter() - start

    return run


def per_frame(detector: detect.Detector):
    def run(clip: Clip):
        source, out = frames(clip), []
        start = time.perf_counter()
        for _, _, _, grey in source:
            out.append([(None, f.box, f.keypoints) for f in detector(grey)])
        return out, time.perf_counter() - start

    return run


def dlib(clip: Clip, keypoint_set: str):
    start = time.perf_counter()
    rgbs = [rgb for _, _, rgb, _ in frames(clip)]
    decoded = time.perf_counter() - start
    found = dlib_landmarks(rgbs)
    if found is None:
        return None
    faces, seconds = found
    out = [[(None, f.box, FROM_IBUG68[keypoint_set](f.keypoints + 0.5)) for f in frame] for frame in faces]
    return out, decoded + sum(s["detect"] + s["predict"] for s in seconds)


def mediapipe(python: str, clips: list[Clip]) -> dict | None:
    """MediaPipe's answers for every clip, run in its own venv; None, with a message, where it cannot run."""
    if not python:
        print(
            "mediapipe skipped: give --mediapipe-python (a venv with mediapipe==0.10.21; benchmarks/video_mediapipe.py)"
        )
        return None
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "mediapipe.npz"
        script = Path(__file__).with_name("video_mediapipe.py")
        proc = subprocess.run(
            [python, str(script), str(out), *(f"{c.visible.shape[1]}:{c.path}" for c in clips)],
            capture_output=True,
            text=True,
            env={**os.environ, "GLOG_minloglevel": "2", "TF_CPP_MIN_LOG_LEVEL": "3"},
        )
        if proc.returncode:
            print(f"mediapipe skipped: {python} failed: {proc.stderr.strip().splitlines()[-1:]}")
            return None
        found = np.load(out)
        answers = {}
        for i, clip in enumerate(clips):
            points = found[f"points_{i}"]
            faces = [[(None, np.r_[p.min(0), p.max(0)], p) for p in frame if np.isfinite(p).all()] for frame in points]
            answers[clip.name] = faces, float(found[f"seconds_{i}"])
        return answers


# --- scoring --------------------------------------------------------------------------------------


def matches(clip: Clip, answer) -> tuple[np.ndarray, int]:
    """For each frame and true face, the index of the face found for it (-1: none); and the wrong faces' count:
    boxes that hold no true face's eye midpoint and do not overlap a face partly in the frame either."""
    idx = np.full(clip.visible.shape, -1)
    wrong = 0
    for t, faces in enumerate(answer):
        boxes = np.array([f[1] for f in faces]).reshape(-1, 4)
        mids = clip.points[t][:, list(OUTER)].mean(1)
        for j, mid in enumerate(mids):
            k = face_in(boxes, mid)
            idx[t, j] = -1 if k is None else k
        truth = np.concatenate([clip.points[t].min(1), clip.points[t].max(1)], 1)  # (faces, 4)
        overlaps = (
            np.minimum(boxes[:, None, 2:], truth[None, :, 2:]) > np.maximum(boxes[:, None, :2], truth[None, :, :2])
        ).all(-1)
        wrong += sum(k not in idx[t] and not overlaps[k].any() for k in range(len(boxes)))
    return idx, wrong


def nme(clip: Clip, t: int, j: int, points: np.ndarray) -> float:
    """The NME % of `points` (K, 2) as true face j on frame t: the mean error over its true normalising distance."""
    return float(np.linalg.norm(points - clip.truth[t, j], axis=-1).mean() / clip.norm[t, j] * 100)


def moved(clip: Clip, t: int, j: int, before: np.ndarray, after: np.ndarray, mesh: bool) -> float:
    """The mean movement of face j's points from frame t - 1 to t, in % of its true normalising distance
    (MediaPipe's: of its own points 33 and 263)."""
    norm = np.linalg.norm(after[MESH_OUTER[1]] - after[MESH_OUTER[0]]) if mesh else clip.norm[t, j]
    return float(np.linalg.norm(after - before, axis=-1).mean() / norm * 100)


def score(clips: list[Clip], answers: dict, mesh: bool, ids_given: bool) -> dict:
    """The figures of one system over the clips (module docstring); `ids_given`: whether it keeps ids (tracks)."""
    errors = {k: [] for k in KINDS}
    found = visible = rolled_found = rolled = wrong = 0
    jitter, kept, ids, refound, frames_, seconds = [], [], [], [], 0, 0.0
    for clip in clips:
        answer, secs = answers[clip.name]
        idx, w = matches(clip, answer)
        wrong += w
        vis = clip.visible
        found, visible = found + (idx[vis] >= 0).sum(), visible + vis.sum()
        if clip.kind == "moving":
            tilt = vis & (np.abs(clip.roll) > 10)
            rolled_found, rolled = rolled_found + (idx[tilt] >= 0).sum(), rolled + tilt.sum()
            frames_, seconds = frames_ + len(answer), seconds + secs
        tracks = []
        for j in range(vis.shape[1]):
            got = [(t, answer[t][idx[t, j]]) for t in range(len(answer)) if vis[t, j] and idx[t, j] >= 0]
            if not mesh:
                errors[clip.kind] += [nme(clip, t, j, f[2]) for t, f in got]
            if clip.kind == "still":
                jitter += [
                    moved(clip, t1, j, a[2], b[2], mesh) for (t0, a), (t1, b) in zip(got, got[1:]) if t1 == t0 + 1
                ]
            if clip.kind == "cut":
                back = next(t for t in range(1, len(answer)) if vis[t, j] and not vis[t - 1, j])
                refound.append(next((t - back for t in range(back, len(answer)) if idx[t, j] >= 0), math.inf))
            one = {f[0] for _, f in got}
            tracks.append(one if len(one) == 1 and len(got) == vis[:, j].sum() else None)  # one id, every frame
        if ids_given and clip.kind in ("still", "moving", "two"):
            kept += [t is not None for t in tracks]
            if clip.kind == "two":
                ids.append(None not in tracks and tracks[0] != tracks[1])
    return {
        "fps": frames_ / seconds if seconds else math.nan,
        "found %": 100 * found / visible,
        "rolled found %": 100 * rolled_found / rolled if rolled else math.nan,
        **{f"NME {k} %": np.mean(v) if v else math.nan for k, v in errors.items()},
        "jitter %": np.mean(jitter) if jitter else math.nan,
        "tracks kept %": 100 * np.mean(kept) if kept else math.nan,
        "ids kept": f"{sum(ids)}/{len(ids)}" if ids else "–",
        "re-found (frames)": max(refound) if refound else math.nan,
        "wrong faces": wrong,
    }


def paired_nme(clips: list[Clip], answers: dict, systems: tuple[str, str], kind: str) -> tuple[float, float, int]:
    """Each system's NME % on the `kind` clips over only the faces both found (the faces one system misses are
    often the hard ones, which would favour it in its own mean), and how many those are."""
    errors = []
    for clip in (c for c in clips if c.kind == kind):
        found = [(a, matches(clip, a)[0]) for a in (answers[s][clip.name][0] for s in systems)]
        for t, j in zip(*np.nonzero(clip.visible & (found[0][1] >= 0) & (found[1][1] >= 0))):
            errors.append([nme(clip, t, j, a[t][idx[t, j]][2]) for a, idx in found])
    mean = np.mean(errors, 0) if errors else [math.nan] * 2
    return float(mean[0]), float(mean[1]), len(errors)


def follows(detector: detect.Detector, clips: list[Clip]) -> tuple[float, float]:
    """How far the net follows its crop (`Tracker.follows`), on the still clips' first frames, each face framed by
    its true anchors: 0, it finds the face wherever it is cropped; 1, it draws a face where its crop says one is,
    so that a track re-framed from its keypoints stays wherever noise leaves it."""
    tracker, measured = video.Tracker(detector), []
    for clip in (c for c in clips if c.kind == "still"):
        source = frames(clip)
        try:
            grey = next(iter(source))[3]
        finally:
            source.close()
        measured.append(tracker.follows(grey, tracker.fit(clip.truth[0, 0].reshape(-1)[detector.columns])[0]))
    return tuple(float(m) for m in np.mean(measured, 0))


def command_fps(model: str, clips: list[Clip], options: list[str]) -> float:
    """`kfkd video` end to end over the clips with `options` (A.MP4 in them: a temporary file), in this process,
    with conf/video.yaml as it is: frames per second of wall time, loading the model for each clip included."""
    done = 0
    with tempfile.TemporaryDirectory() as tmp:
        options = [str(Path(tmp) / "a.mp4") if o == "A.MP4" else o for o in options]
        start = time.perf_counter()
        for clip in clips:
            video.main([str(clip.path), "--model", model, "--out", tmp, *options])
            done += len(clip.visible)
        return done / (time.perf_counter() - start)


def fps_again(name: str, run, python: str | None, moving: list[Clip]) -> float | None:
    """Frames per second of one more pass of system `name` (its `run`, or MediaPipe by `python`) over the
    moving clips; None where MediaPipe failed this time (it says so)."""
    got = mediapipe(python, moving) if name == "mediapipe" else {c.name: run(c) for c in moving}
    return None if got is None else sum(len(a) for a, _ in got.values()) / sum(s for _, s in got.values())


def host() -> str:
    with open("/proc/cpuinfo") as f:
        kind = "AVX-512 BF16" if "avx512_bf16" in f.read() else "AVX2"
    return f"{kind}, {os.cpu_count()} cores"


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])

    def cell(v):
        return (
            f"{v:.3f}"
            if isinstance(v, float) and not math.isnan(v) and abs(v) < 10
            else (
                f"{v:.1f}" if isinstance(v, float) and not math.isnan(v) else ("–" if isinstance(v, float) else str(v))
            )
        )

    lines = ["| " + " | ".join(cols) + " |", "|" + " --- |" * len(cols)]
    lines += ["| " + " | ".join(cell(r[c]) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="an ibug68 or kaggle15 run or its exported .onnx")
    parser.add_argument("--clips", default="outputs/video/clips/scored", help="a folder of video_clips.py's clips")
    parser.add_argument("--mediapipe-python", help="the Python of a venv with mediapipe==0.10.21")
    parser.add_argument("--set", nargs="*", default=[], help="conf/video.yaml overrides, KEY=VALUE")
    parser.add_argument("--systems", nargs="*", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument("--no-command", action="store_true", help="skip timing `kfkd video` end to end")
    parser.add_argument("--figures", help="a folder for video_frame.png and video_jitter.png")
    parser.add_argument(
        "--repeats", type=int, default=3, help="timed passes of tracked, raw, told and MediaPipe over the moving clips"
    )
    args = parser.parse_args()
    cfg = OmegaConf.merge(OmegaConf.load(VIDEO), OmegaConf.from_dotlist(args.set))
    try:
        detector = detect.Detector(args.model, threads=cfg.onnx_threads)
    except DataError as error:
        raise SystemExit(f"error: {error}") from None
    set_name = detector.model.keypoint_set
    if set_name not in FROM_IBUG68:
        raise SystemExit(
            f"error: {args.model}: keypoint set {set_name}; the clips' truth scores {' and '.join(FROM_IBUG68)}"
        )
    keypoint_set = keypointset.load(set_name)
    clips = [Clip(p, keypoint_set) for p in sorted(Path(args.clips).glob("*.mp4"))]
    print(f"host: {host()}; load averages at the start: {os.getloadavg()}")
    print(f"{len(clips)} clips, {sum(len(c.visible) for c in clips)} frames: {args.clips}")
    print(f"{set_name}: NME over the distance of {' and '.join(keypoint_set.nme)}")
    if any(c.kind == "still" for c in clips):
        shift, zoom = follows(detector, clips)
        print(f"the net follows its crop (the still clips' first frames): {shift:.3f} of a shift, {zoom:.3f} of a zoom")
    runs = {
        "tracked": tracked(detector, cfg, True),
        "raw": tracked(detector, cfg, False),
        "told": tracked(detector, cfg, True, told=True),
        "per-frame": per_frame(detector),
        "dlib": lambda clip: dlib(clip, set_name),
    }
    answers = {}
    for name in args.systems:
        if name == "mediapipe":
            got = mediapipe(args.mediapipe_python, clips)
        else:
            got = {}
            for clip in clips:
                got[clip.name] = runs[name](clip)
                if got[clip.name] is None:  # dlib not installed
                    got = None
                    break
        if got is not None:
            answers[name] = got
    rows = [
        {"system": name, **score(clips, got, name == "mediapipe", name in ("tracked", "raw", "told"))}
        for name, got in answers.items()
    ]
    # The fast systems' fps vary by 10-40 % from pass to pass on a shared host: each is timed again, in turns,
    # and its median pass is the figure.
    moving = [c for c in clips if c.kind == "moving"]
    timed = {r["system"]: [r["fps"]] for r in rows if r["system"] in FAST and moving}
    for _ in range(args.repeats - 1):
        for name, passes in timed.items():
            if (fps := fps_again(name, runs.get(name), args.mediapipe_python, moving)) is not None:
                passes.append(fps)
    for row in rows:
        if row["system"] in timed:
            row["fps"] = float(np.median(timed[row["system"]]))
            print(f"fps of {row['system']}, pass by pass: {', '.join(f'{f:.1f}' for f in timed[row['system']])}")
    if "tracked" in answers and "raw" in answers and moving:
        lag = rows[list(answers).index("tracked")]["NME moving %"] - rows[list(answers).index("raw")]["NME moving %"]
        print(f"lag (NME smoothing adds on the moving clips): {lag:+.3f} points")
    if "tracked" in answers and "per-frame" in answers:
        for kind in [k for k in ("still", "moving") if any(c.kind == k for c in clips)]:
            a, b, n = paired_nme(clips, answers, ("tracked", "per-frame"), kind)
            print(f"NME {kind} on the {n} faces both found: tracked {a:.3f} %, per-frame {b:.3f} %")
    if args.set and not args.no_command:
        print("kfkd video end to end: skipped, since the command reads conf/video.yaml and --set is given")
    elif not args.no_command and moving:
        for options in ([], ["--max-faces", "1"], ["--video", "A.MP4"]):
            fps = command_fps(args.model, moving, options)
            print(f"kfkd video {' '.join(options)} end to end on the moving clips: {fps:.1f} fps")
    print(f"load averages at the end: {os.getloadavg()}")
    if rows:
        print(markdown(rows))
    if args.figures:
        from benchmarks.video_figures import figures

        figures(Path(args.figures), clips, answers, detector)


if __name__ == "__main__":
    sys.exit(main())

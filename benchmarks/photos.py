"""Keypoints on labelled photos: kfkd's detect pipeline against dlib's 68-point shape predictor, and
onnxruntime against torch.

    python -m benchmarks.photos MODEL --photos DATA/photos [--data DATA/realfaces] [--set KEY=VALUE ...]

MODEL: a run, checkpoint or sweep directory that never trained on the photos' people. DATA/photos:
keypoints.csv (`file`, Kaggle's 30 columns in the photo's pixels, `person`) and the photos (docs/data.md).
The score: each photo's errors scaled so that its true inter-ocular distance is 36.1 px,
then the RMSE over all coordinates of the faces found. It is reported without and with refinement
and flip TTA, with each photo's latency split into detect, frame and predict; beside it, dlib's HOG
detector with its 68-point predictor (optional: pip install dlib-bin face-recognition-models),
reduced to the 15 keypoints (IBUG below); and, as the framing's ceiling, the net on
realfaces' own 96x96 crops of the same faces. Last, the exported .onnx against torch at
batch 1 and 256 on the same faces. `--set` overrides conf/detect.yaml (e.g. --set rotate=true refine=2).
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import OmegaConf

from keypoints.core import keypointset
from keypoints.data import framing, images
from keypoints.inference import export
from keypoints.inference import predictor as inference
from keypoints.photos import detect
from keypoints.photos.framefit import face_in

KAGGLE15 = keypointset.load("kaggle15")  # the photos' labels: Kaggle's 15 keypoints

IOD = 36.1  # the mean inter-ocular distance of Kaggle's 96x96 faces: the score's scale
# iBUG 68-point indices behind each of Kaggle's 15 keypoints (a list: their mean), as in the photos' README.
IBUG = [
    list(range(42, 48)),
    list(range(36, 42)),
    [42],
    [45],
    [39],
    [36],
    [22],
    [26],
    [21],
    [17],
    [30],
    [54],
    [48],
    [51],
    [57],
]


def score(predicted: list[np.ndarray | None], truth: np.ndarray) -> float:
    """The scale-free RMSE over the photos where a face was found; predicted[i]: (15, 2) or None.
    Unlabelled keypoints (NaN in `truth`) are left out."""
    errors = []
    for p, t in zip(predicted, truth):
        if p is not None:
            errors.append((p - t) * IOD / np.linalg.norm(t[0] - t[1]))
    return float(np.sqrt(np.nanmean(np.square(errors))))


def labelled_face(faces, t: np.ndarray):
    """The found face that is the labelled one: its box holds the labelled eyes' midpoint."""
    i = face_in(np.array([f.box for f in faces]).reshape(-1, 4), t[:2].mean(0))
    return None if i is None else faces[i]


def kfkd(detector: detect.Detector, greys, truth, refine: int) -> tuple[dict, list]:
    """Scores after each pass (first frame, refinements), faces found, and per-photo stage times."""
    per_pass, seconds, found = [[] for _ in range(refine + 1)], [], 0
    for grey, t in zip(greys, truth):
        result, passes = detector.find(grey, refine)
        seconds.append(result.seconds)
        face = labelled_face(result.faces, t)
        found += face is not None
        for k, points in enumerate(passes):
            if face is None:
                per_pass[k].append(None)
                continue
            i = next(j for j, f in enumerate(result.faces) if f is face)
            per_pass[k].append(detector.as_keypoints(points[i]))
    return {"found": found, "scores": [score(p, truth) for p in per_pass]}, seconds


def dlib_landmarks(colour: list[np.ndarray]):
    """dlib's HOG detector (upsampling once) and 68-point shape predictor on each RGB photo: its faces
    (box, and the 68 iBUG points as dlib gives them, whole pixel indices) and the seconds each stage
    took; None, with a message, where dlib or its model is not installed (pip install '.[compare]')."""
    if importlib.util.find_spec("dlib") is None or importlib.util.find_spec("face_recognition_models") is None:
        print("dlib skipped: pip install dlib-bin face-recognition-models to compare with it")
        return None
    import dlib

    # face_recognition_models' own lookup needs pkg_resources: its model file is found by path instead.
    models = Path(importlib.util.find_spec("face_recognition_models").origin).parent / "models"
    finder = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(str(models / "shape_predictor_68_face_landmarks.dat"))
    found, seconds = [], []
    for image in colour:
        start = time.perf_counter()
        boxes = finder(image, 1)
        middle = time.perf_counter()
        faces = [
            detect.Face(
                np.array([b.left(), b.top(), b.right() + 1, b.bottom() + 1], float),
                np.array([[p.x, p.y] for p in shape(image, b).parts()], np.float64),
            )
            for b in boxes
        ]
        seconds.append({"detect": middle - start, "predict": time.perf_counter() - middle})
        found.append(faces)
    return found, seconds


def dlib_baseline(colour, truth):
    """dlib's 68 points reduced to the 15 keypoints, on the photo's labelled face."""
    landmarks = dlib_landmarks(colour)
    if landmarks is None:
        return None
    predicted, found = [], 0
    for faces, t in zip(landmarks[0], truth):
        face = labelled_face(faces, t)
        found += face is not None
        predicted.append(None if face is None else np.array([face.keypoints[i].mean(0) for i in IBUG]))
    # dlib's landmarks are pixel indices (a pixel's centre is its index); the labels put a pixel's
    # centre at index + 0.5. The photos' README's 2.42 px takes dlib's as they are.
    return {
        "found": found,
        "score": score(predicted, truth),
        "score, pixel centres": score([None if p is None else p + 0.5 for p in predicted], truth),
    }, landmarks[1]


def ceiling(model: str, tta: str | None, labels: pd.DataFrame, truth: np.ndarray, data: Path) -> float:
    """The score of the net on realfaces' own 96x96 crops of these very faces (their `training_row`),
    mapped back to the photos: what a perfect framing would give this net."""
    rows = pd.read_csv(data / "training.csv.gz").iloc[labels["training_row"]]
    faces = np.stack([np.array(i.split(), np.float32) for i in rows["Image"]]) / 255
    size = int(np.sqrt(faces.shape[1]))  # realfaces': 96
    out = inference.load(model, tta == "flip", 256)(faces.reshape(-1, 1, size, size)).reshape(len(faces), -1, 2)
    crop_points = rows[KAGGLE15.columns].to_numpy(np.float64).reshape(len(rows), -1, 2)
    predicted = []
    for t, c, o in zip(truth, crop_points, out):
        known = ~np.isnan(c[:, 0])
        predicted.append(framing.from_points(t[known], c[known], False, size).to_photo(o))
    return score(predicted, truth)


def per_photo_ms(seconds: list[dict]) -> str:
    return ", ".join(f"{k} {1000 * statistics.mean(s[k] for s in seconds):.1f}" for k in seconds[0])


def runtime(model_path: str, faces: np.ndarray, repeats: int) -> None:
    """onnxruntime against torch on the same faces, at batch 1 and 256: ms per batch, and parity."""
    with tempfile.TemporaryDirectory() as tmp:
        onnx_model = inference.load(export.export(model_path, Path(tmp) / "model.onnx"), False, 256)
        torch_model = inference.load(model_path, False, 256)
        print(
            f"onnxruntime vs torch on {len(faces)} faces: largest difference "
            f"{np.abs(onnx_model(faces) - torch_model(faces)).max():.2e} px"
        )
        for batch in (1, 256):
            x = np.resize(faces, (batch, *faces.shape[1:]))
            for name, model in (("torch", torch_model), ("onnxruntime", onnx_model)):
                model(x)  # warm up
                times = []
                for _ in range(repeats if batch == 1 else max(3, repeats // 20)):
                    start = time.perf_counter()
                    model(x)
                    times.append(time.perf_counter() - start)
                ms = 1000 * statistics.median(times)
                print(f"  batch {batch:3d}  {name:11s} {ms:8.2f} ms per batch, {1000 * batch / ms:8.0f} faces/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", help="a run, checkpoint or sweep directory")
    parser.add_argument("--photos", type=Path, required=True, help="labelled photos: keypoints.csv and the photos")
    parser.add_argument(
        "--data",
        type=Path,
        help="realfaces, for the score on its own crops of the photos' faces (skipped if not given)",
    )
    parser.add_argument("--set", nargs="*", default=[], help="conf/detect.yaml overrides, KEY=VALUE")
    parser.add_argument("--repeats", type=int, default=100)
    args = parser.parse_args()
    labels = pd.read_csv(args.photos / "keypoints.csv")
    truth = labels[KAGGLE15.columns].to_numpy(np.float64).reshape(len(labels), -1, 2)
    colour = [np.asarray(images.read(args.photos / f).convert("RGB")) for f in labels["file"]]
    greys = [images.grey(images.from_array(c)) for c in colour]
    cfg = OmegaConf.merge(detect.settings(), OmegaConf.from_dotlist(args.set))
    refine = max(1, cfg.refine)
    print(
        f"{len(labels)} photos; finder {cfg.finder.cascade if 'cascade' in cfg.finder else cfg.finder._target_}, "
        f"refine {cfg.refine}, rotate {cfg.rotate}, max_step {cfg.max_step}"
    )
    rows = []
    for tta in (None, "flip"):
        detector = detect.Detector(args.model, tta, cfg)
        result, seconds = kfkd(detector, greys, truth, refine)
        for k, s in enumerate(result["scores"]):
            rows.append(
                {
                    "method": f"kfkd, {'no refinement' if k == 0 else f'refined x{k}'}{', flip TTA' if tta else ''}",
                    "found": f"{result['found']}/{len(labels)}",
                    "score px": round(s, 3),
                    "ms per photo": per_photo_ms(seconds) if k == cfg.refine else "",
                }
            )
        if args.data is not None and args.data.is_dir():
            rows.append(
                {
                    "method": f"kfkd on realfaces' own crops of these faces{', flip TTA' if tta else ''}",
                    "found": "-",
                    "score px": round(ceiling(args.model, tta, labels, truth, args.data), 3),
                    "ms per photo": "",
                }
            )
    baseline = dlib_baseline(colour, truth)
    if baseline:
        for key, name in (
            ("score", "as the photos' README scores it"),
            ("score, pixel centres", "moved to pixel centres"),
        ):
            rows.append(
                {
                    "method": f"dlib HOG + 68-point predictor, {name}",
                    "found": f"{baseline[0]['found']}/{len(labels)}",
                    "score px": round(baseline[0][key], 3),
                    "ms per photo": per_photo_ms(baseline[1]),
                }
            )
    print(pd.DataFrame(rows).to_string(index=False))
    anchors = [KAGGLE15.names.index(a) for a in detector.anchor_names]
    faces = np.stack(
        [
            framing.from_points(t[anchors], detector.canonical, False, detector.model.size).crop(g, cfg.max_step)
            for g, t in zip(greys, truth)
        ]
    )
    runtime(args.model, faces[:, None].astype(np.float32) / 255, args.repeats)


if __name__ == "__main__":
    main()

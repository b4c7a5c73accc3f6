"""Re-framing measured on people a run never saw, the held-out place to choose conf/detect.yaml's `refine`.

    python -m benchmarks.reframe RUN [--data DATA/realfaces] [--passes 6]

The labelled whole photos (DATA/photos) are what the photos benchmark scores, so the re-framing is
not tuned there. Here each of the run's validation faces (those with every anchor
labelled) is set into a photo as keypoints.photos.framefit sets training faces (padded with its edge
pixels, upscaled), then found, framed from the finder's box and re-framed by the detect pipeline
itself; the photos' scale-free score after each pass, without and with flip TTA. Beside it, the net
on the faces' own 96x96 crops (realfaces' framing, with its random shifts and zooms) and on the
frames that put the labelled anchors exactly where re-framing aims them (a perfect re-frame).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

from benchmarks.photos import KAGGLE15, kfkd, score
from keypoints.core.errors import DataError
from keypoints.data import framing
from keypoints.inference import runs
from keypoints.inference.evaluate import labelled_faces
from keypoints.photos import detect, framefit


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run directory; its validation split is scored")
    parser.add_argument("--data", type=Path, help="realfaces' folder (default: the run's data.dir)")
    parser.add_argument("--passes", type=int, default=6, help="re-frames to score")
    args = parser.parse_args()
    try:
        x, truth = labelled_faces(runs.find([args.run]), None, args.data)
    except DataError as error:
        sys.exit(f"error: {error}")
    truth = truth.reshape(len(truth), -1, 2)
    cfg = detect.settings()
    anchors = [KAGGLE15.names.index(a) for a in KAGGLE15.anchors]
    keep = ~np.isnan(truth[:, anchors]).any((1, 2))
    faces, truth = (x.numpy()[keep, 0] * 255).round().astype(np.uint8), truth[keep]
    photos, placed = [framefit.as_photo(f) for f in faces], framefit.in_photo(truth, faces.shape[-1])
    print(
        f"{len(faces)} validation faces of {args.run} with every anchor labelled, each in a "
        f"{photos[0].shape[1]}x{photos[0].shape[0]} photo; finder {cfg.finder.get('cascade', cfg.finder._target_)}, "
        f"rotate {cfg.rotate}"
    )
    rows = []
    for tta in (None, "flip"):
        detector = detect.Detector(args.run, tta, cfg)
        result, _ = kfkd(detector, photos, placed, args.passes)
        column = "with flip TTA" if tta else "score px"
        for k, s in enumerate(result["scores"]):
            rows.append(
                {
                    "frame": "the finder's box" if k == 0 else f"re-framed x{k}",
                    column: s,
                    "found": f"{result['found']}/{len(faces)}",
                }
            )
        own = detector.model(faces[:, None].astype(np.float32) / 255)
        rows.append({"frame": "realfaces' own crops", column: score([detector.as_keypoints(o) for o in own], truth)})
        perfect = [framing.from_points(t[anchors], detector.canonical, cfg.rotate, detector.model.size) for t in placed]
        predicted = [detector.predict(p, [f], dict.fromkeys(detect.STAGES, 0.0))[0] for p, f in zip(photos, perfect)]
        rows.append(
            {"frame": "labelled anchors' frame", column: score([detector.as_keypoints(p) for p in predicted], placed)}
        )
    table = pd.DataFrame(rows).groupby("frame", sort=False).first().reset_index()  # one row per frame, both columns
    print(table[["frame", "found", "score px", "with flip TTA"]].round(3).fillna("-").to_string(index=False))


if __name__ == "__main__":
    main()

"""Face finders compared on the shared photos: faces found, extra boxes, time, and how well the box
predicts the face's frame (keypoints.framing), the box-to-frame map fitted leave-one-photo-out.

    flock /tmp/kfkd-cpu.lock python -m benchmarks.detectors [--photos ../shared/data/photos] [--data ../shared/data/realfaces]

The frame error is the RMS distance, in pixels of the 96x96 crop, between where the face's anchor
keypoints land in the crop the box predicts and where they sit on average in the training faces;
for scale, the training faces themselves scatter by about 3 px around that average.
"""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from keypoints import framing, images
from keypoints.faces import Cascade, DlibHog
from keypoints.framefit import anchor_points, box_ratios, face_in, training_faces

ANCHORS = ["left_eye_center", "right_eye_center", "mouth_center_bottom_lip"]
LBP = "lbpcascade_frontalface_opencv.xml"  # scikit-image's bundled cascade


class SkimageLbp:
    """scikit-image's own LBP cascade detector (the same cascade file as LBP above)."""

    def __init__(self, min_size: int):
        import skimage.data
        import skimage.feature
        self.cascade = skimage.feature.Cascade(skimage.data.lbp_frontal_face_cascade_filename())
        self.min_size = min_size

    def __call__(self, grey):
        found = self.cascade.detect_multi_scale(grey, scale_factor=1.1, step_ratio=1, min_size=(self.min_size,) * 2,
                                                max_size=grey.shape, min_neighbor_number=4)
        return np.array([[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found], float).reshape(-1, 4)


def candidates() -> dict:
    found = {f"opencv {name}": Cascade(f"haarcascade_frontalface_{name}.xml", 1.1, 4, 20)
             for name in ("default", "alt", "alt2", "alt_tree")}
    found["opencv LBP (scikit-image's cascade)"] = Cascade(LBP, 1.1, 4, 20)
    found["scikit-image LBP"] = SkimageLbp(20)
    try:
        found.update({f"dlib HOG, upsample {n}": DlibHog(n) for n in (0, 1, 2)})
    except Exception as e:  # noqa: BLE001 - dlib is an optional benchmark dependency
        print(f"dlib skipped: {e}")
    return found


def measure(finder, greys: list[np.ndarray], truth: np.ndarray, canonical: np.ndarray) -> dict:
    boxes, seconds = [], []
    for grey in greys:
        start = time.perf_counter()
        boxes.append(finder(grey))
        seconds.append(time.perf_counter() - start)
    matched = [face_in(b, t.mean(0)) for b, t in zip(boxes, truth)]
    ratios = {i: box_ratios(boxes[i][m], framing.from_points(truth[i], canonical, False))
              for i, m in enumerate(matched) if m is not None}
    errors = []
    for i, r in ratios.items():  # leave-one-photo-out: the map from the other photos' faces
        others = np.median([v for j, v in ratios.items() if j != i], 0)
        frame = framing.from_box(boxes[i][matched[i]], dict(zip(("x", "y", "size"), others)))
        errors.append(np.sqrt(((frame.to_crop(truth[i]) - canonical) ** 2).sum(1).mean()))
    return {"found": sum(m is not None for m in matched), "extra boxes": sum(len(b) for b in boxes) - len(ratios),
            "ms/photo": 1000 * statistics.median(seconds), "frame error px (LOPO)": float(np.sqrt(np.mean(np.square(errors))))}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, default=Path("../shared/data/photos"))
    parser.add_argument("--data", type=Path, default=Path("../shared/data/realfaces"))
    args = parser.parse_args()
    labels = pd.read_csv(args.photos / "keypoints.csv")
    greys = [images.grey(images.read(args.photos / f)) for f in labels["file"]]
    truth = anchor_points(labels, ANCHORS)
    rows, _ = training_faces(args.data, args.photos / "keypoints.csv")
    canonical = anchor_points(rows, ANCHORS).mean(0)
    results = {name: measure(finder, greys, truth, canonical) for name, finder in candidates().items()}
    print(pd.DataFrame(results).T.to_string(float_format="%.2f"))


if __name__ == "__main__":
    main()

"""Face finders compared on labelled photos: faces found, extra boxes, time, and how well the box
predicts the face's frame (keypoints.data.framing), the box-to-frame map fitted leave-one-photo-out; and,
for the finder of conf/detect.yaml, with the map that `kfkd framefit` learned from
realfaces' training faces (conf/framing.yaml), which never saw the photos' people.

    python -m benchmarks.detectors --photos DATA/photos --data DATA/realfaces

DATA: the folder `kfkd data` builds, with your labelled photos in DATA/photos (docs/data.md).

The frame error is the RMS distance, in pixels of the 96x96 crop, between where the face's anchor
keypoints land in the crop the box predicts and where they sit on average in the training faces;
for scale, the benchmark prints how far the training faces' own anchors scatter around that average.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import pandas as pd

from keypoints.core import keypointset
from keypoints.data import framing, images
from keypoints.data.framing import box_ratios
from keypoints.photos import detect
from keypoints.photos.finders import Cascade, DlibHog
from keypoints.photos.framefit import anchor_points, face_in, labelled_anchors, training_faces


class SkimageLbp:
    """scikit-image's LBP cascade (OpenCV 4.14 cannot load its file, so scikit-image's own detector runs it)."""

    def __init__(self, min_size: int):
        import skimage.data
        import skimage.feature

        self.cascade = skimage.feature.Cascade(skimage.data.lbp_frontal_face_cascade_filename())
        self.min_size = min_size

    def __call__(self, grey):
        found = self.cascade.detect_multi_scale(
            grey,
            scale_factor=1.1,
            step_ratio=1,
            min_size=(self.min_size,) * 2,
            max_size=grey.shape,
            min_neighbor_number=4,
        )
        boxes = [[d["c"], d["r"], d["c"] + d["width"], d["r"] + d["height"]] for d in found]
        return np.array(boxes, float).reshape(-1, 4)


def candidates() -> dict:
    found = {
        f"opencv Haar {name}": Cascade(f"haarcascade_frontalface_{name}.xml", 1.1, 4, 20)
        for name in ("default", "alt", "alt2", "alt_tree")
    }
    found["opencv Haar alt2, min_neighbors 5"] = Cascade("haarcascade_frontalface_alt2.xml", 1.1, 5, 20)
    try:
        found["scikit-image LBP"] = SkimageLbp(20)
    except ImportError:
        print("scikit-image skipped: pip install scikit-image to compare with its LBP cascade")
    try:
        found.update({f"dlib HOG, upsample {n}": DlibHog(n) for n in (0, 1, 2)})
    except Exception as e:  # noqa: BLE001 - dlib is an optional benchmark dependency
        print(f"dlib skipped: {e}")
    return found


def measure(
    finder, greys: list[np.ndarray], truth: np.ndarray, canonical: np.ndarray, fitted: dict | None, size: int
) -> dict:
    """Faces found, stray boxes, time, and how far the box's frame (of a `size` px crop) puts the anchors."""
    boxes, seconds = [], []
    for grey in greys:
        start = time.perf_counter()
        boxes.append(finder(grey))
        seconds.append(time.perf_counter() - start)
    matched = [face_in(b, t.mean(0)) for b, t in zip(boxes, truth)]
    ratios = {
        i: box_ratios(boxes[i][m], framing.from_points(truth[i], canonical, False, size))
        for i, m in enumerate(matched)
        if m is not None
    }

    def error(i, box_to_frame):  # RMS distance of the anchors from their canonical places in the crop
        frame = framing.from_box(boxes[i][matched[i]], box_to_frame, size)
        return np.sqrt(((frame.to_crop(truth[i]) - canonical) ** 2).sum(1).mean())

    def rms(errors):
        return float(np.sqrt(np.mean(np.square(errors))))

    # leave-one-photo-out: each photo's map from the other photos' faces
    lopo = [
        error(i, dict(zip(("x", "y", "size"), np.median([v for j, v in ratios.items() if j != i], 0)))) for i in ratios
    ]
    return {
        "found": sum(m is not None for m in matched),
        "extra boxes": sum(len(b) for b in boxes) - len(ratios),
        "ms/photo": 1000 * statistics.mean(seconds),
        "frame error px, LOPO map": rms(lopo),
        "frame error px, realfaces map": rms([error(i, fitted) for i in ratios]) if fitted else np.nan,
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=Path, required=True, help="labelled photos: keypoints.csv and the photos")
    parser.add_argument("--data", type=Path, required=True, help="realfaces (kfkd data realfaces)")
    args = parser.parse_args()
    labels = pd.read_csv(args.photos / "keypoints.csv")
    greys = [images.grey(images.read(args.photos / f)) for f in labels["file"]]
    cfg = detect.settings()
    anchors = keypointset.load("kaggle15").anchors  # the photos' labels are Kaggle's
    truth = anchor_points(labels, anchors)
    rows, faces = training_faces(args.data, args.photos / "keypoints.csv")
    points = labelled_anchors(rows, anchors)[0]
    canonical = points.mean(0)
    print(
        f"the training faces' own anchors scatter by {np.sqrt(((points - canonical) ** 2).sum(2).mean()):.2f} px "
        f"(RMS distance from their mean places)"
    )
    configured = Cascade(**{k: v for k, v in cfg.finder.items() if k != "_target_"})
    results = {
        f"{name}{' (conf/detect.yaml)' if name == 'configured' else ''}": measure(
            finder, greys, truth, canonical, dict(cfg.box_to_frame) if name == "configured" else None, faces.shape[-1]
        )
        for name, finder in {"configured": configured, **candidates()}.items()
    }
    print(pd.DataFrame(results).T.to_string(float_format="%.2f"))


if __name__ == "__main__":
    main()

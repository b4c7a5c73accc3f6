"""Keypoints on the whole photos of people a net never saw: a COCO run's validation faces (the person
split) found, framed and re-framed by detect with kfkd's own face finder; NME, failure rate, faces
found and latency; beside it, in the same run, dlib's HOG detector (upsampled once) with its 68-point
shape predictor on the same photos, for runs of the ibug68 set (optional: pip install -e '.[compare]').

    python -m benchmarks.coco_photos RUN [--data DIR] [--set KEY=VALUE ...]

RUN: a run (or sweep) trained with data=coco; its validation faces are those it held out
(data.groups=person: people it never saw), each scored in its whole photo, in the photo's pixels. A
face counts as found where a box of the finder holds the midpoint of its true nme pair (ibug68: the
outer eye corners); the NME (keypoints.training.metrics) and the failure rate are over the faces found. Rows:
each pass of detect (the finder's box, then each re-frame) without and with flip TTA; the net on
frames that put the true anchors where re-framing aims them (a perfect re-frame); dlib as it gives
its points (whole pixel indices) and moved to pixel centres (+0.5 px). `--set` overrides
conf/detect.yaml (e.g. --set refine=5).
"""

from __future__ import annotations

import argparse
import statistics
import sys

import numpy as np
import pandas as pd
from hydra.utils import instantiate
from omegaconf import OmegaConf

from benchmarks.photos import dlib_landmarks, per_photo_ms
from keypoints.core.errors import DataError
from keypoints.data import framing
from keypoints.inference import runs
from keypoints.photos import detect
from keypoints.photos.framefit import face_in
from keypoints.training.metrics import FAILURE_PCT, keypoint_nme, nme_pair


def validation_photos(run: str, data: str | None):
    """The run's validation faces: the COCO data, and for each photo with any, its index and the faces'
    true keypoints of the set (F, K, 2; NaN where unlabelled)."""
    found = runs.find([run])
    cfg = found[0].cfg
    if "annotations" not in cfg.data:
        raise DataError(
            f"{run}: trained on Kaggle-format crops; this benchmark scores runs trained with data=coco "
            f"(benchmarks/photos.py scores the shared photos)"
        )
    datamodule = instantiate(cfg.data, **({"dir": data} if data else {}), columns=found[0].columns)
    datamodule.setup()
    coco, keypoint_set = datamodule.coco, found[0].keypoint_set
    points = coco.points[:, coco.keypoints(keypoint_set.names, f"the keypoint set {keypoint_set.name}")]
    photos = [
        (i, points[datamodule.validation & (coco.image == i)]) for i in np.unique(coco.image[datamodule.validation])
    ]
    return coco, keypoint_set, photos


def matched(faces: list[detect.Face], truth: np.ndarray, pair: tuple[int, int]) -> list[int | None]:
    """For each true face (K, 2), the found face whose box holds the midpoint of its nme pair."""
    boxes = np.array([f.box for f in faces]).reshape(-1, 4)
    return [face_in(boxes, t[list(pair)].mean(0)) for t in truth]


def scores(predicted: list[np.ndarray | None], truth: list[np.ndarray], pair: tuple[int, int]) -> dict:
    """Faces found, NME (the mean of the found faces') and failure rate, in percent."""
    found = [(p, t) for p, t in zip(predicted, truth) if p is not None]
    if not found:
        return {"found": f"0/{len(truth)}", "NME %": np.nan, "failure %": np.nan}
    p, t = (np.stack([f[i] for f in found]).reshape(len(found), -1) for i in (0, 1))
    nme = keypoint_nme(p, t, pair)[0]
    nme = nme[~np.isnan(nme)]
    return {
        "found": f"{len(found)}/{len(truth)}",
        "NME %": round(float(nme.mean()), 3),
        "failure %": round(float((nme > FAILURE_PCT).mean() * 100), 2),
    }


def kfkd(detector: detect.Detector, greys, truths, pair, refine: int) -> tuple[list[dict], list[dict]]:
    """The scores after each pass (the finder's box, then each re-frame), and each photo's stage times."""
    per_pass, seconds = [[] for _ in range(refine + 1)], []
    flat_truth = [t for truth in truths for t in truth]
    for grey, truth in zip(greys, truths):
        result, passes = detector.find(grey, refine)
        seconds.append(result.seconds)
        for k, points in enumerate(passes):
            faces = [detect.Face(f.box, detector.as_keypoints(p)) for f, p in zip(result.faces, points)]
            per_pass[k] += [None if i is None else faces[i].keypoints for i in matched(faces, truth, pair)]
    return [scores(p, flat_truth, pair) for p in per_pass], seconds


def perfect(detector: detect.Detector, greys, truths, pair) -> dict:
    """The net on the frames that put each face's true anchors at their canonical places (rotated too,
    as re-framing does): the best any re-frame could do for this net."""
    anchors = [detector.model.keypoints.index(a) for a in detector.anchor_names]
    predicted, flat = [], []
    for grey, truth in zip(greys, truths):
        for t in truth:
            known = ~np.isnan(t[anchors, 0])
            frame = framing.from_points(
                t[anchors][known], detector.canonical[known], detector.cfg.rotate, detector.model.size
            )
            predicted.append(
                detector.as_keypoints(detector.predict(grey, [frame], dict.fromkeys(detect.STAGES, 0.0))[0])
            )
            flat.append(t)
    return scores(predicted, flat, pair)


def dlib(colour, truths, pair) -> list[dict]:
    """dlib's 68 points, as it gives them and at pixel centres, with its stage times."""
    landmarks = dlib_landmarks(colour)
    if landmarks is None:
        return []
    predicted, flat = [], []
    for faces, truth in zip(landmarks[0], truths):
        predicted += [None if i is None else faces[i].keypoints for i in matched(faces, truth, pair)]
        flat += list(truth)
    ms = per_photo_ms(landmarks[1])
    return [
        {
            "method": "dlib HOG (upsampled once) + 68-point predictor, its pixel indices",
            **scores(predicted, flat, pair),
            "ms per photo": ms,
        },
        {
            "method": "dlib, its points moved to pixel centres (+0.5 px)",
            **scores([None if p is None else p + 0.5 for p in predicted], flat, pair),
            "ms per photo": ms,
        },
    ]


def main():
    from keypoints.data import images

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run or sweep directory trained with data=coco")
    parser.add_argument("--data", help="the COCO folder (default: the run's data.dir)")
    parser.add_argument("--set", nargs="*", default=[], help="conf/detect.yaml overrides, KEY=VALUE")
    parser.add_argument("--no-tta", action="store_true", help="skip the rows with flip TTA")
    args = parser.parse_args()
    try:
        coco, keypoint_set, photos = validation_photos(args.run, args.data)
        colour = [np.asarray(images.read(coco.files[i]).convert("RGB")) for i, _ in photos]
    except DataError as error:
        sys.exit(f"error: {error}")
    greys = [images.grey(images.from_array(c)) for c in colour]
    truths = [t for _, t in photos]
    pair = nme_pair(keypoint_set.names, keypoint_set.nme)
    print(
        f"{args.run}: {sum(map(len, truths))} validation faces of people it never saw, in {len(photos)} photos "
        f"(median {statistics.median(max(g.shape) for g in greys):.0f} px on the long side)"
    )
    rows = []
    for tta in (None,) if args.no_tta else (None, "flip"):
        detector = detect.Detector(args.run, tta)
        cfg = OmegaConf.merge(detector.cfg, OmegaConf.from_dotlist(args.set))
        detector = detect.Detector(detector.model, tta, cfg)
        refine = max(1, cfg.refine)
        results, seconds = kfkd(detector, greys, truths, pair, refine)
        for k, result in enumerate(results):
            rows.append(
                {
                    "method": f"kfkd, {'the finder box' if k == 0 else f're-framed x{k}'}{', flip TTA' if tta else ''}",
                    **result,
                    "ms per photo": per_photo_ms(seconds) if k == cfg.refine else "",
                }
            )
        rows.append(
            {
                "method": f"kfkd on frames from the true anchors{', flip TTA' if tta else ''}",
                **perfect(detector, greys, truths, pair),
                "ms per photo": "",
            }
        )
    if keypoint_set.name == "ibug68":
        rows += dlib(colour, truths, pair)
    else:
        print(f"dlib skipped: its 68 points are the ibug68 set's, not {keypoint_set.name}'s")
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()

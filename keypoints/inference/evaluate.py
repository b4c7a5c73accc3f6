"""Measure trained runs on labelled faces: RMSE in pixels and NME in percent, per keypoint and overall,
and the failure rate.

    kfkd evaluate SWEEP_OR_RUN_OR_CKPT... [--csv labelled.csv | --data DIR] [--tta flip]

Without --csv it uses the runs' held-out validation faces (of training.csv, or of a COCO dataset's
annotations.json); `--data` replaces the data.dir the runs saved. The NME is that of
keypoints.training.metrics.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate

from keypoints.core import codec
from keypoints.core.errors import DataError
from keypoints.data.augment import centre_crop
from keypoints.data.kaggle import find_file, read_csv, to_tensors
from keypoints.inference import runs as trained
from keypoints.inference.submit import DATA_FLAG, predict_columns
from keypoints.training.metrics import FAILURE_PCT, keypoint_nme, nme_pair


def labelled_faces(
    runs: list[trained.Run], csv: str | Path | None, data_dir: str | Path | None = None, rows: str = "valid"
) -> tuple[torch.Tensor, np.ndarray]:
    """Images and all their keypoint set's columns in pixels (NaN where unlabelled): the CSV, or the
    rows of the runs' training.csv (in `data_dir`, else their data.dir) they held out (`rows` "valid")
    or trained on ("train")."""
    cfg = runs[0].cfg
    keypoint_set, size = trained.shared(runs)
    columns = keypoint_set.columns
    if csv is None:
        data_dir = data_dir or cfg.data.dir
        if "generate" in cfg.data and cfg.data.generate is None:  # Kaggle's; generated data is made again where missing
            find_file(data_dir, "training.csv", DATA_FLAG)
        datamodule = instantiate(cfg.data, dir=data_dir, columns=columns, drop_incomplete=False)
        datamodule.setup()
        x, y, mask = centre_crop(*getattr(datamodule, f"{rows}_set")[:], size)
        return x.cpu(), np.where(mask.cpu().numpy() > 0, codec.to_pixels(y.cpu().numpy(), size), np.nan)
    frame, images = read_csv(Path(csv), cfg.paths.cache_dir, size)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(f"{csv}: no column {absent[0]!r}; expected the keypoint set {keypoint_set.name}'s columns")
    return to_tensors(images), frame[columns].to_numpy(np.float64)


def evaluate(
    model: trained.Assembled, runs: list[trained.Run], csv: str | Path | None = None, data_dir: str | Path | None = None
) -> pd.DataFrame:
    """RMSE in pixels per keypoint (x and y together) and overall, over the labelled values, and the
    NME in percent of the set's normalising distance (keypoints.training.metrics), per keypoint and overall
    (the mean of the faces'); `attrs` holds the failure rate in percent and the faces it is over."""
    x, truth = labelled_faces(runs, csv, data_dir)
    predicted = predict_columns(model, runs, x)
    error = (predicted - truth) ** 2
    labelled = ~np.isnan(truth)
    if (labelled & np.isnan(error)).any():
        name = model.keypoint_set.columns[(labelled & np.isnan(error)).any(axis=0).argmax()]
        raise DataError(f"{csv or 'validation rows'}: {name} is labelled but no run predicts it")
    keypoint_set = model.keypoint_set
    pair = nme_pair(keypoint_set.names, keypoint_set.nme)
    faces, per_keypoint = keypoint_nme(np.nan_to_num(predicted), truth, pair)
    rows = []
    keypoints = [(k, [2 * i, 2 * i + 1]) for i, k in enumerate(keypoint_set.names)]
    for (name, cols), nme in zip(keypoints + [("overall", slice(None))], [*per_keypoint, np.nanmean(faces)]):
        e = error[:, cols][labelled[:, cols]]
        rows.append(
            {
                "keypoint": name,
                "values": len(e),
                "rmse_px": float(np.sqrt(e.mean())) if len(e) else np.nan,
                "nme_pct": float(nme),
            }
        )
    table = pd.DataFrame(rows).set_index("keypoint")
    scored = faces[~np.isnan(faces)]
    table.attrs = {
        "faces": len(scored),
        "failure_pct": float((scored > FAILURE_PCT).mean() * 100) if len(scored) else np.nan,
    }
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kfkd evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="sweep directories, run directories or .ckpt files")
    parser.add_argument("--csv", help="a labelled CSV in training.csv's format (default: the held-out validation rows)")
    parser.add_argument(
        "--data", help="without --csv: the folder with the runs' training.csv (default: their data.dir)"
    )
    parser.add_argument("--tta", choices=["flip"], help="average with the prediction for the mirrored face")
    parser.add_argument("--strict", action="store_true", help="refuse a sweep with a failed run (default: skip it)")
    args = parser.parse_args(argv)
    try:
        model, runs = trained.load(args.runs, flip=args.tta == "flip", strict=args.strict)
        table = evaluate(model, runs, args.csv, args.data)
    except DataError as error:
        sys.exit(f"error: {error}")
    print(table.to_string(float_format="%.3f"))
    pair = " and ".join(model.keypoint_set.nme)
    print(
        f"NME {table.loc['overall', 'nme_pct']:.3f} % of the distance between {pair} over "
        f"{table.attrs['faces']} faces; failure rate (NME over {FAILURE_PCT:g} %): {table.attrs['failure_pct']:.2f} %"
    )


if __name__ == "__main__":
    main()

"""Predict Kaggle's test.csv with trained runs and write the submission, `RowId,Location` in
IdLookupTable.csv's order.

    kfkd submit SWEEP_OR_RUN_OR_CKPT... [--data DIR] [--out submission.csv] [--tta flip]

Every run's net is rebuilt from its config.yaml and loaded from its best checkpoint, and the columns
of their keypoint set are assembled from all runs (keypoints.inference.runs): a net with fewer columns
(a specialist) wins over a wider one (`all`). `--tta flip` averages each prediction with that of the
mirrored face. Runs are read relative to the paths given, wherever they were trained; `--data`
replaces the data.dir they saved.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from keypoints.core.errors import DataError
from keypoints.data.kaggle import find_file, read_csv, to_tensors
from keypoints.inference import runs as trained

DATA_FLAG = "--data DIR"  # replaces the runs' data.dir, which may not hold where they are read


def read_test(data_dir: str | Path, cache_dir: str | Path | None, size: int) -> tuple[np.ndarray, np.ndarray]:
    """test.csv's ImageIds and images (size x size), checked: every ImageId present, none repeated."""
    path = find_file(data_dir, "test.csv", DATA_FLAG)
    frame, images = read_csv(path, cache_dir, size)
    if "ImageId" not in frame.columns:
        raise DataError(f"{path}: no 'ImageId' column; expected ImageId,Image")
    ids = frame["ImageId"].to_numpy()
    if np.isnan(ids).any():
        raise DataError(f"{path}: line {np.isnan(ids).argmax() + 2}: ImageId is empty")
    repeated = pd.Series(ids).duplicated(keep="first").to_numpy()
    if repeated.any():
        row = repeated.argmax()
        raise DataError(f"{path}: line {row + 2}: ImageId {ids[row]:g} repeats line {ids.tolist().index(ids[row]) + 2}")
    return ids.astype(np.int64), images


def read_lookup(
    data_dir: str | Path, image_ids: np.ndarray, columns: list[str]
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """IdLookupTable.csv, and for each of its rows the index of its image in test.csv and of its
    column among `columns` (the keypoint set's)."""
    path = find_file(data_dir, "IdLookupTable.csv", DATA_FLAG)
    lookup = pd.read_csv(path)
    missing = {"RowId", "ImageId", "FeatureName"} - set(lookup.columns)
    if missing:
        raise DataError(f"{path}: no column {sorted(missing)[0]!r}; expected RowId,ImageId,FeatureName,Location")
    image = pd.Index(image_ids).get_indexer(pd.to_numeric(lookup["ImageId"], errors="coerce"))
    if (image < 0).any():
        row = (image < 0).argmax()
        raise DataError(
            f"{path}: line {row + 2}: ImageId {lookup['ImageId'].iloc[row]} is not in test.csv "
            f"(ImageIds {image_ids.min()}..{image_ids.max()})"
        )
    column = pd.Index(columns).get_indexer(lookup["FeatureName"])
    if (column < 0).any():
        row = (column < 0).argmax()
        name = lookup["FeatureName"].iloc[row]
        near = difflib.get_close_matches(str(name), columns, n=1)
        raise DataError(
            f"{path}: line {row + 2}: FeatureName {name!r} is not a keypoint column"
            + (f"; did you mean {near[0]!r}?" if near else f"; expected one of {columns}")
        )
    return lookup, image, column


def predict_columns(model: trained.Assembled, runs: list[trained.Run], x: torch.Tensor) -> np.ndarray:
    """All the keypoint set's columns in pixels for faces x (NaN where no run predicts one), in the
    runs' batch size."""
    columns = model.keypoint_set.columns
    out = np.full((len(x), len(columns)), np.nan)
    out[:, [columns.index(c) for c in model.columns]] = model.predict(x, runs[0].cfg.data.batch_size)
    return out


def submission(model: trained.Assembled, runs: list[trained.Run], data_dir: str | Path) -> pd.DataFrame:
    """The Kaggle submission `RowId,Location` in IdLookupTable order, checked before it is returned."""
    columns = model.keypoint_set.columns
    ids, images = read_test(data_dir, runs[0].cfg.paths.cache_dir, model.size)
    lookup, image, column = read_lookup(data_dir, ids, columns)
    needed = np.unique(image)  # only the images the lookup table asks about
    predictions = np.full((len(ids), len(columns)), np.nan)
    predictions[needed] = predict_columns(model, runs, to_tensors(images[needed]))
    location = predictions[image, column]
    if np.isnan(location).any():
        row = np.isnan(location).argmax()
        raise DataError(
            f"IdLookupTable.csv: line {row + 2}: no run predicts {columns[column[row]]}; runs cover {model.columns}"
        )
    result = pd.DataFrame({"RowId": lookup["RowId"], "Location": np.clip(location, 0, model.size)})
    assert len(result) == len(lookup) and result["Location"].notna().all()
    return result


def write_submission(model: trained.Assembled, runs: list[trained.Run], data_dir: str | Path, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission(model, runs, data_dir).to_csv(out, index=False)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kfkd submit", description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="+", help="sweep directories, run directories or .ckpt files")
    parser.add_argument("--data", help="the folder with test.csv and IdLookupTable.csv (default: the runs' data.dir)")
    parser.add_argument("--out", default="submission.csv", help="the CSV to write")
    parser.add_argument("--tta", choices=["flip"], help="average with the prediction for the mirrored face")
    parser.add_argument("--strict", action="store_true", help="refuse a sweep with a failed run (default: skip it)")
    args = parser.parse_args(argv)
    try:
        model, runs = trained.load(args.runs, flip=args.tta == "flip", strict=args.strict)
        print(f"wrote {write_submission(model, runs, args.data or runs[0].cfg.data.dir, args.out)}")
    except DataError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()

"""Predict with trained runs, write the Kaggle submission, and measure RMSE and NME on labelled faces.

    python -m keypoints.submit predict SWEEP_OR_RUN_OR_CKPT... [--data DIR] [--out submission.csv] [--tta flip]
    python -m keypoints.submit evaluate SWEEP_OR_RUN_OR_CKPT... [--csv labelled.csv | --data DIR] [--tta flip]

Every run's net is rebuilt from its config.yaml and loaded from its best checkpoint, and the columns
of their keypoint set are assembled from all runs (keypoints.runs): a net with fewer columns (a specialist) wins
over a wider one (`all`). `--tta flip` averages each prediction with that of the mirrored face.
`evaluate` prints the RMSE in pixels and the NME (keypoints.metrics) per keypoint and overall, and the
failure rate; without --csv it uses the runs' held-out validation faces (of training.csv, or of
a COCO dataset's annotations.json). Runs are read
relative to the paths given, wherever they were trained; `--data` replaces the data.dir they saved.
"""
from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from hydra.utils import instantiate

from keypoints import runs as trained
from keypoints.augment import centre_crop
from keypoints.data import DataError, find_file, read_csv, to_tensors
from keypoints.metrics import FAILURE_PCT, keypoint_nme, nme_pair

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


def read_lookup(data_dir: str | Path, image_ids: np.ndarray, columns: list[str]) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
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
        raise DataError(f"{path}: line {row + 2}: ImageId {lookup['ImageId'].iloc[row]} is not in test.csv "
                        f"(ImageIds {image_ids.min()}..{image_ids.max()})")
    column = pd.Index(columns).get_indexer(lookup["FeatureName"])
    if (column < 0).any():
        row = (column < 0).argmax()
        name = lookup["FeatureName"].iloc[row]
        near = difflib.get_close_matches(str(name), columns, n=1)
        raise DataError(f"{path}: line {row + 2}: FeatureName {name!r} is not a keypoint column"
                        + (f"; did you mean {near[0]!r}?" if near else f"; expected one of {columns}"))
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
        raise DataError(f"IdLookupTable.csv: line {row + 2}: no run predicts {columns[column[row]]}; "
                        f"runs cover {model.columns}")
    result = pd.DataFrame({"RowId": lookup["RowId"], "Location": np.clip(location, 0, model.size)})
    assert len(result) == len(lookup) and result["Location"].notna().all()
    return result


def write_submission(model: trained.Assembled, runs: list[trained.Run], data_dir: str | Path, out: str | Path) -> Path:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    submission(model, runs, data_dir).to_csv(out, index=False)
    return out


def labelled_faces(runs: list[trained.Run], csv: str | Path | None, data_dir: str | Path | None = None,
                   rows: str = "valid") -> tuple[torch.Tensor, np.ndarray]:
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
        return x.cpu(), np.where(mask.cpu().numpy() > 0, y.cpu().numpy() * (size / 2) + size / 2, np.nan)
    frame, images = read_csv(Path(csv), cfg.paths.cache_dir, size)
    absent = [c for c in columns if c not in frame.columns]
    if absent:
        raise DataError(f"{csv}: no column {absent[0]!r}; expected the keypoint set {keypoint_set.name}'s columns")
    return to_tensors(images), frame[columns].to_numpy(np.float64)


def evaluate(model: trained.Assembled, runs: list[trained.Run], csv: str | Path | None = None,
             data_dir: str | Path | None = None) -> pd.DataFrame:
    """RMSE in pixels per keypoint (x and y together) and overall, over the labelled values, and the
    NME in percent of the set's normalising distance (keypoints.metrics), per keypoint and overall
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
        rows.append({"keypoint": name, "values": len(e), "rmse_px": float(np.sqrt(e.mean())) if len(e) else np.nan,
                     "nme_pct": float(nme)})
    table = pd.DataFrame(rows).set_index("keypoint")
    scored = faces[~np.isnan(faces)]
    table.attrs = {"faces": len(scored), "failure_pct": float((scored > FAILURE_PCT).mean() * 100) if len(scored) else np.nan}
    return table


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m keypoints.submit", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("predict", help="write a Kaggle submission for test.csv")
    p.add_argument("runs", nargs="+", help="sweep directories, run directories or .ckpt files")
    p.add_argument("--data", help="the folder with test.csv and IdLookupTable.csv (default: the runs' data.dir)")
    p.add_argument("--out", default="submission.csv", help="the CSV to write")
    e = commands.add_parser("evaluate", help="RMSE in pixels per keypoint and overall")
    e.add_argument("runs", nargs="+", help="sweep directories, run directories or .ckpt files")
    e.add_argument("--csv", help="a labelled CSV in training.csv's format (default: the held-out validation rows)")
    e.add_argument("--data", help="without --csv: the folder with the runs' training.csv (default: their data.dir)")
    for command in (p, e):
        command.add_argument("--tta", choices=["flip"], help="average with the prediction for the mirrored face")
    args = parser.parse_args(argv)
    try:
        model, runs = trained.load(args.runs, flip=args.tta == "flip")
        if args.command == "predict":
            out = write_submission(model, runs, args.data or runs[0].cfg.data.dir, args.out)
            print(f"wrote {out}")
        else:
            table = evaluate(model, runs, args.csv, args.data)
            print(table.to_string(float_format="%.3f"))
            pair = " and ".join(model.keypoint_set.nme)
            print(f"NME {table.loc['overall', 'nme_pct']:.3f} % of the distance between {pair} over "
                  f"{table.attrs['faces']} faces; failure rate (NME over {FAILURE_PCT:g} %): {table.attrs['failure_pct']:.2f} %")
    except DataError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()

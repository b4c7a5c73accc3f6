"""Kaggle data: read and check the CSVs, parse pixels fast, cache them, select rows, split, serve batches.

The tutorial's `load`: pixels -> float32 in [0, 1] shaped (N, 1, size, size) (Kaggle's: 96), targets
-> (y - size/2) / (size/2). The columns read are the keypoint set's (keypoints.core.keypointset).
Missing targets stay NaN until row selection: `drop_incomplete` keeps the tutorial's dropna,
otherwise rows keep whatever keypoints they have and a presence mask travels with the targets.
"""

from __future__ import annotations

import hashlib
import logging
import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset

from keypoints.core import codec
from keypoints.core.errors import DataError  # noqa: F401  (the project's modules import it from here too)
from keypoints.data.checks import GROUPS, KAGGLE, find_file, group_column, no_column, require_columns

CACHE_VERSION = 1
log = logging.getLogger(__name__)


def parse_pixels(images: pd.Series, source: str, size: int) -> np.ndarray:
    """Space-separated 0-255 strings -> uint8 (N, size, size), vectorised over the whole column."""
    if images.isna().any():
        raise DataError(f"{source}: line {_line(images.isna().to_numpy().argmax())}: Image is empty")
    strings = images.tolist()
    row_start = np.cumsum([0] + [len(s) + 1 for s in strings[:-1]])
    buf = np.frombuffer(" ".join(strings).encode("ascii", "replace"), np.uint8)
    digit = buf - np.uint8(48)  # wraps around for non-digits, so `digit < 10` tests for digits
    is_digit = digit < 10
    # A token begins where a digit follows a non-digit; its row comes from where it begins.
    starts = np.flatnonzero(is_digit & ~np.concatenate([[False], is_digit[:-1]]))
    ends = np.flatnonzero(is_digit & ~np.concatenate([is_digit[1:], [False]]))
    bad = np.flatnonzero(~is_digit & (buf != 32) & (buf != 9))  # not tab or space (np.isin is 25x slower)
    counts = np.diff(np.searchsorted(starts, np.append(row_start, len(buf))))
    lengths = ends - starts + 1
    if bad.size or lengths.max(initial=1) > 3:
        pos = bad[0] if bad.size else starts[lengths.argmax()]
        row = np.searchsorted(row_start, pos, "right") - 1
        token = strings[row][pos - row_start[row] :].split(" ", 1)[0][:20]
        raise DataError(f"{source}: line {_line(row)}: pixel {token!r} is not an integer 0-255")
    if (counts != size * size).any():
        row = np.flatnonzero(counts != size * size)[0]
        raise DataError(
            f"{source}: line {_line(row)}: Image has {counts[row]} pixels, expected {size * size} "
            f"({size}x{size}: data.size)"
        )
    # Right-aligned digits, read by whole-array gathers at the token's end (no boolean masks): a space
    # reads as 0 and two leading zeros pad the first token, so only a third digit needs its length.
    value = np.concatenate([[0, 0], np.where(is_digit, digit, 0)]).astype(np.int16)
    values = value[ends + 2] + 10 * value[ends + 1] + 100 * (lengths > 2) * value[ends]
    if values.max(initial=0) > 255:
        row = np.searchsorted(row_start, starts[values.argmax()], "right") - 1
        raise DataError(f"{source}: line {_line(row)}: pixel {values.max()} is not an integer 0-255")
    return values.astype(np.uint8).reshape(-1, size, size)


def _line(row: int) -> int:
    """The file line of data row `row` (0-based), counting the header as line 1."""
    return int(row) + 2


def read_csv(path: Path, cache_dir: str | Path | None, size: int) -> tuple[pd.DataFrame, np.ndarray]:
    """A Kaggle CSV as (its non-Image columns, its images of size x size pixels), parsed once and
    then read from a cache.

    The cache key holds the source's path, size and modification time, so an edited file is parsed
    again; an unreadable cache file is rebuilt rather than trusted.
    """
    cache = None
    if cache_dir is not None:
        stat = path.resolve().stat()
        key = f"{CACHE_VERSION}:{path.resolve()}:{stat.st_size}:{stat.st_mtime_ns}"
        cache = Path(cache_dir) / f"{path.name}-{hashlib.sha1(key.encode()).hexdigest()[:16]}.npz"
        try:
            with np.load(cache, allow_pickle=False) as z:
                if z["images"].shape[1:] != (size, size):  # parsed for another data.size: parsing says why not
                    raise ValueError
                return pd.DataFrame(z["values"], columns=z["columns"]), z["images"]
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
            pass  # missing, truncated or corrupt: parse the source again
    try:
        frame = pd.read_csv(path, dtype={"Image": str})
    except pd.errors.EmptyDataError:
        raise DataError(f"{path}: the file is empty; {KAGGLE}") from None
    # Unparsable text, or a truncated or corrupt .gz/.zip (a download that did not finish).
    except (ValueError, OSError, EOFError, zlib.error, zipfile.BadZipFile) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]})") from None
    require_columns(path, frame.columns, ["Image"])
    if frame.empty:
        raise DataError(f"{path}: no data rows")
    images = parse_pixels(frame.pop("Image"), str(path), size)
    for column in frame.columns:
        if not pd.api.types.is_numeric_dtype(frame[column]):
            numeric = pd.to_numeric(frame[column], errors="coerce")
            row = np.flatnonzero(numeric.isna() & frame[column].notna())[0]
            raise DataError(f"{path}: line {_line(row)}: {column} = {frame[column].iloc[row]!r} is not a number")
    if cache is not None:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
            np.savez(tmp, values=frame.to_numpy(np.float64), columns=np.array(frame.columns, str), images=images)
            os.replace(tmp, cache)
        except OSError as e:  # e.g. a run's saved cache path from another machine: the cache only saves time
            log.warning(
                f"{cache.parent}: cannot keep parsed pixels there ({e.strerror or e}); "
                f"set paths.cache_dir=DIR to a writable folder"
            )
    return frame, images


def select(frame: pd.DataFrame, columns: list[str], source: Path, drop_incomplete: bool, size: int) -> np.ndarray:
    """Row indices to train on: rows with every selected column (the tutorial) or with any of them;
    every value must lie in the size x size face."""
    require_columns(source, frame.columns, columns)
    values = frame[columns].to_numpy(np.float64)
    outside = (values < 0) | (values > size)
    if outside.any():
        row, col = np.argwhere(outside)[0]
        raise DataError(f"{source}: line {_line(row)}: {columns[col]} = {values[row, col]} is outside [0, {size}]")
    present = ~np.isnan(values)
    keep = present.all(axis=1) if drop_incomplete else present.any(axis=1)
    if not keep.any():
        rule = "all" if drop_incomplete else "any"
        raise DataError(f"{source}: no row has {rule} of the columns {columns}")
    return np.flatnonzero(keep)


def to_tensors(images: np.ndarray, targets: np.ndarray | None = None):
    """Scaled tensors: x in [0, 1] as (N, 1, size, size); y = (px - size/2) / (size/2) with NaN -> 0 and its mask."""
    x = torch.from_numpy(images).unsqueeze(1).float().div_(255)
    if targets is None:
        return x
    mask = ~np.isnan(targets)
    y = torch.from_numpy(np.where(mask, codec.to_targets(targets, images.shape[-1]), 0).astype(np.float32))
    return x, y, torch.from_numpy(mask.astype(np.float32))


class TensorBatches(Dataset):
    """Tensors served by slicing whole batches (`__getitems__`), not by collating single samples."""

    def __init__(self, *tensors: torch.Tensor):
        self.tensors = tensors

    def __len__(self) -> int:
        return len(self.tensors[0])

    def __getitem__(self, index):
        return tuple(t[index] for t in self.tensors)

    def __getitems__(self, indices: list[int]):
        index = torch.as_tensor(indices)
        if self.tensors[
            0
        ].is_cuda:  # a copy from pinned memory does not wait for the GPU, as one from pageable memory does
            index = index.pin_memory().to(self.tensors[0].device, non_blocking=True)
        return self[index]


def as_is(batch):
    """The collate function for batches that are already tensors."""
    return batch


def read_groups(path: str | Path, n_rows: int) -> tuple[np.ndarray, str]:
    """The group of each of training.csv's `n_rows` rows, from a CSV `row,<group>` (one line per
    row, in any order), and the group column's name."""
    path = Path(path).expanduser()
    name = group_column(path)
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (ValueError, OSError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV ({str(e).splitlines()[0]}); {GROUPS}") from None
    rows = pd.to_numeric(frame["row"], errors="coerce").to_numpy()
    bad = np.isnan(rows) | (rows != np.round(rows)) | (rows < 0) | (rows >= n_rows)
    if bad.any():
        line = bad.argmax()
        raise DataError(
            f"{path}: line {_line(line)}: row {frame['row'].iloc[line]!r} is not a row of training.csv "
            f"(0..{n_rows - 1})"
        )
    empty = (frame[name].str.strip() == "").to_numpy()
    if empty.any():
        line = empty.argmax()
        raise DataError(f"{path}: line {_line(line)}: row {frame['row'].iloc[line]} has no {name}")
    rows = rows.astype(np.int64)
    repeated = pd.Series(rows).duplicated().to_numpy()
    if repeated.any():
        line = repeated.argmax()
        raise DataError(
            f"{path}: line {_line(line)}: row {rows[line]} repeats line {_line(rows.tolist().index(rows[line]))}"
        )
    if len(rows) != n_rows:
        missing = np.setdiff1d(np.arange(n_rows), rows)
        raise DataError(f"{path}: {len(rows)} rows, but training.csv has {n_rows}; no line for row {missing[0]}")
    groups = np.empty(n_rows, object)
    groups[rows] = frame[name].to_numpy()
    return groups, name


def excluded_groups(exclude: str | list | None, name: str) -> set[str]:
    """Group ids to leave out: a list, or a CSV whose column `name` holds them."""
    if exclude is None:
        return set()
    if not isinstance(exclude, str):
        return {str(g) for g in exclude}
    path = Path(exclude).expanduser()
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pd.errors.EmptyDataError) as e:
        raise DataError(f"{path}: not a readable CSV (data.exclude_groups: {str(e).splitlines()[0]})") from None
    if name not in frame.columns:
        raise DataError(
            f"{path}: {no_column(name, frame.columns)} (data.exclude_groups: a list of {name} ids, "
            f"or a CSV with a {name} column)"
        )
    return set(frame[name]) - {""}


def held_out_rows(n_rows: int, valid_fraction: float, seed: int, groups: np.ndarray | None) -> np.ndarray:
    """Which rows validation holds out (bool, n_rows): a seeded `valid_fraction` of the rows, drawn
    by whole groups when `groups` is given (every row of a group on the same side)."""
    held_out = np.zeros(n_rows, bool)
    rng = np.random.default_rng(seed)
    target = int(round(n_rows * valid_fraction))
    if groups is None:
        held_out[rng.permutation(n_rows)[:target]] = True
        return held_out
    codes, _ = pd.factorize(pd.Series(groups), sort=True)
    sizes = np.bincount(codes)
    order = rng.permutation(len(sizes))
    taken = order[np.cumsum(sizes[order]) - sizes[order] < target]  # whole groups until the target is met
    return np.isin(codes, taken)


class KeypointsDataModule(pl.LightningDataModule):
    """Kaggle training data for the selected columns, faces of `size` pixels, split 80/20 with a
    seeded permutation of the rows, or of whole groups of rows (`groups`: the people) so that
    validation is on unseen people."""

    def __init__(
        self,
        dir: str,
        columns: list[str],
        size: int,
        drop_incomplete: bool,
        batch_size: int,
        valid_fraction: float,
        split_seed: int,
        cache_dir: str | None,
        generate: dict | None,
        groups: str | None,
        exclude_groups: str | list | None,
    ):
        super().__init__()
        self.dir, self.columns, self.size, self.drop_incomplete = Path(dir), list(columns), size, drop_incomplete
        self.batch_size, self.valid_fraction, self.split_seed = batch_size, valid_fraction, split_seed
        self.cache_dir, self.generate = cache_dir, generate
        self.groups, self.exclude_groups = groups, exclude_groups

    def prepare_data(self):
        if self.generate is not None and not (self.dir / "training.csv").is_file():
            from keypoints.data import synthetic

            synthetic.generate(self.dir, **self.generate)

    def setup(self, stage: str | None = None):
        if hasattr(self, "train_set"):
            return
        self.prepare_data()  # idempotent; covers use without a Trainer
        path = find_file(self.dir, "training.csv")
        frame, images = read_csv(path, self.cache_dir, self.size)
        rows = select(frame, self.columns, path, self.drop_incomplete, self.size)
        groups = None
        if self.groups is not None:
            groups, name = read_groups(self.groups, len(frame))
            left_out = excluded_groups(self.exclude_groups, name)
            rows = rows[~np.isin(groups[rows].astype(str), list(left_out))]
        elif self.exclude_groups is not None:
            raise DataError("data.exclude_groups needs data.groups: the file that says which group each row is")
        # The split is drawn over all rows of the file, before selection, so every specialist
        # validates on a subset of the same held-out rows and never on rows its base net trained on.
        held_out = held_out_rows(len(frame), self.valid_fraction, self.split_seed, groups)
        train_rows, valid_rows = rows[~held_out[rows]], rows[held_out[rows]]
        if not len(train_rows) or not len(valid_rows):
            raise DataError(
                f"{path}: {len(rows)} usable rows cannot be split {1 - self.valid_fraction:.0%}/{self.valid_fraction:.0%}"
            )
        targets = frame[self.columns].to_numpy(np.float64)
        device = self.trainer.strategy.root_device if self.trainer is not None else torch.device("cpu")
        # On a GPU the whole set sits on the device: batches are sliced there, never copied per step.
        split = lambda idx: TensorBatches(*(t.to(device) for t in to_tensors(images[idx], targets[idx])))
        self.train_set, self.valid_set = split(train_rows), split(valid_rows)

    def train_dataloader(self):
        return DataLoader(self.train_set, self.batch_size, shuffle=True, collate_fn=as_is)

    def val_dataloader(self):
        return DataLoader(self.valid_set, self.batch_size, collate_fn=as_is)

"""The data a run names, checked before the run makes its directory and without torch: its files are
there, with the columns, fields and keypoint names the config asks for. Headers and names only, never
pixels: the readers (kaggle.py, coco.py) check the rest as they parse, and share these checks.
"""

from __future__ import annotations

import csv
import difflib
import gzip
import zipfile
import zlib
from pathlib import Path

from omegaconf import DictConfig

from keypoints.core.errors import DataError

KAGGLE = "it comes from Kaggle's facial-keypoints-detection competition"
GROUPS = "expected a CSV of row,<group> (e.g. row,person) with a line for each of training.csv's rows"


def check(data: DictConfig, columns: list[str]) -> None:
    """The data of a run's config (`data`) for the `columns` it trains on; a DataModule of one's own
    is left to check its data itself."""
    checks = {"keypoints.data.kaggle.KeypointsDataModule": kaggle, "keypoints.data.coco.CocoDataModule": coco}
    found = checks.get(data.get("_target_"))
    if found is not None:
        found(data, columns)


def kaggle(data: DictConfig, columns: list[str]) -> None:
    """Kaggle's training.csv in data.dir, with an Image column and the `columns`, and data.groups' CSV."""
    if data.generate is not None and not (Path(data.dir) / "training.csv").is_file():
        return  # synthetic faces, made on first use
    path = find_file(data.dir, "training.csv")
    names = header(path)
    if names is not None:
        require_columns(path, names, ["Image", *columns])
    if data.groups is not None:
        group_column(Path(data.groups).expanduser())


def coco(data: DictConfig, columns: list[str]) -> None:
    """data.dir's annotations.json, with the keypoint set's keypoints and anchors in its category, the
    image field data.groups, and its images on disk."""
    from keypoints.data.annotations import read  # numpy: for COCO data only

    found = read(Path(data.dir).expanduser() / data.annotations, data.category)
    found.select(data.keypoint_set, list(data.keypoints), list(data.anchors), data.groups)
    found.stats()


def find_file(directory: str | Path, name: str, setting: str = "data.dir=DIR") -> Path:
    """`name` in `directory`, plain or compressed as Kaggle ships it; when it is not there, the
    error says how to name the right folder (`setting`: the config value or flag that gave it)."""
    for candidate in (name, f"{name}.gz", f"{name}.zip"):
        path = Path(directory) / candidate
        if path.is_file():
            return path
    raise DataError(
        f"{Path(directory) / name}: file not found (nor .gz/.zip); {KAGGLE}; give the folder that holds it as {setting}"
    )


def header(path: Path) -> list[str] | None:
    """The column names of the CSV at `path` (plain, .gz, or a .zip of one file); None where they
    cannot be read (a cut-off download): its reader then says why."""
    try:
        if path.suffix == ".zip":
            with zipfile.ZipFile(path) as archive:
                (member,) = archive.namelist()
                with archive.open(member) as f:
                    first = f.readline()
        else:
            with (gzip.open if path.suffix == ".gz" else open)(path, "rb") as f:
                first = f.readline()
    except (OSError, EOFError, ValueError, zlib.error, zipfile.BadZipFile):
        return None
    return next(csv.reader([first.decode("utf-8-sig", "replace").rstrip("\r\n")]), [])


def require_columns(path: Path, names, wanted: list[str]) -> None:
    """A DataError naming the first of the columns `wanted` that the CSV at `path` (columns `names`) lacks."""
    missing = [c for c in wanted if c not in names]
    if missing:
        kaggle_format = f"; expected Kaggle's format ({KAGGLE})" if missing[0] == "Image" else ""
        raise DataError(f"{path}: {no_column(missing[0], names)}{kaggle_format}")


def no_column(name: str, columns) -> str:
    """'no column X; did you mean Y?', or the columns there are when nothing is close."""
    lower = {c.lower(): c for c in columns}  # so that a change of case is the closest match
    near = [lower[c] for c in difflib.get_close_matches(name.lower(), lower, n=1)]
    return f"no column {name!r}; " + (f"did you mean {near[0]!r}?" if near else f"it has {list(columns)}")


def group_column(path: Path) -> str | None:
    """The group column of data.groups' CSV `path` (`row,<group>`), checked; None where its header
    cannot be read."""
    if not path.is_file():
        raise DataError(f"{path}: file not found (data.groups); {GROUPS}")
    names = header(path)
    if names is not None and (len(names) != 2 or names[0] != "row"):
        raise DataError(f"{path}: columns {names}; {GROUPS}")
    return None if names is None else names[1]

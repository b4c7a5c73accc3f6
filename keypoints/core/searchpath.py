"""Hydra's search path as folders, where a composed config's groups and their options are YAML files:
conf/, then the folders (`file://DIR`) and packages (`pkg://NAME`) of `hydra.searchpath`, in the order
Hydra looks in them. Read from a composed config's `hydra.runtime`, so a search path given on the
command line counts; listing them so is instant, where Hydra's own listing copies its repository
for every group."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

FOLDER = {"file": Path, "pkg": resources.files}  # the search path's schemes that hold files


def folders(runtime) -> list:
    """The folders of the search path of a composed config's `hydra.runtime`, in Hydra's order."""
    return [FOLDER[source.schema](source.path) for source in runtime.config_sources if source.schema in FOLDER]


def groups(runtime) -> list[str]:
    """The config groups on the search path, Hydra's own (hydra/...) left out."""
    found = {p.name for folder in folders(runtime) if folder.is_dir() for p in folder.iterdir() if p.is_dir()}
    return sorted(found - {"hydra"} - {name for name in found if name.startswith("_")})


def options(runtime, group: str) -> list[str]:
    """The options of `group` on the search path."""
    files = [p.name for folder in folders(runtime) if (folder / group).is_dir() for p in (folder / group).iterdir()]
    return sorted({name.removesuffix(".yaml") for name in files if name.endswith(".yaml")})


def find(runtime, group: str, option: str) -> Path | None:
    """The file of `option` of `group` that Hydra takes: the first on the search path; None where
    there is none (a config registered in Python)."""
    for folder in folders(runtime):
        path = folder / group / f"{option}.yaml"
        if path.is_file():
            return Path(str(path))
    return None

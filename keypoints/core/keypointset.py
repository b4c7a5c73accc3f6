"""The keypoint set: the points a net predicts, named, with their mirror pairs, the pair that
normalises the NME, a skeleton for drawing, and its specialists (named subsets of its points).

A set is one YAML file, conf/keypoints/<set>.yaml (`keypoints=<set>`; kaggle15 by default):

    name: kaggle15
    names: [left_eye_center, right_eye_center, ...]        # in the order of the data's columns
    mirror_pairs: [[left_eye_center, right_eye_center], ...]
    nme: [left_eye_center, right_eye_center]
    anchors: [left_eye_center, right_eye_center, mouth_center_bottom_lip]   # optional; default: every keypoint
    skeleton: [[left_eye_inner_corner, left_eye_center], ...]   # optional
    specialists:                                                # optional
      eyes: {keypoints: [left_eye_center, right_eye_center], overrides: {}}

Keypoint k's columns are `k_x`, `k_y`: targets and predictions hold x, y per keypoint, in the order
of the names. `specialist: NAME` (conf/config.yaml) picks the subset a run predicts; `all` is every
keypoint. A subset's `flip_indices` (pairs of positions within its columns that swap when the face
is mirrored) come from the set's mirror pairs, so nobody writes them by hand.

What the other modules use:

    spec = keypointset.specialist(cfg)              # the subset a run's config (new or saved) predicts
    spec = keypointset.load("kaggle15").specialist("eyes")   # specialist S of set K
    spec.keypoints, spec.columns, spec.flip_indices, spec.overrides

Runs trained before keypoint sets (a `specialist` node with its own `columns` and `flip_indices`,
96 px faces) are read through `upgrade`, as kaggle15 runs.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from keypoints.core import searchpath
from keypoints.core.errors import DataError
from keypoints.core.paths import SETS

ALL = "all"  # the specialist that predicts every keypoint of the set: the base net
FIELDS = {"name", "names", "mirror_pairs", "nme", "anchors", "skeleton", "specialists"}
NAME = re.compile(r"\w[\w.-]*")  # no commas or spaces: column names travel comma-separated (ONNX metadata)


def columns(keypoints: list[str]) -> list[str]:
    """The columns of `keypoints`: x, y of each, in order."""
    return [f"{k}_{axis}" for k in keypoints for axis in "xy"]


@dataclass(frozen=True)
class Specialist:
    """A named subset of a set's keypoints: what one net predicts."""

    name: str
    keypoints: list[str]
    flip_indices: list[list[int]]  # positions within `columns` that swap when the face is mirrored
    overrides: dict  # config values merged over the run's config

    @property
    def columns(self) -> list[str]:
        return columns(self.keypoints)


class KeypointSet:
    """A keypoint set from its YAML node, checked; `source` names where it came from in errors."""

    def __init__(self, node: Mapping, source: str):
        self.source = source
        node = OmegaConf.to_container(node) if isinstance(node, DictConfig) else node
        if not isinstance(node, Mapping):
            raise DataError(f"{source}: expected a keypoint set (a mapping of {', '.join(sorted(FIELDS))})")
        unknown = sorted(set(node) - FIELDS)
        if unknown:
            raise DataError(f"{source}: unknown field {unknown[0]!r}; expected {', '.join(sorted(FIELDS))}")
        self.name = node.get("name")
        if not isinstance(self.name, str) or not NAME.fullmatch(self.name):
            raise DataError(f"{source}: name: expected the set's name (letters, digits, _ . -), got {self.name!r}")
        self.names = self._names(node.get("names"), "names", known=None)
        self.mirror_pairs = [
            self._pair(p, f"mirror_pairs[{i}]") for i, p in enumerate(self._list(node, "mirror_pairs"))
        ]
        self.partner: dict[str, str] = {}
        for i, (a, b) in enumerate(self.mirror_pairs):
            for k, twin in ((a, b), (b, a)):
                if k in self.partner:
                    raise DataError(f"{source}: mirror_pairs[{i}]: {k!r} is already paired with {self.partner[k]!r}")
                self.partner[k] = twin
        self.nme = self._pair(node.get("nme"), "nme")
        # The keypoints a face's frame is fitted to (keypoints.data.framing.from_points): detect's re-framing,
        # and the framing of COCO faces.
        self.anchors = self._names(node.get("anchors", self.names), "anchors", self.names)
        if len(self.anchors) < 2:
            raise DataError(f"{source}: anchors: expected two keypoints or more (a frame's scale needs a distance)")
        self.skeleton = [self._pair(p, f"skeleton[{i}]") for i, p in enumerate(self._list(node, "skeleton", []))]
        self.specialists = {}
        specialists = node.get("specialists") or {}
        if not isinstance(specialists, Mapping):
            raise DataError(
                f"{source}: specialists: expected a mapping of name: {{keypoints: [...], overrides: {{...}}}}"
            )
        for name, spec in specialists.items():
            self.specialists[name] = self._specialist(name, spec)

    def _list(self, node: Mapping, field: str, absent: list | None = None) -> list:
        """The list `field` of `node`; `absent` where an optional field is left out."""
        value = node.get(field, absent)
        if not isinstance(value, list):
            raise DataError(f"{self.source}: {field}: expected a list, got {value!r}")
        return value

    def _names(self, names, field: str, known: list[str] | None) -> list[str]:
        """`names`, checked: a non-empty list of distinct keypoint names, all `known` ones where given."""
        if not isinstance(names, list) or not names:
            raise DataError(f"{self.source}: {field}: expected a list of keypoint names, got {names!r}")
        for i, k in enumerate(names):
            if not isinstance(k, str) or not NAME.fullmatch(k):
                raise DataError(f"{self.source}: {field}[{i}]: {k!r} is not a keypoint name (letters, digits, _ . -)")
            if known is not None and k not in known:
                raise DataError(
                    f"{self.source}: {field}[{i}]: {k!r} is not one of the set's keypoints ({self._near(k)})"
                )
            if k in names[:i]:
                raise DataError(f"{self.source}: {field}[{i}]: {k!r} is named twice")
        return list(names)

    def _near(self, name: str) -> str:
        near = difflib.get_close_matches(name, self.names, n=1)
        return f"did you mean {near[0]!r}?" if near else f"names lists {len(self.names)}"

    def _pair(self, pair, field: str) -> list[str]:
        if not isinstance(pair, list) or len(pair) != 2:
            raise DataError(f"{self.source}: {field}: expected two keypoint names, got {pair!r}")
        if pair[0] == pair[1]:
            raise DataError(f"{self.source}: {field}: pairs {pair[0]!r} with itself")
        return self._names(pair, field, self.names)

    def _specialist(self, name, spec) -> Specialist:
        field = f"specialists.{name}"
        if name == ALL:
            raise DataError(f"{self.source}: {field}: '{ALL}' is the whole set; give the specialist another name")
        if not isinstance(name, str) or not NAME.fullmatch(name):
            raise DataError(f"{self.source}: {field}: not a name (letters, digits, _ . -)")
        if not isinstance(spec, Mapping) or set(spec) - {"keypoints", "overrides"} or "keypoints" not in spec:
            raise DataError(f"{self.source}: {field}: expected {{keypoints: [...], overrides: {{...}}}}, got {spec!r}")
        keypoints = self._names(spec["keypoints"], f"{field}.keypoints", self.names)
        alone = [k for k in keypoints if k in self.partner and self.partner[k] not in keypoints]
        if alone:  # a flipped face would teach this keypoint where its twin is
            raise DataError(
                f"{self.source}: {field}.keypoints: has {alone[0]!r} but not its mirror twin "
                f"{self.partner[alone[0]]!r}; a specialist holds both of a pair or neither"
            )
        overrides = spec.get("overrides") or {}
        if not isinstance(overrides, Mapping):
            raise DataError(f"{self.source}: {field}.overrides: expected a mapping of config values, got {overrides!r}")
        return Specialist(name, keypoints, self.flip_indices(keypoints), dict(overrides))

    @property
    def columns(self) -> list[str]:
        return columns(self.names)

    def flip_indices(self, keypoints: list[str]) -> list[list[int]]:
        """The pairs of positions within `keypoints`' columns that swap when the face is mirrored:
        x with x, y with y of each mirror pair whose twins are both there, by first position."""
        at = {k: i for i, k in enumerate(keypoints)}
        pairs = []
        for i, k in enumerate(keypoints):
            j = at.get(self.partner.get(k))
            if j is not None and j > i:
                pairs += [[2 * i, 2 * j], [2 * i + 1, 2 * j + 1]]
        return pairs

    def specialist(self, name: str) -> Specialist:
        """The specialist `name` (`all`: every keypoint)."""
        if name == ALL:
            return Specialist(ALL, self.names, self.flip_indices(self.names), {})
        if name not in self.specialists:
            raise DataError(
                f"specialist={name}: not a specialist of the keypoint set {self.name} ({self.source}); "
                f"it has {', '.join([ALL, *self.specialists])}"
            )
        return self.specialists[name]

    def unknown_columns(self, names) -> list[str]:
        """Those of the column `names` that are not the set's."""
        return [c for c in names if c not in self.columns]


def load(name_or_path: str | Path) -> KeypointSet:
    """A set by name (conf/keypoints/<name>.yaml) or from a YAML file."""
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = SETS / f"{name_or_path}.yaml"
    try:
        node = OmegaConf.load(path)
    except FileNotFoundError:
        found = ", ".join(sorted(p.stem for p in SETS.glob("*.yaml")))
        raise DataError(f"{path}: no such keypoint set; conf/keypoints has {found}") from None
    except Exception as e:  # noqa: BLE001 - YAML's and OmegaConf's parse errors
        raise DataError(f"{path}: not a readable YAML file ({str(e).splitlines()[0]})") from None
    return KeypointSet(node, str(path))


def _source(cfg: DictConfig) -> str:
    """Where a composed config's set came from: its file, as Hydra found it on its search path (conf/,
    or a folder of `hydra.searchpath`), relative to the working directory where it is inside it."""
    from hydra.core.hydra_config import HydraConfig

    runtime = OmegaConf.select(cfg, "hydra.runtime")
    if runtime is None and HydraConfig.initialized():
        runtime = HydraConfig.get().runtime
    choice = runtime.choices.get("keypoints") if runtime is not None else None
    path = searchpath.find(runtime, "keypoints", choice) if choice else None
    if path is None:
        return f"keypoints={choice}" if choice else "keypoints"
    return str(path.relative_to(Path.cwd()) if path.is_relative_to(Path.cwd()) else path)


def of(cfg: DictConfig, source: str | None = None) -> KeypointSet:
    """The keypoint set of a run's config (`source`: where the config is, for errors)."""
    return KeypointSet(cfg.keypoints, f"{source}: keypoints" if source else _source(cfg))


def specialist(cfg: DictConfig, source: str | None = None) -> Specialist:
    """The subset of its set that a run's config predicts (`specialist: NAME`)."""
    return of(cfg, source).specialist(cfg.specialist)


def subset(keypoint_set: DictConfig, name: str, field: str):
    """The resolver `${subset:${keypoints},${specialist},FIELD}`: the specialist's `columns` or
    `flip_indices`, for conf/ (the flip's settings)."""
    return getattr(KeypointSet(keypoint_set, "keypoints").specialist(name), field)


OLD_SET, OLD_SIZE = "kaggle15", 96  # what every run trained before keypoint sets predicted, and on


def upgrade(cfg: DictConfig, source: str) -> DictConfig:
    """A run's saved config from before keypoint sets, in today's shape: the kaggle15 set with the
    run's specialist (its saved keypoints and overrides; the derived flip_indices must be the saved
    ones), `specialist` its name, and 96 px faces for the data and the net. Today's configs pass as they are."""
    old = cfg.get("specialist")
    if not isinstance(old, DictConfig):
        return cfg
    node = OmegaConf.to_container(OmegaConf.load(SETS / f"{OLD_SET}.yaml"))
    keypoints = [c.removesuffix("_x") for c in old.columns[::2]]
    if old.name != ALL:
        node["specialists"][old.name] = {"keypoints": keypoints, "overrides": OmegaConf.to_container(old.overrides)}
    spec = KeypointSet(node, f"{source}: specialist").specialist(old.name)
    if spec.columns != list(old.columns) or sorted(spec.flip_indices) != sorted(map(list, old.flip_indices)):
        raise DataError(
            f"{source}: specialist {old.name}'s columns and flip_indices are not those of the "
            f"{OLD_SET} set's keypoints {keypoints}; cannot read this run as a {OLD_SET} run"
        )
    cfg.keypoints, cfg.specialist, cfg.data.size = node, old.name, OLD_SIZE
    for net in (cfg.net, cfg.net.get("backbone")):  # the nets whose layers follow the input size
        if isinstance(net, DictConfig) and "_target_" in net and _takes_size(net._target_):
            net.size = OLD_SIZE
    return cfg


def _takes_size(target: str) -> bool:
    import inspect

    from hydra.utils import get_object

    return "size" in inspect.signature(get_object(target)).parameters

"""COCO keypoints' annotations.json read and checked, field by field, without torch: what the COCO
reader (keypoints/data/coco.py) crops its faces from, and what a run checks before it starts
(keypoints/data/checks.py). Each mistake is one line naming the file and the field.

`images` (`id`, `file_name` relative to the file's folder, `width`, `height`, any fields of one's
own), `annotations` (`image_id`, `category_id`, `bbox` as x, y, width, height, `keypoints` as x, y, v
triples) and `categories` (each with its `keypoints` names); v = 0 means not labelled.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from keypoints.core.errors import DataError

EXPECTED = "expected COCO keypoints: a JSON object with images, annotations and categories lists"


@dataclass
class Coco:
    """annotations.json, checked: its images and, per face (annotation), its image, box and keypoints."""

    path: Path
    category: str
    names: list[str]  # the category's keypoint names
    images: list[dict]  # the `images` entries, with the files at `files`
    files: list[Path]
    image: np.ndarray  # (F,) the image (index into `images`) of each face
    entry: np.ndarray  # (F,) the face's index in `annotations`, for errors
    boxes: np.ndarray  # (F, 4) left, top, right, bottom in its image's pixels
    points: np.ndarray  # (F, K, 2) x, y in its image's pixels; NaN where v = 0

    def keypoints(self, names: list[str], what: str) -> np.ndarray:
        """The indices of `names` among the category's keypoints (`what` names them in errors)."""
        missing = [k for k in names if k not in self.names]
        if missing:
            near = difflib.get_close_matches(missing[0], self.names, n=1)
            raise DataError(
                f"{self.path}: category {self.category!r} has no keypoint {missing[0]!r} of {what}"
                + (f" (did you mean {near[0]!r}?)" if near else f"; it has {', '.join(self.names[:8])}, ...")
            )
        return np.array([self.names.index(k) for k in names])

    def select(
        self, keypoint_set: str, keypoints: list[str], anchors: list[str], groups: str | None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """What the keypoint set `keypoint_set` takes of this file: the indices of its `keypoints` and
        `anchors` among the category's, and each face's group, its image's field `groups` (e.g. person)
        as text (None without groups)."""
        what = f"the keypoint set {keypoint_set}"
        indices = self.keypoints(keypoints, what), self.keypoints(anchors, f"{what}'s anchors")
        if groups is None:
            return *indices, None
        for i in self.image:
            if groups not in self.images[i]:
                near = difflib.get_close_matches(groups, [f for f in self.images[i] if isinstance(f, str)], n=1)
                raise DataError(
                    f"{self.path}: images[{i}]: no field {groups!r} (data.groups={groups} names the image field "
                    f"that says whose face it is)" + (f"; did you mean data.groups={near[0]}?" if near else "")
                )
        return *indices, np.array([str(self.images[i][groups]) for i in self.image], object)

    def stats(self) -> list:
        """The `os.stat` of each image file; a missing one is named."""
        stats = []
        for i, file in enumerate(self.files):
            try:
                stats.append(file.stat())
            except OSError:
                raise DataError(f"{self.path}: images[{i}].file_name: {file}: no such file") from None
        return stats


def _load_json(path: Path):
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except FileNotFoundError:
        raise DataError(
            f"{path}: file not found; give the folder that holds it as data.dir=DIR "
            f"(--data DIR for submit and mirror), or its name as data.annotations"
        ) from None
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not JSON ({e.msg} at line {e.lineno} column {e.colno}); {EXPECTED}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: cannot be read ({e}); {EXPECTED}") from None


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def read(path: str | Path, category: str | None = None) -> Coco:
    """The faces of annotations.json at `path`, of the category named `category` (None: the one
    category with keypoint names), checked field by field: each mistake is one line naming the
    file and the field."""
    path = Path(path)
    data = _load_json(path)
    if not isinstance(data, Mapping):
        raise DataError(f"{path}: a JSON {type(data).__name__}, not an object; {EXPECTED}")
    for field in ("images", "annotations", "categories"):
        if not isinstance(data.get(field), list):
            raise DataError(f"{path}: no {field!r} list; {EXPECTED}")
    category_id, category_name, names = _category(path, data["categories"], category)
    ids, files = {}, []
    for i, image in enumerate(data["images"]):
        where = f"{path}: images[{i}]"
        if not isinstance(image, Mapping) or not isinstance(image.get("file_name"), str) or "id" not in image:
            raise DataError(f"{where}: expected an object with id, file_name, width and height")
        for field in ("width", "height"):
            if not _number(image.get(field)) or image[field] <= 0:
                raise DataError(f"{where}.{field}: {image.get(field)!r} is not a positive number of pixels")
        if image["id"] in ids:
            raise DataError(f"{where}.id: {image['id']!r} is also the id of images[{ids[image['id']]}]")
        ids[image["id"]] = i
        files.append(path.parent / image["file_name"])
    image, entry, boxes, points = [], [], [], []
    for a, annotation in enumerate(data["annotations"]):
        where = f"{path}: annotations[{a}]"
        if not isinstance(annotation, Mapping):
            raise DataError(f"{where}: expected an object with image_id, category_id, bbox and keypoints")
        if annotation.get("category_id") != category_id or annotation.get("iscrowd", 0):
            continue  # another category's objects, or a crowd's box without keypoints
        if annotation.get("image_id") not in ids:
            raise DataError(f"{where}.image_id: {annotation.get('image_id')!r} is not the id of any of the images")
        values = annotation.get("keypoints")
        if not isinstance(values, list) or len(values) != 3 * len(names) or not all(map(_number, values)):
            count = f"{len(values)} values" if isinstance(values, list) else repr(values)
            raise DataError(
                f"{where}.keypoints: {count}; expected x, y, v for each of the {len(names)} keypoints "
                f"of category {category_name!r} ({3 * len(names)} numbers)"
            )
        triples = np.array(values, np.float64).reshape(-1, 3)
        if not np.isin(triples[:, 2], (0, 1, 2)).all():
            k = int(np.flatnonzero(~np.isin(triples[:, 2], (0, 1, 2)))[0])
            raise DataError(
                f"{where}.keypoints[{3 * k + 2}]: visibility {triples[k, 2]:g} of {names[k]!r}; "
                f"expected 0 (not labelled), 1 or 2"
            )
        if not (triples[:, 2] > 0).any():
            continue  # nothing labelled: nothing to learn from
        im = ids[annotation["image_id"]]
        boxes.append(_box(where, annotation.get("bbox"), data["images"][im], im))
        points.append(np.where(triples[:, 2:] > 0, triples[:, :2], np.nan))
        image.append(im)
        entry.append(a)
    if not image:
        raise DataError(f"{path}: no annotation of category {category_name!r} has a labelled keypoint")
    return Coco(
        path,
        category_name,
        names,
        list(data["images"]),
        files,
        np.array(image),
        np.array(entry),
        np.array(boxes),
        np.array(points),
    )


def _category(path: Path, categories: list, wanted: str | None) -> tuple[object, str, list[str]]:
    """The id, name and keypoint names of the category `wanted` (None: the only one with keypoints)."""
    found = []
    for i, category in enumerate(categories):
        if not isinstance(category, Mapping) or "id" not in category:
            raise DataError(f"{path}: categories[{i}]: expected an object with id, name and keypoints")
        name = category.get("name", str(category["id"]))
        names = category.get("keypoints")
        if wanted is not None and name != wanted:
            continue
        if not isinstance(names, list) or not names or not all(isinstance(k, str) for k in names):
            if wanted is not None or names is not None:
                raise DataError(
                    f"{path}: categories[{i}] ({name!r}): no list of keypoint names in 'keypoints'; "
                    f"expected the names of its keypoints, in the order of the annotations' triples"
                )
            continue
        if len(set(names)) != len(names):
            raise DataError(
                f"{path}: categories[{i}] ({name!r}).keypoints: {next(k for k in names if names.count(k) > 1)!r} "
                f"is named twice"
            )
        found.append((category["id"], name, list(names)))
    if not found:
        what = f"named {wanted!r} (data.category)" if wanted is not None else "with a list of keypoint names"
        raise DataError(f"{path}: no category {what}; expected one whose 'keypoints' names its keypoints")
    if len(found) > 1:
        raise DataError(
            f"{path}: categories {', '.join(repr(f[1]) for f in found)} all have keypoints; "
            f"choose one with data.category=NAME"
        )
    return found[0]


def _box(where: str, bbox, image: Mapping, index: int) -> list[float]:
    """An annotation's bbox [x, y, width, height] as left, top, right, bottom, checked against its image."""
    if not isinstance(bbox, list) or len(bbox) != 4 or not all(map(_number, bbox)) or bbox[2] <= 0 or bbox[3] <= 0:
        raise DataError(f"{where}.bbox: {bbox!r}; expected [x, y, width, height] with a positive width and height")
    left, top, w, h = map(float, bbox)
    if left >= image["width"] or top >= image["height"] or left + w <= 0 or top + h <= 0:
        raise DataError(
            f"{where}.bbox: {bbox} lies outside its image, images[{index}] ({image['width']}x{image['height']} px)"
        )
    return [left, top, left + w, top + h]

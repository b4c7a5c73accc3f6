"""`kfkd data realfaces|faces68 SOURCE --out DIR` on a tiny made-up copy of Udacity's data/ folder: Kaggle's
files that kfkd reads back, split by person, keypoints where the 68 points map them and on the features
the photos show; COCO keypoints that kfkd's COCO reader splits by person; one line for each bad input."""

import json
import re
from collections import Counter

import numpy as np
import pandas as pd
import pytest
from conftest import KAGGLE15, compose, face68
from PIL import Image

from keypoints.core import keypointset
from keypoints.data import kaggle
from keypoints.data.build import kaggle15 as kaggle15_of_68
from keypoints.data.build import main

# Five people (one without a frame number, as some of Udacity's files), three frames of one video each in
# training/ and two other frames of them in test/, as Udacity ships them: the same people in both.
PEOPLE = ["Ann_Lee", "Bo_Dee_Ray", "Cy_Ono", "Di_Al-Amin", "2382SJ8"]
# Kaggle's 15 keypoints as iBUG's 68 (../shared/data/photos/README.md), written out again to check against.
FROM_68 = [range(42, 48), range(36, 42), [42], [45], [39], [36], [22], [26], [21], [17], [30], [54], [48], [51], [57]]
SPOTS = {"left_eye_center": range(42, 48), "right_eye_center": range(36, 42), "nose_tip": [30], "bottom_lip": [57]}
ALWAYS = [0, 1, 10, 14]  # eye centres, nose tip, bottom lip: labelled in every row


def background(k: int) -> int:
    """The grey of person k's photos: which person a crop is of."""
    return 30 + 30 * k


def photo(points: np.ndarray, k: int, size=(130, 150)) -> Image.Image:
    """Person k's photo: flat grey with a bright blob on each eye centre, the nose tip and the bottom lip."""
    x, y = np.meshgrid(np.arange(size[0]) + 0.5, np.arange(size[1]) + 0.5)  # pixel centres
    grey = np.full(x.shape, float(background(k)))
    for indices in SPOTS.values():
        cx, cy = points[list(indices)].mean(0)
        grey += 100 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * 1.5**2))
    return Image.fromarray(np.clip(grey, 0, 255).astype(np.uint8)).convert("RGB")


@pytest.fixture
def source(tmp_path):
    """Udacity's layout: the two CSVs (an unnamed column of file names, then 136 numbers) and the frames."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for split, frames in (("training", ("10", "11", "12")), ("test", ("20", "21"))):
        (root / split).mkdir(parents=True)
        lines = ["," + ",".join(map(str, range(136)))]
        for k, name in enumerate(PEOPLE):
            for frame in frames if name[0].isalpha() else frames[:1]:
                points = face68(rng, (65 + rng.uniform(-5, 5), 70 + rng.uniform(-5, 5)), rng.uniform(0.6, 0.9))
                file = f"{name}_{frame}.jpg" if name[0].isalpha() else f"{name}.jpg"
                photo(points, k).save(root / split / file, quality=95)
                lines.append(file + "," + ",".join(f"{v:.3f}" for v in points.ravel()))
        (root / f"{split}_frames_keypoints.csv").write_text("\n".join(lines) + "\n")
    return root


def frames(source, split):
    """The CSV's frames: file name -> 68 points."""
    rows = pd.read_csv(source / f"{split}_frames_keypoints.csv", index_col=0)
    return {name: row.to_numpy(float).reshape(68, 2) for name, row in rows.iterrows()}


def person_of(face: np.ndarray) -> int:
    """Whose crop or photo `face` is, by its grey."""
    return int(np.argmin([abs(np.median(face) - background(k)) for k in range(len(PEOPLE))]))


def build(*args):
    main([*map(str, args)])


def test_realfaces_writes_kaggles_files_split_by_person_that_kfkd_reads(source, tmp_path, capsys):
    out = tmp_path / "realfaces"
    build("realfaces", source, "--out", out)
    assert capsys.readouterr().out.splitlines()[-1].startswith(f"realfaces: wrote {out}: training.csv.gz (")
    frame, faces = kaggle.read_csv(out / "training.csv.gz", None, 96)
    assert list(frame.columns) == KAGGLE15.columns and faces.shape[1:] == (96, 96)
    groups, name = kaggle.read_groups(out / "training_people.csv", len(frame))
    assert name == "person" and all(isinstance(g, str) and g.isdigit() for g in groups)
    test = pd.read_csv(out / "test.csv.gz")
    assert list(test.columns) == ["ImageId", "Image"] and test.ImageId.tolist() == list(range(1, len(test) + 1))
    _, test_faces = kaggle.read_csv(out / "test.csv.gz", None, 96)
    # One of the five people is the test person: all their frames (training/ and test/) are the test faces,
    # and none of them trains. Each person id is one person, and each person one id.
    train_people, test_people = {person_of(f) for f in faces}, {person_of(f) for f in test_faces}
    assert len(test_people) == 1 and not train_people & test_people and len(train_people) == 4
    assert set(groups) == {"0", "1", "2", "3"} and len({(g, person_of(f)) for g, f in zip(groups, faces)}) == 4
    held = PEOPLE[test_people.pop()]
    assert len(test) == sum(n.startswith(held) for split in ("training", "test") for n in frames(source, split))
    assert len(frame) == sum(not n.startswith(held) for n in frames(source, "training"))
    lookup = pd.read_csv(out / "IdLookupTable.csv")
    assert list(lookup.columns) == ["RowId", "ImageId", "FeatureName", "Location"] and lookup.Location.isna().all()
    assert lookup.RowId.tolist() == list(range(1, len(lookup) + 1)) and set(lookup.ImageId) == set(test.ImageId)
    assert set(lookup.FeatureName) <= set(KAGGLE15.columns)


def test_realfaces_keypoints_are_the_68_points_mapped_and_sit_on_the_features_where_kaggles_do(source, tmp_path):
    out = tmp_path / "realfaces"
    build("realfaces", source, "--out", out)
    frame, faces = kaggle.read_csv(out / "training.csv.gz", None, 96)
    labels = frame[KAGGLE15.columns].to_numpy().reshape(-1, 15, 2)
    mapped = {n: np.array([p[list(i)].mean(0) for i in FROM_68]) for n, p in frames(source, "training").items()}
    for face, points in zip(faces, labels):
        # The labels are one frame's 15 mapped points, scaled and shifted (upright) into the crop.
        here = ~np.isnan(points[:, 0])
        fits = []
        for p in mapped.values():
            a, b = p[here] - p[here].mean(0), points[here] - points[here].mean(0)
            fits.append(np.abs(a * (a * b).sum() / (a * a).sum() - b).max())
        assert sorted(fits)[0] < 1e-3 < sorted(fits)[1]
        # The crop shows each labelled spot's blob where its label is.
        y, x = np.mgrid[:96, :96] + 0.5
        for spot, (cx, cy) in zip(SPOTS, points[ALWAYS]):
            near = np.hypot(x - cx, y - cy) < 6
            weight = np.clip(face[near] - np.median(face), 0, None)
            found = (x[near] * weight).sum() / weight.sum(), (y[near] * weight).sum() / weight.sum()
            assert np.hypot(found[0] - cx, found[1] - cy) < 0.25, spot  # a half-pixel slip fails
    # Kaggle's missing pattern: a row has all 15 keypoints or the four that every row has.
    present = ~np.isnan(labels[:, :, 0])
    assert all(row.all() or (row[ALWAYS].all() and row.sum() == 4) for row in present)
    # Where Kaggle's faces sit: eye midpoint near (48, 38), eyes about 36 px apart.
    np.testing.assert_allclose(labels[:, :2].mean((0, 1)), (48, 38), atol=3)
    assert 30 < np.linalg.norm(labels[:, 0] - labels[:, 1], axis=1).mean() < 42


def test_the_68_to_15_map_takes_any_leading_axes_as_the_video_benchmarks_truth_does():
    points = np.random.default_rng(0).normal(size=(2, 3, 68, 2))  # frames, faces, points, xy
    mapped = np.array([[[p[list(i)].mean(0) for i in FROM_68] for p in frame] for frame in points])
    assert np.allclose(kaggle15_of_68(points), mapped) and np.allclose(kaggle15_of_68(points[1, 2]), mapped[1, 2])


def test_the_same_seed_builds_the_same_bytes_and_another_seed_other_crops(source, tmp_path):
    for name, seed in (("a", 0), ("b", 0), ("c", 1)):
        build("realfaces", source, "--out", tmp_path / name, "--seed", seed)
    read = lambda name: (tmp_path / name / "training.csv.gz").read_bytes()
    assert read("a") == read("b") != read("c")


def test_faces68_writes_coco_keypoints_that_kfkd_splits_by_person(source, tmp_path, capsys):
    out, real = tmp_path / "faces68", tmp_path / "realfaces"
    build("faces68", source, "--out", out)
    coco = json.loads((out / "annotations.json").read_text())
    n = len(coco["images"])
    assert (
        capsys.readouterr().out.splitlines()[-1]
        == f"faces68: wrote {out}: annotations.json and images/ ({n} photos of 4 people)"
    )
    ibug = keypointset.load("ibug68")
    (category,) = coco["categories"]
    assert category["name"] == "face" and category["keypoints"] == ibug.names
    assert category["skeleton"] == [[ibug.names.index(a) + 1, ibug.names.index(b) + 1] for a, b in ibug.skeleton]
    training = frames(source, "training")
    names = [image["file_name"] for image in coco["images"]]
    assert names == sorted(names) and all(n.startswith("images/") and (out / n).is_file() for n in names)
    for image, annotation in zip(coco["images"], coco["annotations"]):
        assert annotation["image_id"] == image["id"] and annotation["category_id"] == 1
        points = np.array(annotation["keypoints"]).reshape(68, 3)
        np.testing.assert_array_equal(points[:, :2], training[image["file_name"][7:]])
        assert (points[:, 2] == 2).all() and (image["width"], image["height"]) == (130, 150)
        (left, top), (right, bottom) = points[:, :2].min(0), points[:, :2].max(0)
        np.testing.assert_allclose(annotation["bbox"], [left, top, right - left, bottom - top])
    # The same people, with the same ids, as realfaces built with the same seed.
    build("realfaces", source, "--out", real)
    photos = {image["person"]: person_of(np.asarray(Image.open(out / image["file_name"]))) for image in coco["images"]}
    _, faces = kaggle.read_csv(real / "training.csv.gz", None, 96)
    people = pd.read_csv(real / "training_people.csv").person
    assert photos == {p: person_of(f) for p, f in zip(people, faces)}
    assert Counter(image["person"] for image in coco["images"]) == Counter(people)
    # kfkd's COCO reader: the 68 points, and validation on people that do not train.
    from hydra.utils import instantiate

    cfg = compose("data=coco", f"data.dir={out}", "keypoints=ibug68", "data.groups=person", "paths.cache_dir=null")
    data = instantiate(cfg.data, columns=keypointset.specialist(cfg).columns)
    data.setup()
    assert data.train_set[:][1].shape[1] == 136 and len(data.train_set) + len(data.valid_set) == n
    person = np.array([data.coco.images[i]["person"] for i in data.coco.image])
    assert not set(person[data.training]) & set(person[data.validation])


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda s: (s / "test_frames_keypoints.csv").unlink(), "{s}/test_frames_keypoints.csv: file not found; give"),
        (lambda s: (s / "training" / "Cy_Ono_11.jpg").unlink(), "{s}/training/Cy_Ono_11.jpg: no such file (line 9 of"),
        (
            lambda s: _edit(s, 3, lambda line: line.rsplit(",", 1)[0]),
            "line 3: 135 values after the file name, expected",
        ),
        (lambda s: _edit(s, 2, lambda line: line.replace(",", ",x", 1)), "line 2: a value is not a number; expected"),
    ],
)
def test_bad_input_ends_with_one_line_and_writes_nothing(source, tmp_path, damage, message):
    damage(source)
    out = tmp_path / "out"
    for command in ("realfaces", "faces68"):
        with pytest.raises(SystemExit) as exit:
            build(command, source, "--out", out)
        text = str(exit.value.code)
        assert text.startswith("error: ") and "\n" not in text and message.format(s=source) in text
    assert not out.exists()


def _edit(source, line: int, change):
    path = source / "training_frames_keypoints.csv"
    lines = path.read_text().splitlines()
    lines[line - 1] = change(lines[line - 1])
    path.write_text("\n".join(lines) + "\n")


def test_a_folder_it_did_not_write_is_left_untouched_and_its_own_is_rebuilt(source, tmp_path):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    for command in ("realfaces", "faces68"):
        with pytest.raises(
            SystemExit, match=rf"^error: {re.escape(str(out))}: not empty and not written by kfkd data; give a new"
        ):
            build(command, source, "--out", out)
    assert [p.name for p in out.iterdir()] == ["notes.txt"] and (out / "notes.txt").read_text() == "keep me"
    built = tmp_path / "built"
    build("faces68", source, "--out", built, "--seed", 1)
    build("faces68", source, "--out", built)  # its own folder: rebuilt, with no frame of the last build left over
    coco = json.loads((built / "annotations.json").read_text())
    assert sorted(p.name for p in (built / "images").iterdir()) == sorted(i["file_name"][7:] for i in coco["images"])

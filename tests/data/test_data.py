import numpy as np
import pandas as pd
import pytest
from conftest import KAGGLE15, KW

from keypoints.core.errors import DataError
from keypoints.data.kaggle import KeypointsDataModule, find_file, parse_pixels, read_csv, select

COLUMNS = KAGGLE15.columns


def write_training(path, keypoints: list[dict], rng=np.random.default_rng(0)):  # noqa: B008 - one stream shared by the calls
    rows = [
        {**{c: kp.get(c, np.nan) for c in COLUMNS}, "Image": " ".join(map(str, rng.integers(0, 256, 9216)))}
        for kp in keypoints
    ]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_parse_pixels_matches_the_tutorials_parser():
    rng = np.random.default_rng(1)
    images = pd.Series([" ".join(map(str, rng.integers(0, 256, 9216))) for _ in range(5)])
    expected = np.vstack([np.fromstring(s, sep=" ") for s in images]).reshape(-1, 96, 96)
    got = parse_pixels(images, "x.csv", 96)
    assert got.dtype == np.uint8 and got.shape == (5, 96, 96)
    np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize(
    "bad, message",
    [
        ("1 2 3", r"line 3: Image has 3 pixels, expected 9216 \(96x96: data.size\)"),
        (" ".join(["7"] * 9215 + ["x1"]), "line 3: pixel 'x1' is not an integer 0-255"),
        (" ".join(["7"] * 9215 + ["256"]), "line 3: pixel 256 is not an integer 0-255"),
    ],
)
def test_parse_pixels_names_the_bad_line(bad, message):
    images = pd.Series([" ".join(["1"] * 9216), bad])
    with pytest.raises(DataError, match=message):
        parse_pixels(images, "training.csv", 96)


def test_loader_selects_columns_drops_incomplete_rows_and_scales(tmp_path):
    full = {c: 48.0 for c in COLUMNS} | {"left_eye_center_x": 72.0, "left_eye_center_y": 24.0}
    eyes_only = {
        "left_eye_center_x": 96.0,
        "left_eye_center_y": 0.0,
        "right_eye_center_x": 30.0,
        "right_eye_center_y": 40.0,
    }
    write_training(tmp_path / "training.csv", [full, eyes_only] * 4)
    frame, images = read_csv(tmp_path / "training.csv", None, 96)
    assert images.shape == (8, 96, 96) and list(frame.columns) == list(COLUMNS)
    assert list(select(frame, list(COLUMNS), tmp_path, drop_incomplete=True, size=96)) == [0, 2, 4, 6]
    assert len(select(frame, ["nose_tip_x"], tmp_path, drop_incomplete=False, size=96)) == 4
    assert len(select(frame, ["left_eye_center_x", "nose_tip_x"], tmp_path, drop_incomplete=False, size=96)) == 8

    dm = KeypointsDataModule(
        str(tmp_path), ["left_eye_center_x", "left_eye_center_y", "nose_tip_x"], drop_incomplete=False, **KW
    )
    dm.setup()
    x, y, mask = dm.train_set[:]
    assert x.shape[1:] == (1, 96, 96) and x.dtype.is_floating_point and 0 <= x.min() and x.max() <= 1
    assert len(dm.train_set) + len(dm.valid_set) == 8 and len(dm.valid_set) == 2
    # (px - 48) / 48: full rows have (72, 24, 48) -> (0.5, -0.5, 0); eyes-only rows miss the nose.
    for target, present in zip(y.tolist(), mask.tolist()):
        if present[2]:
            assert target == [0.5, -0.5, 0.0]
        else:
            assert target[:2] == [1.0, -1.0] and present == [1, 1, 0]


def test_faces_of_another_size_than_data_size_are_refused_even_from_the_cache(tmp_path):
    write_training(tmp_path / "training.csv", [{c: 40.0 for c in COLUMNS}] * 10)
    KeypointsDataModule(str(tmp_path), list(COLUMNS), drop_incomplete=True, **{**KW, "cache_dir": tmp_path}).setup()
    dm = KeypointsDataModule(
        str(tmp_path), list(COLUMNS), drop_incomplete=True, **{**KW, "cache_dir": tmp_path, "size": 128}
    )
    with pytest.raises(
        DataError, match=r"training.csv: line 2: Image has 9216 pixels, expected 16384 \(128x128: data.size\)"
    ):
        dm.setup()


def test_batches_are_slices(tmp_path):
    write_training(tmp_path / "training.csv", [{c: 40.0 for c in COLUMNS}] * 10)
    dm = KeypointsDataModule(str(tmp_path), list(COLUMNS), drop_incomplete=True, **KW)
    dm.setup()
    x, y, mask = next(iter(dm.train_dataloader()))
    assert x.shape == (4, 1, 96, 96) and y.shape == mask.shape == (4, 30)


def test_split_is_seeded_and_shared_by_all_column_selections(tmp_path):
    write_training(
        tmp_path / "training.csv", [{c: 40.0 for c in COLUMNS}, {"nose_tip_x": 50.0, "nose_tip_y": 50.0}] * 20
    )

    def valid(columns, seed=0):
        dm = KeypointsDataModule(str(tmp_path), columns, drop_incomplete=True, **{**KW, "split_seed": seed})
        dm.setup()
        return {tuple(r) for r in dm.valid_set[:][1].tolist()}, dm

    a, dm_all = valid(list(COLUMNS))
    assert valid(list(COLUMNS))[0] == a
    # The nose specialist validates on the base net's validation rows plus nose-only ones, never on its training rows.
    _, dm_nose = valid(["nose_tip_x", "nose_tip_y"])
    train_x = dm_all.train_set[:][0]
    for image in dm_nose.valid_set[:][0]:
        assert not (train_x == image).flatten(1).all(1).any()


def test_missing_file_names_it_and_kaggle(tmp_path):
    with pytest.raises(DataError, match=r"training\.csv: file not found.*facial-keypoints-detection"):
        find_file(tmp_path, "training.csv")


def test_compressed_files_are_found(tmp_path):
    write_training(tmp_path / "training.csv.gz", [{c: 40.0 for c in COLUMNS}] * 2)
    assert find_file(tmp_path, "training.csv").name == "training.csv.gz"
    assert read_csv(find_file(tmp_path, "training.csv"), None, 96)[1].shape == (2, 96, 96)


def test_realfaces_load(realfaces, tmp_path):
    frame, images = read_csv(find_file(realfaces, "training.csv"), tmp_path, 96)
    assert images.shape == (2849, 96, 96) and list(frame.columns) == list(COLUMNS)
    assert len(select(frame, list(COLUMNS), realfaces, drop_incomplete=True, size=96)) == 824
    test, test_images = read_csv(find_file(realfaces, "test.csv"), tmp_path, 96)
    assert list(test.columns) == ["ImageId"] and test_images.shape == (682, 96, 96)


def write_groups(path, groups, header="row,person"):
    path.write_text(header + "\n" + "".join(f"{row},{g}\n" for row, g in enumerate(groups)))
    return path


def datamodule(directory, **kw):
    dm = KeypointsDataModule(str(directory), list(COLUMNS), drop_incomplete=False, **{**KW, **kw})
    dm.setup()
    return dm


def rows_of(dm_set):
    return {int(x) for x in dm_set[:][1][:, 0].mul(48).add(48).round().tolist()}


def test_groups_split_holds_out_whole_groups_seeded(tmp_path):
    # 40 rows, each identified by its nose x (row number); 10 people of 4 rows each.
    write_training(
        tmp_path / "training.csv", [{"left_eye_center_x": float(r), "left_eye_center_y": 1.0} for r in range(40)]
    )
    people = [r % 10 for r in range(40)]
    groups = write_groups(tmp_path / "people.csv", people)
    dm = datamodule(tmp_path, groups=str(groups))
    train, valid = rows_of(dm.train_set), rows_of(dm.valid_set)
    assert train | valid == set(range(40)) and len(valid) == 12  # whole people, a quarter of the rows (rounded up)
    assert not {people[r] for r in train} & {people[r] for r in valid}
    assert rows_of(datamodule(tmp_path, groups=str(groups)).valid_set) == valid
    assert rows_of(datamodule(tmp_path, groups=str(groups), split_seed=1).valid_set) != valid
    # Without groups the random split puts rows of one person on both sides.
    plain = datamodule(tmp_path)
    assert {people[r] for r in rows_of(plain.train_set)} & {people[r] for r in rows_of(plain.valid_set)}


def test_excluded_groups_neither_train_nor_validate(tmp_path):
    write_training(
        tmp_path / "training.csv", [{"left_eye_center_x": float(r), "left_eye_center_y": 1.0} for r in range(40)]
    )
    people = [r % 10 for r in range(40)]
    groups = str(write_groups(tmp_path / "people.csv", people))
    (tmp_path / "photos.csv").write_text("file,person\na.jpg,3\nb.jpg,7\n")
    for exclude in ([3, 7], str(tmp_path / "photos.csv")):
        dm = datamodule(tmp_path, groups=groups, exclude_groups=exclude)
        seen = rows_of(dm.train_set) | rows_of(dm.valid_set)
        assert seen == {r for r in range(40) if people[r] not in (3, 7)}
    with pytest.raises(DataError, match="exclude_groups needs data.groups"):
        datamodule(tmp_path, exclude_groups=[3])
    (tmp_path / "other.csv").write_text("file,who\na.jpg,3\n")
    with pytest.raises(DataError, match=r"other\.csv: no column 'person'.*data\.exclude_groups"):
        datamodule(tmp_path, groups=groups, exclude_groups=str(tmp_path / "other.csv"))


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "row,person\n" + "".join(f"{r},{r}\n" for r in range(7)),
            r"people\.csv: 7 rows, but training\.csv has 8; no line for row 7",
        ),
        (
            "row,person\n" + "".join(f"{r},{r}\n" for r in [0, 1, 2, 3, 4, 5, 6, 6]),
            r"people\.csv: line 9: row 6 repeats line 8",
        ),
        (
            "row,person\n" + "".join(f"{r},{r}\n" for r in range(7)) + "8,1\n",
            r"people\.csv: line 9: row '8' is not a row of training\.csv \(0\.\.7\)",
        ),
        (
            "row,person\n" + "".join(f"{r},{r}\n" for r in range(7)) + "7,\n",
            r"people\.csv: line 9: row 7 has no person",
        ),
        (
            "id,person\n" + "".join(f"{r},{r}\n" for r in range(8)),
            r"people\.csv: columns \['id', 'person'\]; expected a CSV of row,<group>",
        ),
        (
            "row\n" + "".join(f"{r}\n" for r in range(8)),
            r"people\.csv: columns \['row'\]; expected a CSV of row,<group>",
        ),
    ],
)
def test_a_wrong_groups_file_names_the_file_and_the_row(tmp_path, text, message):
    write_training(tmp_path / "training.csv", [{"nose_tip_x": 40.0}] * 8)
    (tmp_path / "people.csv").write_text(text)
    with pytest.raises(DataError, match=message):
        datamodule(tmp_path, groups=str(tmp_path / "people.csv"))
    with pytest.raises(DataError, match=r"nowhere\.csv: file not found \(data\.groups\)"):
        datamodule(tmp_path, groups=str(tmp_path / "nowhere.csv"))


def test_realfaces_person_split_shares_no_person(realfaces, tmp_path):
    people = pd.read_csv(realfaces / "training_people.csv")
    dm = KeypointsDataModule(
        str(realfaces),
        list(COLUMNS),
        drop_incomplete=False,
        **{**KW, "valid_fraction": 0.2, "cache_dir": tmp_path, "groups": str(realfaces / "training_people.csv")},
    )
    dm.setup()
    frame, images = read_csv(find_file(realfaces, "training.csv"), tmp_path, 96)
    # Rows by their images: which people each side holds.
    index = {img.tobytes(): row for row, img in enumerate(images)}
    side = lambda s: {people.person[index[(x[0].numpy() * 255).round().astype(np.uint8).tobytes()]] for x in s[:][0]}
    train, valid = side(dm.train_set), side(dm.valid_set)
    assert not train & valid and len(train) + len(valid) == people.person.nunique() == 333
    assert abs(len(dm.valid_set) - 0.2 * 2849) < 15

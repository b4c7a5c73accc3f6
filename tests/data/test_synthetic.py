"""The embedded synthetic dataset: Kaggle's file format, determinism, missing labels, and labels that
sit on the rendered features."""

import numpy as np
import pandas as pd
import pytest
from conftest import KAGGLE15

from keypoints.data.synthetic import ALWAYS_LABELLED, COLUMNS, N, generate

FILES = ("training.csv", "test.csv", "IdLookupTable.csv")
ALWAYS_COLUMNS = [c for c in COLUMNS if c.rsplit("_", 1)[0] in ALWAYS_LABELLED]


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("small"), n_train=40, n_test=10, seed=0)


@pytest.fixture(scope="module")
def training(tmp_path_factory):
    """A few hundred rows, for the statistics."""
    return pd.read_csv(generate(tmp_path_factory.mktemp("big"), n_train=300, n_test=1, seed=1) / "training.csv")


def pixels(frame):
    return np.stack([np.array(s.split(), dtype=int) for s in frame["Image"]])


def test_the_synthetic_faces_are_labelled_with_the_kaggle15_sets_columns():
    assert COLUMNS == KAGGLE15.columns


def test_headers_and_pixels(small):
    assert {p.name for p in small.iterdir()} == set(FILES)  # no temporary files left behind
    train, test = pd.read_csv(small / "training.csv"), pd.read_csv(small / "test.csv")
    assert list(train.columns) == [*COLUMNS, "Image"] and len(train) == 40
    assert list(test.columns) == ["ImageId", "Image"] and list(test["ImageId"]) == list(range(1, 11))
    for frame in (train, test):
        values = pixels(frame)
        assert values.shape == (len(frame), N * N)
        assert values.min() >= 0 and values.max() <= 255
    labels = train[list(COLUMNS)].to_numpy()
    assert ((labels >= 0) & (labels <= N))[~np.isnan(labels)].all()


def test_lookup_table(small):
    lookup = pd.read_csv(small / "IdLookupTable.csv")
    assert list(lookup.columns) == ["RowId", "ImageId", "FeatureName", "Location"]
    assert list(lookup["RowId"]) == list(range(1, len(lookup) + 1))
    assert lookup["Location"].isna().all()
    assert set(lookup["ImageId"]) == set(pd.read_csv(small / "test.csv")["ImageId"])
    assert lookup["FeatureName"].isin(COLUMNS).all()
    for _, rows in lookup.groupby("ImageId"):  # in COLUMNS order: either all 30 or the always-labelled 8
        assert list(rows["FeatureName"]) in (list(COLUMNS), ALWAYS_COLUMNS)
    assert list(lookup["ImageId"]) == sorted(lookup["ImageId"])


def test_deterministic(small, tmp_path):
    again, other = generate(tmp_path / "a", 40, 10, seed=0), generate(tmp_path / "b", 40, 10, seed=1)
    for name in FILES:
        assert (again / name).read_bytes() == (small / name).read_bytes()
    assert (other / "training.csv").read_bytes() != (small / "training.csv").read_bytes()


def test_missing_pattern(training):
    complete = training[list(COLUMNS)].notna().all(axis=1)
    assert 0.2 < complete.mean() < 0.4
    assert training[ALWAYS_COLUMNS].notna().all().all()  # the template keeps these well inside the image
    partial = training.loc[~complete, [c for c in COLUMNS if c not in ALWAYS_COLUMNS]]
    assert partial.isna().mean().mean() > 0.95
    # x and y go missing together.
    assert (training[list(COLUMNS[::2])].isna().values == training[list(COLUMNS[1::2])].isna().values).all()


def test_labels_sit_on_the_features(training):
    """The pupils are drawn at the eye centres: darker than the rest of the face, on average."""
    images = pixels(training).reshape(-1, N, N).astype(float)
    rows = np.arange(len(images))

    def at(x, y):
        return images[rows, np.clip(np.rint(y), 0, 95).astype(int), np.clip(np.rint(x), 0, 95).astype(int)]

    eyes = (
        at(training["left_eye_center_x"], training["left_eye_center_y"])
        + at(training["right_eye_center_x"], training["right_eye_center_y"])
    ) / 2
    nose_x, nose_y = training["nose_tip_x"].values, training["nose_tip_y"].values
    offsets = np.random.default_rng(0).uniform(-20, 20, (20, 2, len(images)))
    face = np.mean([at(nose_x + dx, nose_y - 10 + dy) for dx, dy in offsets], axis=0)
    assert eyes.mean() < face.mean() - 30
    assert (eyes < face).mean() > 0.9

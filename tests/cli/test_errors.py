"""Bad input: each mistake a user can make with a data file or the command line is named in one line."""

import gzip
import os
import subprocess
import sys

import pytest
from conftest import KAGGLE15, ROOT

from keypoints.core.errors import DataError
from keypoints.data.kaggle import KeypointsDataModule, read_csv, select

COLUMNS = KAGGLE15.columns

KW = dict(
    size=96,
    batch_size=4,
    valid_fraction=0.25,
    split_seed=0,
    cache_dir=None,
    generate=None,
    groups=None,
    exclude_groups=None,
)
PIXELS = " ".join(["7"] * 9216)


def csv_text(rows: list[dict], columns=(*COLUMNS, "Image")) -> str:
    """A training.csv in Kaggle's layout; keys missing from a row are empty cells."""
    return "\n".join([",".join(columns)] + [",".join(str(row.get(c, "")) for c in columns) for row in rows]) + "\n"


def full(**changes) -> dict:
    return {**{c: 40.0 for c in COLUMNS}, "Image": PIXELS, **changes}


def load(directory, columns=COLUMNS, drop_incomplete=True):
    dm = KeypointsDataModule(str(directory), list(columns), drop_incomplete=drop_incomplete, **KW)
    dm.setup()
    return dm


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", r"training\.csv: the file is empty"),
        (csv_text([]).encode(), r"training\.csv: no data rows"),
        (gzip.compress(csv_text([full()] * 8).encode())[:300], None),  # written as .gz below: a cut-off download
        (csv_text([full()] * 8, columns=(*COLUMNS, "image")).encode(), r"no column 'Image'; did you mean 'image'\?"),
        (
            csv_text([full()] * 8, columns=(*(c.replace("tip_y", "tip_Y") for c in COLUMNS), "Image")).encode(),
            r"training\.csv: no column 'nose_tip_y'; did you mean 'nose_tip_Y'\?",
        ),
        (
            csv_text([full()] * 3 + [full(Image="1 2 3")]).encode(),
            r"training\.csv: line 5: Image has 3 pixels, expected 9216",
        ),
        (csv_text([full(Image=PIXELS[:-1] + "x")]).encode(), r"line 2: pixel 'x' is not an integer 0-255"),
        (csv_text([full(), full(Image=PIXELS[:-1] + "-7")]).encode(), r"line 3: pixel '-7' is not an integer 0-255"),
        (csv_text([full(Image=PIXELS[:-1] + "300")]).encode(), r"line 2: pixel 300 is not an integer 0-255"),
        (csv_text([full(), full(), full(nose_tip_x=97.5)]).encode(), r"line 4: nose_tip_x = 97.5 is outside \[0, 96\]"),
        (
            csv_text([full(), full(mouth_left_corner_y=-1)]).encode(),
            r"line 3: mouth_left_corner_y = -1.0 is outside \[0, 96\]",
        ),
        (
            csv_text([full(), full(left_eye_center_x="left")]).encode(),
            r"line 3: left_eye_center_x = 'left' is not a number",
        ),
    ],
)
def test_bad_training_csv_is_named_with_line_and_column(tmp_path, content, message):
    name = "training.csv.gz" if message is None else "training.csv"
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message or r"training\.csv\.gz: not a readable CSV \(Compressed file ended"):
        load(tmp_path)


def test_missing_file_and_directory_are_named(tmp_path):
    with pytest.raises(DataError, match=rf"{tmp_path}/nowhere/training\.csv: file not found \(nor \.gz/\.zip\)"):
        load(tmp_path / "nowhere")


def test_columns_that_leave_no_rows_are_named(tmp_path):
    rows = [full(nose_tip_x="", nose_tip_y="")] * 6 + [{"nose_tip_x": 40, "nose_tip_y": 40, "Image": PIXELS}] * 2
    (tmp_path / "training.csv").write_text(csv_text(rows))
    with pytest.raises(DataError, match=r"no row has all of the columns \['left_eye_center_x', .*'nose_tip_y'"):
        load(tmp_path)
    frame, _ = read_csv(tmp_path / "training.csv", None, 96)
    assert list(select(frame, ["nose_tip_x", "nose_tip_y"], tmp_path, drop_incomplete=True, size=96)) == [6, 7]


def train_py(cwd, *args, env=None):
    return subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def test_unknown_group_option_lists_the_choices_and_fails(tmp_path):
    proc = train_py(tmp_path, "keypoints=kaggle16")
    assert proc.returncode != 0
    assert "Could not find 'keypoints/kaggle16'" in proc.stderr and "\tkaggle15\n" in proc.stderr
    assert "Traceback" not in proc.stderr and not (tmp_path / "outputs").exists()


def test_unknown_specialist_lists_the_sets_and_fails_before_making_a_directory(tmp_path):
    proc = train_py(tmp_path, "specialist=eyez")
    assert proc.returncode == 1
    assert (
        "error: specialist=eyez: not a specialist of the keypoint set kaggle15 (conf/keypoints/kaggle15.yaml); "
        "it has all, eyes, nose, mouth, mouth_bottom, eye_corners, eyebrows"
    ) in proc.stderr.splitlines()
    assert "Traceback" not in proc.stderr and not (tmp_path / "outputs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
        (["data=kaggle"], "error: Missing mandatory value: data.dir"),
        (
            ["data=kaggle", "data.dir=DIR"],
            "error: DIR/training.csv: line 2: Image has 3 pixels, expected 9216 (96x96: data.size)",
        ),
        (
            [
                "data=kaggle",
                "data.dir=DIR",
                "augment=[flip]",
                "+mirror.offsets.nose_x=1.0",
            ],  # rejected as the run is built
            "error: mirror.offsets: 'nose_x' is not one of the keypoint set kaggle15's columns (conf/mirror)",
        ),
    ],
)
def test_user_mistake_is_one_line_without_traceback(tmp_path, args, message):
    (tmp_path / "training.csv").write_text(csv_text([full(Image="1 2 3")] * 4))
    args = [a.replace("DIR", str(tmp_path)) for a in args]
    proc = train_py(tmp_path, *args)
    message = message.replace("DIR", str(tmp_path))
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert f"\n{message}\n" in proc.stderr and "Traceback" not in proc.stderr
    full_error = train_py(tmp_path, *args, env={"HYDRA_FULL_ERROR": "1"})
    assert full_error.returncode == 1 and "Traceback (most recent call last)" in full_error.stderr

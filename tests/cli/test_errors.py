"""Bad input: each mistake a user can make with a data file or the command line is named in one line,
before anything is written and before torch is imported; `--help` is short and kfkd's own."""

import gzip
import json
import os
import shutil
import subprocess
import sys

import pytest
from conftest import KAGGLE15, KW, ROOT

from keypoints.core.errors import DataError
from keypoints.data.kaggle import KeypointsDataModule, read_csv, select

COLUMNS = KAGGLE15.columns

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


def train_py(cwd, *args, env=None, command=("train.py",)):
    """`python train.py ARGS` in `cwd` (or `kfkd train ARGS`: command=("-m", "keypoints", "train")), with
    `-X importtime`, which lists on stderr each module the command imported."""
    script = [str(ROOT / command[0]), *command[1:]] if command[0] == "train.py" else list(command)
    return subprocess.run(
        [sys.executable, "-X", "importtime", *script, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=300,
    )


def said(proc) -> tuple[list[str], set[str]]:
    """What a command printed on stderr, and the modules it imported (-X importtime's lines)."""
    lines = proc.stderr.splitlines()
    modules = {line.rsplit("|", 1)[1].strip() for line in lines if line.startswith("import time:")}
    return [line for line in lines if not line.startswith("import time:")], modules


def a_copy(tmp_path, coco, change):
    """A copy of the COCO folder `coco`, its annotations.json changed in place by `change`."""
    folder = shutil.copytree(coco, tmp_path / "faces")
    data = json.loads((folder / "annotations.json").read_text())
    change(data)
    (folder / "annotations.json").write_text(json.dumps(data))
    return folder


def bad_set(tmp_path) -> list[str]:
    """The overrides that pick a keypoint set kept outside the checkout, tmp_path/mine/keypoints/typo.yaml,
    whose mirror pair names a keypoint it lacks."""
    (tmp_path / "mine" / "keypoints").mkdir(parents=True)
    (tmp_path / "mine" / "keypoints" / "typo.yaml").write_text(
        "name: typo\nnames: [left_eye_center, right_eye_center]\n"
        "mirror_pairs: [[left_eye_center, right_eye]]\nnme: [left_eye_center, right_eye_center]\n"
    )
    return [f"hydra.searchpath=[file://{tmp_path / 'mine'}]", "keypoints=typo"]


# A mistake: (its arguments, of tmp_path, tiny_data and tiny_coco; the line that says it). The command runs in
# tmp_path/work; TMP, TINY and COCO in the lines stand for those folders.
MISTAKES = {
    "no data folder": (
        lambda tmp, tiny, coco: ["data=kaggle", "data.dir=nowhere"],
        "error: nowhere/training.csv: file not found",
    ),
    "no data.dir": (
        lambda tmp, tiny, coco: ["data=kaggle"],
        "error: data.dir: not set; give it on the command line (data.dir=...)",
    ),
    "no groups file": (
        lambda tmp, tiny, coco: ["data=kaggle", f"data.dir={tiny}", "data.groups=people.csv"],
        "error: people.csv: file not found (data.groups); expected a CSV of row,<group>",
    ),
    "coco: no annotations.json": (
        lambda tmp, tiny, coco: ["data=coco", f"data.dir={tmp}"],
        "error: TMP/annotations.json: file not found; give the folder that holds it as data.dir=DIR",
    ),
    "coco: keypoint count": (
        lambda tmp, tiny, coco: [
            "data=coco",
            f"data.dir={a_copy(tmp, coco, lambda d: d['annotations'][7]['keypoints'].pop())}",
        ],
        "error: TMP/faces/annotations.json: annotations[7].keypoints: 44 values; expected x, y, v for each of the 15",
    ),
    "coco: image missing": (
        lambda tmp, tiny, coco: [
            "data=coco",
            f"data.dir={a_copy(tmp, coco, lambda d: d['images'][5].update(file_name='gone.png'))}",
        ],
        "error: TMP/faces/annotations.json: images[5].file_name: TMP/faces/gone.png: no such file",
    ),
    "coco: a keypoint of the set": (
        lambda tmp, tiny, coco: [
            "data=coco",
            f"data.dir={a_copy(tmp, coco, lambda d: d['categories'][0]['keypoints'].__setitem__(0, 'left_eye_centre'))}",
        ],
        "error: TMP/faces/annotations.json: category 'face' has no keypoint 'left_eye_center' of the keypoint set "
        "kaggle15 (did you mean 'left_eye_centre'?)",
    ),
    "coco: data.groups": (
        lambda tmp, tiny, coco: ["data=coco", f"data.dir={coco}", "data.groups=persn"],
        "error: COCO/annotations.json: images[0]: no field 'persn' (data.groups=persn names the image field that "
        "says whose face it is); did you mean data.groups=person?",
    ),
    "a set on the search path": (
        lambda tmp, tiny, coco: bad_set(tmp),
        "error: TMP/mine/keypoints/typo.yaml: mirror_pairs[0][1]: 'right_eye' is not one of the set's keypoints "
        "(did you mean 'right_eye_center'?)",
    ),
    "specialist": (
        lambda tmp, tiny, coco: ["specialist=eyez"],
        f"error: specialist=eyez: not a specialist of the keypoint set kaggle15 ({ROOT}/conf/keypoints/kaggle15.yaml); "
        "it has all, eyes, nose, mouth, mouth_bottom, eye_corners, eyebrows",
    ),
    "a setting": (
        lambda tmp, tiny, coco: ["trainer.max_epoch=3"],
        "error: trainer.max_epoch: no such setting; did you mean trainer.max_epochs?",
    ),
    "an option": (lambda tmp, tiny, coco: ["net=cnnn"], "error: net=cnnn: no such option; did you mean net=cnn?"),
    "an option of a list": (
        lambda tmp, tiny, coco: ["augment=[flip,afine]"],
        "error: augment=afine: no such option; did you mean augment=affine?",
    ),
    "an override": (
        lambda tmp, tiny, coco: ["data.dir"],
        "error: data.dir: not an override (missing EQUAL at '<EOF>'); write KEY=VALUE, as in kfkd train --help",
    ),
    "resume": (
        lambda tmp, tiny, coco: [f"resume={tiny}"],
        "error: TINY: not a run directory (no config.yaml); give resume= a run directory under outputs/",
    ),
}


@pytest.mark.parametrize("name", MISTAKES)
def test_a_mistake_is_one_line_before_anything_is_written_or_torch_imported(name, tmp_path, tiny_data, tiny_coco):
    arguments, message = MISTAKES[name]
    work = tmp_path / "work"
    work.mkdir()
    proc = train_py(work, *arguments(tmp_path, tiny_data, tiny_coco))
    lines, modules = said(proc)
    message = message.replace("TMP", str(tmp_path)).replace("COCO", str(tiny_coco)).replace("TINY", str(tiny_data))
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith(message), lines
    assert not {"torch", "pytorch_lightning"} & modules
    assert not list(tmp_path.rglob("outputs")) and proc.stdout == ""


def test_kfkd_train_says_a_mistake_as_train_py_does(tmp_path):
    proc = train_py(tmp_path, "net=cnnn", command=("-m", "keypoints", "train"))
    assert proc.returncode == 1 and said(proc)[0] == ["error: net=cnnn: no such option; did you mean net=cnn?"]


def test_hydra_full_error_shows_the_traceback(tmp_path):
    for mistake in (["data=kaggle", "data.dir=nowhere"], ["trainer.max_epoch=3"]):
        proc = train_py(tmp_path, *mistake, env={"HYDRA_FULL_ERROR": "1"})
        assert proc.returncode == 1 and "Traceback (most recent call last)" in proc.stderr, proc.stderr[-2000:]
    assert not (tmp_path / "outputs").exists()


@pytest.mark.parametrize("command", [("train.py",), ("-m", "keypoints", "train")])
def test_help_is_short_lists_the_groups_and_sets_on_the_search_path_and_imports_no_torch(tmp_path, command):
    proc = train_py(tmp_path, "--help", *bad_set(tmp_path)[:1], command=command)
    lines, modules = said(proc)
    assert proc.returncode == 0 and lines == [], proc.stderr[-2000:]
    text = proc.stdout.splitlines()
    assert len(text) < 60 and text[0].startswith("usage: python train.py")
    assert "  keypoints       kaggle15, ibug68, typo" in text and any(line.startswith("  net ") for line in text)
    for override in ("seed=", "trainer.max_epochs=", "data.dir=", "data.groups=", "specialist=", "resume=", "-m "):
        assert any(line.lstrip().startswith(override) or f" {override}" in line for line in text), override
    assert "hydra.searchpath=[file://DIR] keypoints=NAME" in proc.stdout and "--hydra-help" in proc.stdout
    assert not {"torch", "pytorch_lightning"} & modules and not (tmp_path / "outputs").exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "args, message",
    [
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
def test_a_mistake_found_in_training_is_one_line_and_leaves_no_run_behind(tmp_path, args, message):
    (tmp_path / "training.csv").write_text(csv_text([full(Image="1 2 3")] * 4))
    args = [a.replace("DIR", str(tmp_path)) for a in args]
    proc = train_py(tmp_path, *args)
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert said(proc)[0] == [message.replace("DIR", str(tmp_path))]
    assert not (tmp_path / "outputs").exists()
    full_error = train_py(tmp_path, *args, env={"HYDRA_FULL_ERROR": "1"})
    assert full_error.returncode == 1 and "Traceback (most recent call last)" in full_error.stderr
    (tmp_path / "outputs" / "runs" / "mine").mkdir(parents=True)  # a folder the user had is kept
    proc = train_py(tmp_path, *args, "hydra.run.dir=outputs/runs/mine")
    assert proc.returncode == 1 and (tmp_path / "outputs" / "runs" / "mine").is_dir()

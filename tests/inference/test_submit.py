"""The Kaggle submission and the evaluation: assembling specialists, checks, one-line errors, sweeps end to end."""

import os
import shutil
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import KAGGLE15, ROOT, TINY, make_run

from keypoints.cli import main as kfkd
from keypoints.core.errors import DataError
from keypoints.data.kaggle import find_file, read_csv, to_tensors
from keypoints.inference import runs as trained
from keypoints.inference.evaluate import evaluate
from keypoints.inference.submit import predict_columns, submission

COLUMNS = KAGGLE15.columns


def test_submission_follows_the_lookup_table_and_clips_to_the_image(sweep, tiny_data, tmp_path):
    lookup = pd.read_csv(tiny_data / "IdLookupTable.csv")
    result = submission(*trained.load([sweep]), tiny_data)
    assert list(result.columns) == ["RowId", "Location"] and (result["RowId"] == lookup["RowId"]).all()
    assert result["Location"].between(0, 96).all() and result["Location"].nunique() > 10
    far = make_run(tmp_path / "far", tiny_data, bias=100.0)  # 100 * 48 + 48 px, far off the image
    assert (submission(*trained.load([far]), tiny_data)["Location"] == 96).all()


def test_submission_needs_every_asked_column(tiny_data, tmp_path):
    eyes = make_run(tmp_path / "eyes", tiny_data, "eyes")
    with pytest.raises(DataError, match=r"IdLookupTable\.csv: line \d+: no run predicts"):
        submission(*trained.load([eyes]), tiny_data)


def edited(tiny_data, tmp_path, name, edit):
    """A copy of the tiny dataset with one file's lines edited."""
    data = tmp_path / "edited"
    shutil.copytree(tiny_data, data)
    lines = (data / name).read_text().splitlines(keepends=True)
    (data / name).write_text("".join(edit(lines)))
    return data


@pytest.mark.parametrize(
    "name, edit, message",
    [
        ("test.csv", lambda l: [l[0], l[1], l[1]] + l[3:], r"test\.csv: line 3: ImageId 1 repeats line 2"),
        ("test.csv", lambda l: l[:2] + ["," + l[2].split(",", 1)[1]] + l[3:], r"test\.csv: line 3: ImageId is empty"),
        (
            "IdLookupTable.csv",
            lambda l: l[:3] + ["3,999,nose_tip_x,\n"] + l[4:],
            r"IdLookupTable\.csv: line 4: ImageId 999 is not in test\.csv \(ImageIds 1\.\.12\)",
        ),
        (
            "IdLookupTable.csv",
            lambda l: l[:3] + ["3,1,nose_x,\n"] + l[4:],
            r"IdLookupTable\.csv: line 4: FeatureName 'nose_x' is not a keypoint column; did you mean 'nose_tip_x'\?",
        ),
    ],
)
def test_bad_test_files_stop_with_one_line(sweep, tiny_data, tmp_path, name, edit, message):
    data = edited(tiny_data, tmp_path, name, edit)
    with pytest.raises(DataError, match=message):
        submission(*trained.load([sweep]), data)


def test_the_command_exits_with_one_line_on_bad_input(tmp_path, capsys):
    with pytest.raises(SystemExit, match=r"^error: .*nowhere: no checkpoint, run directory") as exit_:
        kfkd(["submit", str(tmp_path / "nowhere")])
    assert "\n" not in str(exit_.value)


def labelled_csv(path, tiny_data, keypoints):
    """tiny test.csv's images labelled with the given (N, 30) keypoints in pixels."""
    test = pd.read_csv(tiny_data / "test.csv")
    frame = pd.DataFrame(keypoints, columns=list(COLUMNS))
    frame["Image"] = test["Image"]
    frame.to_csv(path, index=False)
    return path


def test_evaluate_reports_rmse_in_pixels_per_keypoint_and_overall(sweep, tiny_data, tmp_path):
    model, runs = trained.load([sweep])
    _, images = read_csv(find_file(tiny_data, "test.csv"), None, 96)
    truth = predict_columns(model, runs, to_tensors(images)) + 3.0  # every label 3 px off the prediction
    truth[::2, 4:] = np.nan  # half the faces labelled only on the eye centres
    table = evaluate(model, runs, labelled_csv(tmp_path / "labelled.csv", tiny_data, truth))
    assert np.allclose(table["rmse_px"], 3.0, atol=1e-3)
    assert table.loc["left_eye_center", "values"] == 2 * 12 and table.loc["nose_tip", "values"] == 2 * 6
    assert table.loc["overall", "values"] == np.isfinite(truth).sum()


def test_evaluate_on_the_held_out_rows_by_default(sweep, capsys):
    kfkd(["evaluate", str(sweep)])
    out = capsys.readouterr().out
    assert "overall" in out and "mouth_center_bottom_lip" in out


def submit(cwd, *args):
    """`kfkd submit ARGS` in `cwd`, a fresh process."""
    proc = subprocess.run(
        [sys.executable, "-m", "keypoints", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def test_evaluate_and_predict_a_moved_sweep_from_another_working_directory(sweep, tiny_data, tmp_path):
    model, runs = trained.load([sweep])
    scores = evaluate(model, runs)
    table = scores.to_string(float_format="%.3f")
    nme = (
        f"NME {scores.loc['overall', 'nme_pct']:.3f} % of the distance between left_eye_center and right_eye_center "
        f"over {scores.attrs['faces']} faces; failure rate (NME over 10 %): {scores.attrs['failure_pct']:.2f} %"
    )
    expected = submission(model, runs, tiny_data)
    moved, elsewhere = tmp_path / "moved" / "sweep", tmp_path / "elsewhere"
    moved.parent.mkdir()
    elsewhere.mkdir()
    shutil.move(sweep, moved)  # the runs' saved paths now lead nowhere
    assert submit(elsewhere, "evaluate", moved) == f"{table}\n{nme}\n"
    submit(elsewhere, "submit", moved, "--out", "submission.csv")
    pd.testing.assert_frame_equal(pd.read_csv(elsewhere / "submission.csv"), expected, check_exact=False, atol=1e-4)


def test_data_the_runs_no_longer_find_is_named_with_the_flag_to_give(tiny_data, tmp_path):
    run = make_run(tmp_path / "run", tmp_path / "gone")
    for command in ("submit", "evaluate"):
        with pytest.raises(
            SystemExit,
            match=rf"^error: {tmp_path}/gone/(test|training).csv: file not found .*; "
            r"give the folder that holds it as --data DIR$",
        ):
            kfkd([command, str(run), "--out", str(tmp_path / "s.csv")] if command == "submit" else [command, str(run)])
    kfkd(["evaluate", str(run), "--data", str(tiny_data)])
    kfkd(["submit", str(run), "--data", str(tiny_data), "--out", str(tmp_path / "s.csv")])
    assert len(pd.read_csv(tmp_path / "s.csv")) == len(pd.read_csv(tiny_data / "IdLookupTable.csv"))


def run_pipeline(cwd, data_dir, *overrides):
    command = [
        sys.executable,
        "-m",
        "keypoints",
        "specialists",
        "experiment=specialists",
        "data=kaggle",
        f"data.dir={data_dir}",
        "epoch_budget.scratch=null",
        "epoch_budget.pretrained=null",
        "trainer.max_epochs=1",
        "+trainer.limit_train_batches=2",
        "+trainer.limit_val_batches=1",
        f"hydra.sweep.dir={cwd}/sweep",
        *TINY,
        *overrides,
    ]
    proc = subprocess.run(
        command, cwd=cwd, capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT)}
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return cwd / "sweep", proc


@pytest.mark.slow
def test_tiny_sweep_trains_six_specialists_from_one_base_net_and_submits(tiny_data, tmp_path):
    sweep, proc = run_pipeline(tmp_path, tiny_data)
    runs = trained.find([sweep])
    assert sorted(r.cfg.specialist for r in runs) == sorted(
        ["all", "eyes", "nose", "mouth", "mouth_bottom", "eye_corners", "eyebrows"]
    )
    assert all(r.cfg.init_from == str(sweep / "all") for r in runs if r.cfg.specialist != "all")
    assert (proc.stdout + proc.stderr).count("init_from ") == 6  # each specialist logs what it copied
    assert (sweep / "curves.png").stat().st_size > 10_000
    result = pd.read_csv(sweep / "submission.csv")
    lookup = pd.read_csv(tiny_data / "IdLookupTable.csv")
    assert (result["RowId"] == lookup["RowId"]).all() and result["Location"].between(0, 96).all()


@pytest.mark.slow
def test_realfaces_sweep_submits_one_row_per_lookup_row(realfaces, realfaces_cache, tmp_path):
    sweep, _ = run_pipeline(tmp_path, realfaces, f"paths.cache_dir={realfaces_cache}")
    result = pd.read_csv(sweep / "submission.csv")
    assert len(result) == 10130 == len(pd.read_csv(realfaces / "IdLookupTable.csv"))
    assert result["Location"].notna().all() and result["Location"].between(0, 96).all()

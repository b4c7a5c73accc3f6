"""The keypoint set: specialists as named subsets with flip_indices derived from the mirror pairs,
one-line errors for a bad set, a user's own set, and runs trained before keypoint sets."""

import json
import re
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import KAGGLE15, ROOT, TINY, compose, make_run, run_train
from hydra.types import RunMode
from omegaconf import OmegaConf

from keypoints.core import keypointset
from keypoints.core.errors import DataError, RunError
from keypoints.data.augment import mirror_targets
from keypoints.inference import export
from keypoints.inference import predictor as inference
from keypoints.inference import runs as trained
from keypoints.inference.evaluate import evaluate
from keypoints.inference.submit import submission
from keypoints.photos import detect
from keypoints.training import plots
from keypoints.training.faults import resume_point
from keypoints.training.fit import build, fit

SETS = sorted(p.stem for p in (ROOT / "conf" / "keypoints").glob("*.yaml"))
SUBSETS = [(s, name) for s in SETS for name in ["all", *keypointset.load(s).specialists]]

# conf/specialist/*.yaml as they were written by hand before keypoint sets: kaggle15 must give the same.
BY_HAND = {
    "all": (
        [
            f"{k}_{a}"
            for k in (
                "left_eye_center",
                "right_eye_center",
                "left_eye_inner_corner",
                "left_eye_outer_corner",
                "right_eye_inner_corner",
                "right_eye_outer_corner",
                "left_eyebrow_inner_end",
                "left_eyebrow_outer_end",
                "right_eyebrow_inner_end",
                "right_eyebrow_outer_end",
                "nose_tip",
                "mouth_left_corner",
                "mouth_right_corner",
                "mouth_center_top_lip",
                "mouth_center_bottom_lip",
            )
            for a in "xy"
        ],
        [[0, 2], [1, 3], [4, 8], [5, 9], [6, 10], [7, 11], [12, 16], [13, 17], [14, 18], [15, 19], [22, 24], [23, 25]],
    ),
    "eyes": (["left_eye_center_x", "left_eye_center_y", "right_eye_center_x", "right_eye_center_y"], [[0, 2], [1, 3]]),
    "nose": (["nose_tip_x", "nose_tip_y"], []),
    "mouth": (
        [
            "mouth_left_corner_x",
            "mouth_left_corner_y",
            "mouth_right_corner_x",
            "mouth_right_corner_y",
            "mouth_center_top_lip_x",
            "mouth_center_top_lip_y",
        ],
        [[0, 2], [1, 3]],
    ),
    "mouth_bottom": (["mouth_center_bottom_lip_x", "mouth_center_bottom_lip_y"], []),
    "eye_corners": (
        [
            "left_eye_inner_corner_x",
            "left_eye_inner_corner_y",
            "right_eye_inner_corner_x",
            "right_eye_inner_corner_y",
            "left_eye_outer_corner_x",
            "left_eye_outer_corner_y",
            "right_eye_outer_corner_x",
            "right_eye_outer_corner_y",
        ],
        [[0, 2], [1, 3], [4, 6], [5, 7]],
    ),
    "eyebrows": (
        [
            "left_eyebrow_inner_end_x",
            "left_eyebrow_inner_end_y",
            "right_eyebrow_inner_end_x",
            "right_eyebrow_inner_end_y",
            "left_eyebrow_outer_end_x",
            "left_eyebrow_outer_end_y",
            "right_eyebrow_outer_end_x",
            "right_eyebrow_outer_end_y",
        ],
        [[0, 2], [1, 3], [4, 6], [5, 7]],
    ),
}


# --- the sets in conf/keypoints ------------------------------------------------------------------


@pytest.mark.parametrize("name", BY_HAND)
def test_kaggle15s_specialists_are_the_tutorials_with_the_flip_indices_once_written_by_hand(name):
    spec = KAGGLE15.specialist(name)
    assert (spec.columns, spec.flip_indices, spec.overrides) == (*BY_HAND[name], {})
    assert spec == keypointset.specialist(compose(f"specialist={name}"))  # as a run's config selects it
    flip = compose(f"specialist={name}", "augment=flip").augment.flip  # what the flip is given
    assert (list(flip.columns), [list(p) for p in flip.flip_indices]) == BY_HAND[name]


@pytest.mark.parametrize("keypoint_set, name", SUBSETS)
def test_mirroring_twice_gives_back_the_input(keypoint_set, name):
    pairs = [tuple(p) for p in keypointset.load(keypoint_set).specialist(name).flip_indices]
    y = torch.rand(5, len(keypointset.load(keypoint_set).specialist(name).columns)) * 2 - 1
    once = mirror_targets(y, pairs)
    assert torch.equal(mirror_targets(once, pairs), y) and not torch.equal(once, y)


@pytest.mark.parametrize("keypoint_set, name", SUBSETS)
def test_flip_indices_join_the_mirror_pairs_x_with_x_and_y_with_y(keypoint_set, name):
    kset = keypointset.load(keypoint_set)
    spec = kset.specialist(name)
    twins = {frozenset(p) for p in kset.mirror_pairs}
    flat = [i for pair in spec.flip_indices for i in pair]
    assert len(flat) == len(set(flat))  # each column swaps with one other at most
    for a, b in spec.flip_indices:
        assert frozenset((spec.keypoints[a // 2], spec.keypoints[b // 2])) in twins and a % 2 == b % 2
    # every mirror pair of the subset is swapped, in both axes
    assert len(spec.flip_indices) == 2 * sum(pair <= set(spec.keypoints) for pair in twins)


def test_kaggle15s_mirror_pairs_are_its_left_and_right_twins():
    swap = lambda k: re.sub("left|right", lambda m: {"left": "right", "right": "left"}[m[0]], k)
    assert sorted(map(sorted, KAGGLE15.mirror_pairs)) == sorted(
        sorted((k, swap(k))) for k in KAGGLE15.names if "left" in k and swap(k) in KAGGLE15.names
    )
    assert KAGGLE15.nme == ["left_eye_center", "right_eye_center"]
    assert all(set(segment) <= set(KAGGLE15.names) for segment in KAGGLE15.skeleton)


IBUG68 = keypointset.load("ibug68")
# ../shared/data/faces68/README.md's 0-based pairs, as its reader would write them out.
README_PAIRS = [
    (0, 16),
    (1, 15),
    (2, 14),
    (3, 13),
    (4, 12),
    (5, 11),
    (6, 10),
    (7, 9),
    (17, 26),
    (18, 25),
    (19, 24),
    (20, 23),
    (21, 22),
    (31, 35),
    (32, 34),
    (36, 45),
    (37, 44),
    (38, 43),
    (39, 42),
    (40, 47),
    (41, 46),
    (48, 54),
    (49, 53),
    (50, 52),
    (55, 59),
    (56, 58),
    (60, 64),
    (61, 63),
    (65, 67),
]
README_NAMES = (
    [f"jaw_{i}" for i in range(17)]
    + [f"{s}_eyebrow_{i}" for s in ("right", "left") for i in range(5)]
    + [f"nose_bridge_{i}" for i in range(4)]
    + [f"nose_base_{i}" for i in range(5)]
    + [f"{s}_eye_{i}" for s in ("right", "left") for i in range(6)]
    + [f"outer_lip_{i}" for i in range(12)]
    + [f"inner_lip_{i}" for i in range(8)]
)


def test_ibug68_is_the_faces68_readmes_points_pairs_and_normalising_pair():
    assert IBUG68.names == README_NAMES
    assert sorted(tuple(sorted(IBUG68.names.index(k) for k in p)) for p in IBUG68.mirror_pairs) == README_PAIRS
    assert [IBUG68.names.index(k) for k in IBUG68.nme] == [36, 45]  # 300-W's outer eye corners
    groups = {name: [IBUG68.names.index(k) for k in s.keypoints] for name, s in IBUG68.specialists.items()}
    assert groups == {
        "jaw": list(range(17)),
        "brows": list(range(17, 27)),
        "nose": list(range(27, 36)),
        "eyes": list(range(36, 48)),
        "mouth": list(range(48, 68)),
    }
    assert len(IBUG68.skeleton) == 63 and all(set(s) <= set(IBUG68.names) for s in IBUG68.skeleton)


def test_ibug68s_flip_mirrors_a_symmetric_face_onto_itself():
    """Mirrored with the set's pairs, a mirror-symmetric face (conftest's drawing) is itself again: the
    pairs join the points that are mirror images."""
    from conftest import face68

    face = face68(np.random.default_rng(0), centre=(0, 0)) / 48
    face -= np.random.default_rng(0).normal(0, 0.5, face.shape) / 48  # face68's noise taken out
    y = torch.tensor(face.reshape(1, -1))
    np.testing.assert_allclose(mirror_targets(y, [tuple(p) for p in IBUG68.flip_indices(IBUG68.names)]), y, atol=1e-9)
    wrong = [[0, 2], [1, 3], *IBUG68.flip_indices(IBUG68.names)[2:]]  # jaw_0 swapped with jaw_1, not jaw_16
    assert not torch.allclose(mirror_targets(y, [tuple(p) for p in wrong]), y, atol=1e-3)


def test_ibug68s_names_are_faces68s_category(tmp_path):
    annotations = ROOT.parent / "shared" / "data" / "faces68" / "annotations.json"
    if not annotations.is_file():
        pytest.skip(f"{annotations} is absent")
    category = json.loads(annotations.read_text())["categories"][0]
    assert category["keypoints"] == IBUG68.names
    assert sorted(map(sorted, IBUG68.skeleton)) == sorted(
        sorted(category["keypoints"][i - 1] for i in s) for s in category["skeleton"]
    )


# --- bad sets ------------------------------------------------------------------------------------

GOOD = {
    "name": "mine",
    "names": ["left_ear", "right_ear", "nose"],
    "mirror_pairs": [["left_ear", "right_ear"]],
    "nme": ["left_ear", "right_ear"],
    "skeleton": [["left_ear", "nose"]],
    "specialists": {"ears": {"keypoints": ["left_ear", "right_ear"]}},
}


@pytest.mark.parametrize(
    "change, message",
    [
        (
            {"mirror_pairs": [["left_ear", "right_ear"], ["nose", "left_eer"]]},
            "mirror_pairs[1][1]: 'left_eer' is not one of the set's keypoints (did you mean 'left_ear'?)",
        ),
        ({"names": ["left_ear", "right_ear", "left_ear"]}, "names[2]: 'left_ear' is named twice"),
        (
            {"mirror_pairs": [["left_ear", "right_ear"], ["nose", "left_ear"]]},
            "mirror_pairs[1]: 'left_ear' is already paired with 'right_ear'",
        ),
        ({"mirror_pairs": [["nose", "nose"]]}, "mirror_pairs[0]: pairs 'nose' with itself"),
        ({"nme": ["left_ear"]}, "nme: expected two keypoint names, got ['left_ear']"),
        ({"skeleton": [["nose", "chin"]]}, "skeleton[0][1]: 'chin' is not one of the set's keypoints"),
        (
            {"specialists": {"ears": {"keypoints": ["left_ear"]}}},
            "specialists.ears.keypoints: has 'left_ear' but not its mirror twin 'right_ear'",
        ),
        (
            {"specialists": {"ears": {"keypoints": ["left_ear", "right_ear", "mouth"]}}},
            "specialists.ears.keypoints[2]: 'mouth' is not one of the set's keypoints",
        ),
        ({"specialists": {"all": {"keypoints": ["nose"]}}}, "specialists.all: 'all' is the whole set"),
        (
            {"specialists": {"ears": {"keypoint": ["nose"]}}},
            "specialists.ears: expected {keypoints: [...], overrides: {...}}",
        ),
        ({"mirror_pair": []}, "unknown field 'mirror_pair'"),
        ({"names": []}, "names: expected a list of keypoint names, got []"),
        ({"names": ["left ear", "right_ear", "nose"]}, "names[0]: 'left ear' is not a keypoint name"),
    ],
)
def test_a_bad_set_is_one_line_naming_the_file_and_the_field(tmp_path, change, message):
    path = tmp_path / "mine.yaml"
    OmegaConf.save({**GOOD, **change}, path)
    with pytest.raises(DataError) as error:
        keypointset.load(path)
    assert str(error.value).startswith(f"{path}: {message}") and "\n" not in str(error.value)


def test_an_unknown_set_and_an_unknown_specialist_are_named(tmp_path):
    with pytest.raises(DataError, match=r"no_set.yaml: no such keypoint set; conf/keypoints has .*kaggle15"):
        keypointset.load("no_set")
    with pytest.raises(
        DataError,
        match=r"^specialist=ears: not a specialist of the keypoint set kaggle15 "
        r"\(.*\); it has all, eyes, nose, mouth, mouth_bottom, eye_corners, eyebrows$",
    ):
        keypointset.specialist(compose("specialist=ears"))


def test_mirror_offsets_for_columns_the_set_lacks_are_refused(tmp_path):
    cfg = compose("augment=[flip]", "+mirror.offsets.nose_x=1.0", f"paths.output_dir={tmp_path}", "data.dir=unused")
    with pytest.raises(
        DataError,
        match=r"^mirror.offsets: 'nose_x' is not one of the keypoint set kaggle15's "
        r"columns \(conf/mirror\)$",
    ):
        build(cfg)


# --- a user's own set: one YAML file -------------------------------------------------------------

MINE = {
    "name": "eyes_nose",
    "names": ["right_eye_center", "left_eye_center", "nose_tip"],
    "mirror_pairs": [["left_eye_center", "right_eye_center"]],
    "nme": ["left_eye_center", "right_eye_center"],
    "specialists": {"eyes": {"keypoints": ["left_eye_center", "right_eye_center"], "overrides": {"seed": 3}}},
}


@pytest.mark.slow
def test_a_users_own_set_is_one_yaml_file_that_trains_evaluates_and_exports(tiny_data, tmp_path):
    (tmp_path / "conf" / "keypoints").mkdir(parents=True)
    OmegaConf.save(MINE, tmp_path / "conf" / "keypoints" / "eyes_nose.yaml")
    common = (
        f"hydra.searchpath=[file://{tmp_path / 'conf'}]",
        "keypoints=eyes_nose",
        "data=kaggle",
        f"data.dir={tiny_data}",
        "trainer.max_epochs=1",
        "augment=flip",
        *TINY,
    )
    run_train(tmp_path, *common, "hydra.run.dir=all")
    run_train(tmp_path, *common, "specialist=eyes", "hydra.run.dir=eyes", f"init_from={tmp_path / 'all'}")
    eyes = trained.find([tmp_path / "eyes"])[0]
    assert eyes.cfg.seed == 3 and eyes.cfg.augment.flip.flip_indices == [[0, 2], [1, 3]]  # its overrides, its pairs
    model, found = trained.load([tmp_path / "all", tmp_path / "eyes"], flip=True)
    assert model.columns == [
        "right_eye_center_x",
        "right_eye_center_y",
        "left_eye_center_x",
        "left_eye_center_y",
        "nose_tip_x",
        "nose_tip_y",
    ]  # the set's order, not Kaggle's
    table = evaluate(model, found)
    assert list(table.index) == [*MINE["names"], "overall"] and table["rmse_px"].notna().all()
    onnx_model = inference.load(export.export(tmp_path / "all", tmp_path / "mine.onnx"), False, 8)
    assert (onnx_model.keypoints, onnx_model.size) == (MINE["names"], 96)
    # The same set, broken: one line, before any run directory is made.
    OmegaConf.save(
        {**MINE, "mirror_pairs": [["left_eye_center", "right_eye"]]}, tmp_path / "conf" / "keypoints" / "eyes_nose.yaml"
    )
    proc = run_train(tmp_path, *common, "hydra.run.dir=broken", check=False)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and not (tmp_path / "broken").exists()
    assert (
        "error: conf/keypoints/eyes_nose.yaml: mirror_pairs[0][1]: 'right_eye' is not one of the set's keypoints "
        "(did you mean 'right_eye_center'?)"
    ) in proc.stderr.splitlines()


def test_runs_of_different_sets_are_not_assembled(sweep):
    config = sweep / "0_eyes" / "config.yaml"
    cfg = OmegaConf.load(config)
    cfg.keypoints.names = [*cfg.keypoints.names, "chin"]
    OmegaConf.save(cfg, config)
    with pytest.raises(
        DataError,
        match="keypoint set kaggle15 of 96 px faces, but .*runs assembled into one model "
        "need the same set and data.size",
    ):
        trained.load([sweep])


# --- runs trained before keypoint sets -----------------------------------------------------------


def before_keypoint_sets(run):
    """`run`'s config.yaml rewritten as runs saved it before keypoint sets: a `specialist` node with its
    columns and hand-written flip_indices, no keypoint set, no data.size or net size (96 px)."""
    config = OmegaConf.to_container(OmegaConf.load(run / "config.yaml"))
    name = config["specialist"]
    columns, flip_indices = BY_HAND[name]
    config["specialist"] = {"name": name, "columns": columns, "flip_indices": flip_indices, "overrides": {}}
    del config["keypoints"], config["data"]["size"]
    (config["net"].get("backbone") or config["net"]).pop("size")
    OmegaConf.save(config, run / "config.yaml")
    assert not re.search(r"^\s*(size|keypoints):", (run / "config.yaml").read_text(), re.M)
    return run


@pytest.fixture
def old_sweep(tiny_data, tmp_path):
    """Two sweeps of the same nets: `new` as runs are saved today, `old` as they were before keypoint sets."""
    for kind in ("new", "old"):
        for name, seed in (("all", 0), ("eyes", 1)):
            run = make_run(tmp_path / kind / name, tiny_data, name, seed=seed)
            (run / "metrics.json").write_text(json.dumps({"history": [{"train_loss": 0.01, "valid_rmse_px": 3.0}]}))
            if kind == "old":
                before_keypoint_sets(run)
    return tmp_path / "old", tmp_path / "new"


def test_an_old_sweep_submits_evaluates_exports_and_plots_as_a_new_one(old_sweep, tiny_data, tmp_path):
    old, new = old_sweep
    (old_model, old_runs), (new_model, new_runs) = (trained.load([s], flip=True) for s in (old, new))
    assert [r.cfg.specialist for r in old_runs] == ["all", "eyes"] and old_runs[1].cfg.keypoints.name == "kaggle15"
    assert old_model.columns == new_model.columns == KAGGLE15.columns
    pd.testing.assert_frame_equal(
        submission(old_model, old_runs, tiny_data), submission(new_model, new_runs, tiny_data)
    )
    pd.testing.assert_frame_equal(evaluate(old_model, old_runs), evaluate(new_model, new_runs))
    faces = np.random.default_rng(0).random((3, 1, 96, 96), np.float32)
    exported = inference.load(export.export(old, tmp_path / "old.onnx", flip=True), True, 8)
    np.testing.assert_allclose(exported(faces), inference.load(new, True, 8)(faces), atol=1e-3)
    assert plots.learning_curves(old).is_file()


def test_detect_runs_an_old_run(old_sweep):
    old, new = old_sweep
    grey = np.random.default_rng(0).integers(0, 256, (200, 240), np.uint8)
    found = []
    for sweep in (old, new):
        detector = detect.Detector(sweep / "all")
        detector.finder = lambda g: np.array([[60.0, 50.0, 160.0, 150.0]])  # a face there
        found.append(detector.find(grey)[0].faces[0].keypoints)
    assert found[0].shape == (15, 2) and np.isfinite(found[0]).all()
    np.testing.assert_allclose(found[0], found[1])


@pytest.mark.slow
def test_an_old_run_is_a_base_for_init_from_and_resumes_as_if_never_stopped(tiny_data, tmp_path):
    settings = (
        "data=kaggle",
        f"data.dir={tiny_data}",
        "data.batch_size=16",
        "loss=masked",
        "augment=flip",
        "schedule=constant",
        "specialist=eyes",
        f"paths.cache_dir={tmp_path}/cache",
        "trainer.enable_progress_bar=false",
        *TINY,
    )
    whole = fit(compose(*settings, "trainer.max_epochs=3", f"paths.output_dir={tmp_path}/whole"))
    fit(compose(*settings, "trainer.max_epochs=2", f"paths.output_dir={tmp_path}/cut"))
    cut = before_keypoint_sets(tmp_path / "cut")
    (cut / "metrics.json").unlink()  # as a run stopped after its second epoch leaves it
    hydra = OmegaConf.create(
        {
            "mode": RunMode.RUN,
            "runtime": {"choices": {"net": "cnn"}},
            "overrides": {"task": [f"resume={cut}", "trainer.max_epochs=3"]},
        }
    )
    refused = OmegaConf.merge(hydra, {"overrides": {"task": [f"resume={cut}", "specialist=all"]}})
    with pytest.raises(RunError, match="keeps the run's config groups and specialist; drop specialist=all"):
        resume_point(compose(f"resume={cut}"), refused)
    saved, last = resume_point(compose(f"resume={cut}", "trainer.max_epochs=3"), hydra)
    resumed = fit(saved, resume_from=last)
    assert resumed["history"] == whole["history"] and resumed["valid_loss"] == whole["valid_loss"]
    before_keypoint_sets(tmp_path / "whole")
    child = fit(
        compose(
            *settings, "trainer.max_epochs=1", f"init_from={tmp_path / 'whole'}", f"paths.output_dir={tmp_path}/child"
        )
    )
    assert child["epochs"] == 1


def test_an_old_custom_specialist_must_be_a_kaggle15_subset(tiny_data, tmp_path):
    run = before_keypoint_sets(make_run(tmp_path / "run", tiny_data, "eyes"))
    cfg = OmegaConf.load(run / "config.yaml")
    cfg.specialist.flip_indices = []  # not what kaggle15's mirror pairs give for the eyes
    OmegaConf.save(cfg, run / "config.yaml")
    with pytest.raises(
        DataError,
        match=r"config.yaml: specialist eyes's columns and flip_indices are not those of "
        r"the kaggle15 set's keypoints",
    ):
        trained.find([run])


def test_the_set_and_the_keypoint_set_module_need_no_torch():
    blocked = "import sys\nfor m in ('torch', 'pytorch_lightning'):\n    sys.modules[m] = None\n"
    code = (
        blocked
        + "from keypoints.core import keypointset\nprint(keypointset.load('kaggle15').specialist('eyes').flip_indices)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "[[0, 2], [1, 3]]", proc.stderr

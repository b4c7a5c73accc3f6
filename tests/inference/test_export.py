"""ONNX export: onnxruntime gives torch's keypoints, for any batch size, with the columns in the metadata."""

import numpy as np
import onnx
import pytest
from conftest import KAGGLE15, TINY_HEATMAP, make_run

from keypoints.core.errors import DataError
from keypoints.inference import export
from keypoints.inference import predictor as inference
from keypoints.inference import runs as trained


@pytest.fixture(scope="module")
def sweep(tiny_data, tmp_path_factory):
    """A sweep directory holding an `all` run and an `eyes` run, exported once per flip setting."""
    root = tmp_path_factory.mktemp("exported") / "sweep"
    make_run(root / "all", tiny_data, "all", seed=0)
    make_run(root / "0_eyes", tiny_data, "eyes", seed=1)
    return root


@pytest.fixture(scope="module")
def exported(sweep):
    return {flip: export.export(sweep, flip=flip) for flip in (False, True)}


@pytest.mark.parametrize("flip", [False, True])
def test_a_sweep_exports_as_one_model_that_matches_torch(sweep, exported, flip):
    path = exported[flip]
    assert path == sweep / ("model_flip.onnx" if flip else "model.onnx")
    onnx_model, torch_model = inference.load(path, flip, 8), inference.load(sweep, flip, 8)
    assert onnx_model.columns == torch_model.columns and onnx_model.flip == flip
    for n in (1, 5):  # the batch axis is dynamic
        faces = np.random.default_rng(n).random((n, 1, 96, 96), np.float32)
        np.testing.assert_allclose(onnx_model(faces), torch_model(faces), atol=1e-3)
    meta = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    assembled, _ = trained.load([sweep])
    assert meta["kfkd_columns"].split(",") == assembled.columns and meta["kfkd_tta"] == ("flip" if flip else "none")
    assert meta["kfkd_keypoints"].split(",") == KAGGLE15.names and meta["kfkd_keypoint_set"] == "kaggle15"
    assert (onnx_model.keypoints, onnx_model.size) == (KAGGLE15.names, 96)


def test_onnxruntime_matches_torch_on_real_faces(realfaces, tmp_path):
    import pandas as pd

    run = make_run(tmp_path / "run", realfaces)
    frame = pd.read_csv(realfaces / "training.csv.gz", nrows=64)
    faces = np.stack([np.array(s.split(), np.float32) for s in frame["Image"]]).reshape(-1, 1, 96, 96) / 255
    onnx_model = inference.load(export.export(run, tmp_path / "real.onnx"), False, 64)
    torch_model = inference.load(run, False, 64)
    assert np.abs(onnx_model(faces) - torch_model(faces)).max() < 1e-3  # pixels


def test_a_heatmap_net_exports_and_matches_torch(tiny_data, tmp_path):
    run = make_run(tmp_path / "run", tiny_data, net_overrides=TINY_HEATMAP)
    onnx_model = inference.load(export.export(run, tmp_path / "heatmap.onnx", flip=True), True, 8)
    torch_model = inference.load(run, True, 8)
    faces = np.random.default_rng(0).random((3, 1, 96, 96), np.float32)
    np.testing.assert_allclose(onnx_model(faces), torch_model(faces), atol=1e-3)


def test_flip_tta_needs_a_model_exported_with_it(exported):
    with pytest.raises(DataError, match="exported without flip TTA.*--tta flip"):
        inference.load(exported[False], True, 8)


def test_export_replaces_its_own_file_but_never_another(sweep, exported, tmp_path, capsys):
    mine = tmp_path / "mine.onnx"
    mine.write_bytes(exported[False].read_bytes())  # an earlier export: replaced
    export.main([str(sweep), "--out", str(mine)])
    assert capsys.readouterr().out.strip().endswith(f"wrote {mine}")
    theirs = tmp_path / "theirs.onnx"
    theirs.write_bytes(b"someone's file")
    with pytest.raises(SystemExit, match="theirs.onnx: exists and was not written by kfkd export"):
        export.main([str(sweep), "--out", str(theirs)])
    assert theirs.read_bytes() == b"someone's file"


def test_a_file_that_is_not_an_export_is_reported(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x00" * 10)
    with pytest.raises(DataError, match="bad.onnx: not a model onnxruntime can load"):
        inference.load(bad, False, 8)
    plain = tmp_path / "plain.onnx"  # a valid model, but not one of ours
    x = onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])
    y = onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "plain", [x], [y])
    onnx.save(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 18)]), str(plain))
    with pytest.raises(DataError, match="plain.onnx: no 'kfkd_columns' metadata"):
        inference.load(plain, False, 8)

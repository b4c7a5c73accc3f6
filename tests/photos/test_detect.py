"""keypoints.photos.detect: photos of every kind in, faces and keypoints out in the photo's pixels; bad input
reported one line each while the other photos go on; no torch needed for an exported model."""

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import KAGGLE15, ROOT, TINY_HEATMAP, make_run
from omegaconf import OmegaConf
from PIL import Image

from keypoints.core import keypointset
from keypoints.core.errors import DataError
from keypoints.data import images
from keypoints.inference import export
from keypoints.photos import detect, framefit

COLUMNS = KAGGLE15.columns

PHOTOS = ROOT.parent / "shared" / "data" / "photos"
PHOTO = "Martin_Sheen_01.jpg"  # one labelled face, 282x329


@pytest.fixture
def photo() -> tuple[np.ndarray, np.ndarray]:
    """A shared photo as (H, W, 3) uint8, and its labelled keypoints (15, 2)."""
    if not (PHOTOS / PHOTO).is_file():
        pytest.skip(f"{PHOTOS} is absent")
    labels = pd.read_csv(PHOTOS / "keypoints.csv").set_index("file")
    truth = labels.loc[PHOTO, list(COLUMNS)].to_numpy(float).reshape(15, 2)
    return np.asarray(images.read(PHOTOS / PHOTO).convert("RGB")), truth


@pytest.fixture(scope="module")
def model(tiny_data, tmp_path_factory):
    """An untrained tiny net: the tests check where keypoints go, not how good they are."""
    return make_run(tmp_path_factory.mktemp("detect") / "run", tiny_data)


@pytest.fixture(scope="module")
def onnx_model(model):
    return export.export(model)


def holds(box, point) -> bool:
    return box[0] <= point[0] < box[2] and box[1] <= point[1] < box[3]


# --- reading photos -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "mode, fmt, save",
    [
        ("RGB", "JPEG", {}),
        ("RGBA", "PNG", {}),
        ("L", "BMP", {}),
        ("RGB", "TIFF", {}),
        ("RGB", "WEBP", {"lossless": True}),
        ("LA", "PNG", {}),
        ("P", "GIF", {}),
    ],
)
def test_every_format_and_mode_reads_as_8_bit(tmp_path, mode, fmt, save):
    rgb = np.zeros((20, 30, 3), np.uint8)
    rgb[:, :15] = (200, 100, 50)
    path = tmp_path / f"x.{fmt.lower()}"
    Image.fromarray(rgb).convert(mode).save(path, fmt, **save)
    image = images.read(path)
    assert image.mode in ("RGB", "L") and image.size == (30, 20)
    grey = images.grey(image)
    assert abs(int(grey[0, 0]) - int(grey[0, 29])) > 60  # the left half is still lighter


def test_16_bit_and_alpha_are_brought_to_8_bit(tmp_path):
    ramp = np.arange(64, dtype=np.uint16).reshape(8, 8) * 1000
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert images.grey(images.read(tmp_path / "deep.png"))[7, 7] == round(63000 / 257)
    clear = np.zeros((4, 4, 4), np.uint8)  # fully transparent black: shows the white behind it
    Image.fromarray(clear, "RGBA").save(tmp_path / "clear.png")
    assert (images.grey(images.read(tmp_path / "clear.png")) == 255).all()


def test_exif_orientation_turns_the_photo_upright(tmp_path):
    upright = np.zeros((40, 60), np.uint8)
    upright[:10, :10] = 255  # a white corner at the top left
    stored = Image.fromarray(upright).transpose(Image.Transpose.ROTATE_90)  # the camera saved it turned
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 clockwise to view"
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    grey = images.grey(images.read(tmp_path / "phone.jpg"))
    assert grey.shape == (40, 60) and grey[:10, :10].mean() > 200 and grey[30:, 50:].mean() < 50


def test_a_phone_photo_stored_sideways_gives_the_upright_faces(photo, model, tmp_path):
    rgb, _ = photo
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 counter-clockwise to view"
    Image.fromarray(rgb).transpose(Image.Transpose.ROTATE_270).save(tmp_path / "side.png", exif=exif)
    detector = detect.Detector(model)
    sideways = detector(np.asarray(images.read(tmp_path / "side.png")))
    direct = detector(rgb)
    assert len(sideways) == len(direct) == 1
    np.testing.assert_allclose(sideways[0].box, direct[0].box)
    np.testing.assert_allclose(sideways[0].keypoints, direct[0].keypoints, atol=1e-3)


# --- the API --------------------------------------------------------------------------------------


def test_the_api_gives_each_face_its_box_and_15_keypoints_in_image_pixels(photo, model):
    rgb, truth = photo
    detector = detect.Detector(model)
    (face,) = detector(rgb)
    assert face.box.shape == (4,) and face.keypoints.shape == (15, 2) and np.isfinite(face.keypoints).all()
    assert holds(face.box, truth[:2].mean(0))  # the labelled face
    (grey_face,) = detector(images.grey(images.from_array(rgb)))  # (H, W) grey: the same
    np.testing.assert_allclose(grey_face.keypoints, face.keypoints, atol=1e-4)
    with pytest.raises(ValueError, match=r"expected an image array \(H, W\) or \(H, W, 3\) of uint8"):
        detector(rgb.astype(np.float32))


def test_a_huge_photo_is_searched_reduced_and_answered_in_its_own_pixels(photo, model):
    rgb, truth = photo
    scale, offset = 17, np.array([1500, 200])
    big = np.full((6000, 8000, 3), 90, np.uint8)
    face = np.asarray(Image.fromarray(rgb).resize((rgb.shape[1] * scale, rgb.shape[0] * scale)))
    big[offset[1] : offset[1] + face.shape[0], offset[0] : offset[0] + face.shape[1]] = face
    (found,) = detect.Detector(model)(big)
    assert holds(found.box, truth[:2].mean(0) * scale + offset)
    assert 0.5 < (found.box[2] - found.box[0]) / (scale * 140) < 2  # Martin Sheen's face: ~140 px wide


def test_a_face_too_small_to_frame_is_reported_not_predicted(photo, model):
    rgb, _ = photo
    cfg = OmegaConf.merge(detect.settings(), {"min_face_px": 10_000})
    found, _ = detect.Detector(model, cfg=cfg).find(images.grey(images.from_array(rgb)))
    assert found.faces == [] and len(found.too_small) == 1


# --- the command ----------------------------------------------------------------------------------


def run(*args) -> tuple[int, str, str]:
    proc = subprocess.run(
        [sys.executable, "-m", "keypoints", "detect", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    return proc.returncode, proc.stdout, proc.stderr


def test_the_command_writes_the_table_and_drawings_and_reports_each_bad_input(photo, onnx_model, tmp_path):
    rgb, truth = photo
    folder = tmp_path / "in"
    folder.mkdir()
    Image.fromarray(rgb).save(folder / "sheen.jpg", quality=95)
    Image.fromarray(rgb).save(folder / "copy.png")
    (folder / "notes.jpg").write_text("not an image")
    data = (folder / "sheen.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(data[: len(data) // 3])
    Image.new("RGB", (120, 90), (128, 128, 128)).save(folder / "wall.png")
    (folder / "README.txt").write_text("skipped: not an image suffix")
    (tmp_path / "empty").mkdir()
    out = tmp_path / "out"
    status, stdout, stderr = run(onnx_model, folder, tmp_path / "empty", tmp_path / "missing.jpg", "--out", out)
    assert status == 0, stderr
    lines = [line.strip() for line in stderr.replace("\r", "\n").splitlines()]
    for expected in (
        f"{folder / 'notes.jpg'}: not an image",
        f"{folder / 'cut.jpg'}: unreadable or truncated",
        f"{tmp_path / 'empty'}: empty folder",
        f"{tmp_path / 'missing.jpg'}: no such file or folder",
        f"{folder / 'wall.png'}: no face found",
    ):
        assert sum(line.startswith(expected) for line in lines) == 1, (expected, stderr)
    assert "README" not in stderr
    assert "photos read: 3 of 5, faces found: 2, photos with no face: 1" in stdout
    with open(out / "keypoints.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert list(table[0]) == ["file", "face", "box_left", "box_top", "box_right", "box_bottom", *COLUMNS]
    assert sorted(Path(r["file"]).name for r in table) == ["copy.png", "sheen.jpg"]
    for row in table:
        assert row["face"] == "0" and holds(
            [float(row[k]) for k in ("box_left", "box_top", "box_right", "box_bottom")], truth[:2].mean(0)
        )
    assert sorted(p.name for p in out.iterdir()) == ["copy.png", "keypoints.csv", "sheen.png", "wall.png"]
    assert Image.open(out / "sheen.png").size == (rgb.shape[1], rgb.shape[0])
    status, _, stderr = run(onnx_model, folder / "sheen.jpg", "--out", out)  # its own files: replaced
    assert status == 0, stderr


def test_the_command_fails_only_when_no_photo_could_be_read(onnx_model, tmp_path):
    (tmp_path / "a.jpg").write_text("text")
    status, stdout, stderr = run(onnx_model, tmp_path / "a.jpg", "--out", tmp_path / "out")
    assert status == 1 and f"{tmp_path / 'a.jpg'}: not an image" in stderr and "photos read: 0 of 1" in stdout


def test_out_never_overwrites_files_the_command_did_not_write(onnx_model, tmp_path):
    photo = tmp_path / "face.png"
    Image.new("RGB", (64, 64), (128, 128, 128)).save(photo)
    for name in ("keypoints.csv", "face.png"):
        out = tmp_path / f"out_{name}"
        out.mkdir()
        (out / name).write_text("the user's own")
        status, _, stderr = run(onnx_model, photo, "--out", out)
        assert status == 1 and f"{out / name}: exists and was not written by kfkd detect" in stderr
        assert (out / name).read_text() == "the user's own"


def test_an_onnx_model_runs_without_torch(photo, onnx_model, tmp_path):
    rgb, _ = photo
    Image.fromarray(rgb).save(tmp_path / "face.png")
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    # A sitecustomize that makes `import torch` (and Lightning) fail, as on a machine without them.
    (blocker / "sitecustomize.py").write_text(
        "import sys\nfor m in ('torch', 'pytorch_lightning', 'lightning'):\n    sys.modules[m] = None\n"
    )
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "keypoints",
            "detect",
            str(onnx_model),
            str(tmp_path / "face.png"),
            "--out",
            str(tmp_path / "out"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(blocker), str(ROOT)])},
    )
    assert proc.returncode == 0, proc.stderr
    assert "faces found: 1" in proc.stdout
    check = subprocess.run(
        [sys.executable, "-c", "import torch"],
        capture_output=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(blocker)},
    )
    assert check.returncode != 0  # the blocker works


def test_a_torch_model_and_its_export_give_the_same_keypoints(photo, model, onnx_model):
    rgb, _ = photo
    (a,), (b,) = detect.Detector(model)(rgb), detect.Detector(onnx_model)(rgb)
    np.testing.assert_allclose(a.keypoints, b.keypoints, atol=1e-2)


def test_bad_model_paths_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="nothing.onnx: no such file"):
        detect.Detector(tmp_path / "nothing.onnx")


def test_a_fit_made_for_another_finder_is_refused(tmp_path):
    cfg = OmegaConf.load(detect.SETTINGS)
    cfg.finder.min_neighbors += 1
    OmegaConf.save(cfg, tmp_path / "detect.yaml")
    with pytest.raises(DataError, match="framing.yaml: fitted for another finder.*kfkd framefit"):
        detect.settings(tmp_path / "detect.yaml")


# --- a 68-point model (keypoints=ibug68, data=coco) ----------------------------------------------

IBUG68 = keypointset.load("ibug68")


@pytest.fixture(scope="module")
def model68(tiny_coco68, tmp_path_factory):
    """An untrained tiny heatmap net of the ibug68 set on the tiny COCO set, with the framing fit that
    training writes: the face finder finds no drawn face there, so its map is taken to be the
    annotations' (the tests swap the finder for one that returns the true box)."""
    from keypoints.data.coco import CocoDataModule  # noqa: F401  (the data the run names)

    run = make_run(
        tmp_path_factory.mktemp("detect68") / "run",
        tiny_coco68,
        net_overrides=TINY_HEATMAP,
        data=("data=coco", "keypoints=ibug68", "data.groups=person"),
    )
    framefit.fit_run(run)
    fit = OmegaConf.load(run / "framing.yaml")
    assert fit.box_to_frame is None and fit.fit.faces == 16  # Haar's cascade finds no drawn face
    fit.box_to_frame = fit.annotation_box_to_frame
    OmegaConf.save(fit, run / "framing.yaml")
    return run


def drawn_face68(seed=5):
    """A photo of conftest's drawn 68-point face, its true keypoints and its tight box."""
    from conftest import face68
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)
    points = face68(rng, (90.0, 80.0), 1.2, 0.1)
    image = Image.fromarray(rng.integers(150, 230, (170, 190), np.uint8))
    pen = ImageDraw.Draw(image)
    for a, b in IBUG68.skeleton:
        pen.line([*points[IBUG68.names.index(a)], *points[IBUG68.names.index(b)]], fill=30, width=2)
    return np.asarray(image), points, np.r_[points.min(0), points.max(0)]


def test_a_68_point_model_finds_its_68_keypoints_torch_and_onnx_alike(model68, tmp_path):
    photo, _, box = drawn_face68()
    found = {}
    for name, model in (("torch", model68), ("onnx", export.export(model68, tmp_path / "m68.onnx"))):
        detector = detect.Detector(model)
        assert detector.cfg.framing == (str(model68 / "framing.yaml") if name == "torch" else str(model))
        detector.finder = lambda grey: box[None]
        (face,) = detector(photo)
        assert face.keypoints.shape == (68, 2) and np.isfinite(face.keypoints).all()
        assert detector.header == detect.HEADER + IBUG68.columns and len(detector.skeleton) == 63
        found[name] = face.keypoints
    np.testing.assert_allclose(found["onnx"], found["torch"], atol=1e-2)


def test_a_68_point_export_names_its_keypoints_set_skeleton_and_framing(model68, tmp_path):
    import json

    import onnx

    meta = {p.key: p.value for p in onnx.load(str(export.export(model68, tmp_path / "m68.onnx"))).metadata_props}
    assert meta["kfkd_keypoints"].split(",") == IBUG68.names and meta["kfkd_keypoint_set"] == "ibug68"
    assert meta["kfkd_columns"].split(",") == IBUG68.columns
    assert json.loads(meta["kfkd_skeleton"]) == IBUG68.skeleton
    assert json.loads(meta["kfkd_framing"]) == OmegaConf.to_container(OmegaConf.load(model68 / "framing.yaml"))


def test_drawings_follow_the_sets_skeleton(model68, tmp_path):
    photo, points, box = drawn_face68()
    found = detect.Found([detect.Face(box, points)], [])
    skeleton = detect.Detector(model68).skeleton
    detect.draw(Image.fromarray(np.zeros_like(photo)), found, tmp_path / "lines.png", skeleton)
    detect.draw(Image.fromarray(np.zeros_like(photo)), found, tmp_path / "dots.png", [])
    lines, dots = (np.asarray(Image.open(tmp_path / f"{n}.png")) for n in ("lines", "dots"))
    yellow = lambda a: (a[..., 0] > 200) & (a[..., 1] > 200) & (a[..., 2] < 50)
    a, b = (points[IBUG68.names.index(k)] for k in ("outer_lip_0", "outer_lip_1"))
    x, y = np.round((a + b) / 2).astype(int)  # midway along a lip segment: a line, not a dot
    assert yellow(lines)[y - 1 : y + 2, x - 1 : x + 2].any() and not yellow(dots).any()


def test_the_command_names_its_columns_after_the_models_set(model68, tmp_path):
    photo, _, _ = drawn_face68()
    Image.fromarray(photo).save(tmp_path / "face.png")
    status, stdout, stderr = run(
        export.export(model68, tmp_path / "m68.onnx"), tmp_path / "face.png", "--out", tmp_path / "out"
    )
    assert status == 0, stderr
    with open(tmp_path / "out" / "keypoints.csv", newline="") as f:
        assert next(csv.reader(f)) == detect.HEADER + IBUG68.columns


def test_a_stale_or_mismatched_framing_fit_is_refused_with_one_line(model68, tmp_path):
    other = OmegaConf.load(detect.SETTINGS)
    other.finder.min_neighbors += 1  # conf/detect.yaml changed since the fit
    OmegaConf.save(other, tmp_path / "detect.yaml")
    fit = (str(model68 / "framing.yaml"), OmegaConf.to_container(OmegaConf.load(model68 / "framing.yaml")))
    with pytest.raises(
        DataError,
        match=rf"^{model68}/framing.yaml: fitted for another finder than .*detect.yaml's; "
        rf"refit with kfkd framefit --run {model68}$",
    ):
        detect.settings(tmp_path / "detect.yaml", fit)
    with pytest.raises(
        DataError,
        match=r"conf/framing.yaml: a framing fit for the anchors of keypoint set kaggle15 "
        r"\(left_eye_center, .*\), but the model predicts keypoint set ibug68",
    ):
        detect.Detector(model68, cfg=detect.settings())  # realfaces' fit for a 68-point model
    moved = tmp_path / "moved"
    shutil.copytree(model68, moved)
    (moved / "framing.yaml").unlink()
    with pytest.raises(DataError, match=r"moved/framing.yaml: not found; .*kfkd framefit --run .*moved$"):
        detect.Detector(moved)
    fit[1]["box_to_frame"] = None
    with pytest.raises(DataError, match=r"framing.yaml: the finder found none of the 16 training faces"):
        detect.settings(fitted=fit)


def test_framefit_refits_a_coco_runs_framing(model68, tmp_path):
    moved = tmp_path / "moved"
    shutil.copytree(model68, moved)
    proc = subprocess.run(
        [sys.executable, "-m", "keypoints", "framefit", "--run", str(moved)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 0 and f"wrote {moved / 'framing.yaml'}" in proc.stdout, proc.stderr
    assert OmegaConf.load(moved / "framing.yaml").box_to_frame is None  # the cascade's own fit, again
    (tmp_path / "empty").mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "keypoints", "framefit", "--run", str(tmp_path / "empty")],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )
    assert proc.returncode == 1 and proc.stderr.startswith(f"error: {tmp_path / 'empty'}: no checkpoint, run directory")

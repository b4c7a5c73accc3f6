"""The COCO reader: faces framed from their boxes through a map learned from the training faces,
cropped and cached; visibility 0 as missing; the split by an image field; one line for each bad input;
a few training steps on a tiny COCO set of 68-point faces."""

import json
import os
import shutil

import numpy as np
import pytest
import torch
from conftest import KAGGLE15, TINY_HEATMAP, compose, run_train
from omegaconf import OmegaConf

from keypoints.core import keypointset
from keypoints.core.errors import DataError
from keypoints.data import coco, framing, images


def datamodule(directory, *overrides, keypoints="kaggle15", specialist="all", cache=None):
    """The COCO data module `python train.py data=coco data.dir=DIRECTORY ...` would train on, set up."""
    from hydra.utils import instantiate

    cfg = compose(
        "data=coco",
        f"data.dir={directory}",
        f"keypoints={keypoints}",
        f"specialist={specialist}",
        f"paths.cache_dir={cache}" if cache else "paths.cache_dir=null",
        *overrides,
    )
    data = instantiate(cfg.data, columns=keypointset.specialist(cfg).columns)
    data.setup()
    return data


# --- reading and framing -------------------------------------------------------------------------


def test_each_face_is_cropped_from_its_box_through_the_learned_map_with_its_keypoints(tiny_coco):
    data = datamodule(tiny_coco, "data.valid_fraction=0.25", "loss=masked", "data.margin=0", "data.frame_by=box")
    annotations = json.loads((tiny_coco / "annotations.json").read_text())
    x, y, mask = data.train_set[:]
    assert x.shape[1:] == (1, 96, 96) and y.shape[1] == len(KAGGLE15.columns)
    # The mean face, in the crops, fills data.fill of the crop's side, about its centre.
    mean = np.nanmean(np.where(mask.numpy() > 0, y.numpy() * 48 + 48, np.nan), 0).reshape(-1, 2)
    low, high = mean.min(0), mean.max(0)
    assert np.sqrt(np.prod(high - low)) == pytest.approx(data.fill * 96, rel=0.05)
    np.testing.assert_allclose((low + high) / 2, 48, atol=3)
    face = int(np.flatnonzero(data.training)[0])
    frame = framing.from_box(data.coco.boxes[face], data.box_to_frame, 96)
    photo = images.grey(images.read(tiny_coco / annotations["images"][face]["file_name"]))
    row = list(np.flatnonzero(data.training)).index(face)  # faces keep their order
    np.testing.assert_array_equal(x[row, 0].numpy(), frame.crop(photo, 4.0) / np.float32(255))
    labelled = mask[row].numpy() > 0
    crop_points = frame.to_crop(data.coco.points[face]).reshape(-1)
    np.testing.assert_allclose((y[row].numpy() * 48 + 48)[labelled], crop_points[labelled], atol=1e-4)


def test_training_faces_carry_a_margin_of_the_photo_that_training_cuts_off(tiny_coco):
    from keypoints.data.augment import Affine, centre_crop

    plain, wide = datamodule(tiny_coco, "data.margin=0"), datamodule(tiny_coco, "data.margin=0.125")
    x, y, mask = wide.train_set[:]
    assert x.shape[-1] == 96 + 2 * 12 and wide.valid_set[:][0].shape[-1] == 96  # validation: the face alone
    cropped = centre_crop(x, y, mask, 96)
    for a, b in zip(cropped, plain.train_set[:]):
        np.testing.assert_allclose(a, b, atol=1.01 / 255)  # the same face, the same keypoints
    for a, b in zip(wide.valid_set[:], plain.valid_set[:]):
        np.testing.assert_allclose(a, b, atol=1.01 / 255)
    # Shifted 10 px right, the face shows the photo at its left edge, not its first column repeated.
    shift = lambda faces: Affine(0, 0, 0).apply(
        faces,
        *[torch.zeros(len(faces), 2)] * 2,
        torch.eye(2).expand(len(faces), 2, 2),
        torch.tensor([10 / (faces.shape[-1] / 2), 0.0]).expand(len(faces), 2),
    )[0]
    repeated = shift(plain.train_set[:][0])[..., :, :8].std(-1).mean()
    photo = centre_crop(shift(x), y, mask, 96)[0][..., :, :8].std(-1).mean()
    assert repeated < 0.2 * photo


def test_faces_framed_by_their_anchors_put_them_where_they_sit_on_average(tiny_coco68):
    """data.frame_by=anchors: each face's crop is the frame that puts its labelled anchors nearest their
    canonical places, as detect re-frames a face; framed by the box, they only scatter about them."""
    for frame_by, exact in (("anchors", True), ("box", False)):
        data = datamodule(tiny_coco68, f"data.frame_by={frame_by}", "data.margin=0", keypoints="ibug68")
        x, y, mask = data.train_set[:]
        anchors = [data.keypoints.index(a) for a in data.anchors]
        canonical = np.array(list(data.canonical.values()))
        for points in (y.numpy() * 48 + 48).reshape(len(y), -1, 2)[:, anchors]:
            frame = framing.from_points(points, canonical, False, 96)
            close = np.allclose([frame.cx, frame.cy, frame.size], [48, 48, 96], atol=1e-3)
            assert close if exact else not close
    with pytest.raises(DataError, match=r"^data.frame_by=jaw: expected box \(each face framed from its box"):
        datamodule(tiny_coco68, "data.frame_by=jaw", keypoints="ibug68")


def test_a_fill_that_cuts_keypoints_off_the_crop_is_warned_about_with_one_that_does_not(tiny_coco68, caplog):
    """A face that fills too much of its crop loses its outermost keypoints (jaw, brows) as missing:
    setup says how many training faces do, and which data.fill frames nine in ten of them whole."""

    def warnings(*overrides):
        caplog.clear()
        data = datamodule(tiny_coco68, *overrides, keypoints="ibug68")
        faces = np.flatnonzero(data.training)
        outside = [(np.abs(data.frames[f].to_crop(data.coco.points[f]) - 48) > 48).any() for f in faces]
        return sum(outside), len(faces), [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]

    cut, faces, warned = warnings("data.fill=1.2")
    assert cut > coco.CUT_WARNING * faces and len(warned) == 1
    prefix = (
        f"data.fill=1.2: {cut} of {faces} training faces ({cut / faces:.0%}) have a labelled keypoint outside "
        f"their 96 px crop, left out as missing; data.fill="
    )
    assert warned[0].startswith(prefix) and warned[0].endswith(" frames 90% of them whole")
    fill = float(warned[0][len(prefix) :].split()[0])
    assert 0.6 < fill < 1.2
    cut, faces, warned = warnings(f"data.fill={fill}")
    assert cut <= coco.CUT_WARNING * faces and warned == []
    assert warnings()[2] == []  # the default


def test_visibility_0_is_missing_and_the_masked_loss_skips_it(tiny_coco):
    annotations = json.loads((tiny_coco / "annotations.json").read_text())
    unlabelled = sum(t == 0 for a in annotations["annotations"] for t in a["keypoints"][2::3])
    assert unlabelled > 0  # the synthetic faces leave many keypoints unlabelled, as Kaggle's
    data = datamodule(tiny_coco, "loss=masked", "data.valid_fraction=0.25")
    x, y, mask = data.train_set[:]
    triples = np.array([a["keypoints"] for a in annotations["annotations"]]).reshape(
        len(annotations["annotations"]), -1, 3
    )
    visible = np.repeat(triples[data.training][:, :, 2] > 0, 2, axis=1)
    assert ((mask.numpy() > 0) <= visible).all() and (y.numpy()[mask.numpy() == 0] == 0).all()
    assert (mask.numpy() == 0).sum() >= (~visible).sum()  # every v = 0 is missing
    # the tutorial's loss (data.drop_incomplete) keeps only faces with every keypoint
    complete = datamodule(tiny_coco, "loss=mse", "data.valid_fraction=0.5").train_set[:][2]
    assert complete.numpy().all() and len(complete) < len(mask)


def test_groups_name_an_image_field_and_exclude_groups_leave_people_out(tiny_coco, tmp_path):
    data = datamodule(tiny_coco, "data.groups=person", "data.valid_fraction=0.3")
    person = np.array([data.coco.images[i]["person"] for i in data.coco.image])
    train_people, valid_people = set(person[data.training]), set(person[data.validation])
    assert train_people and valid_people and not train_people & valid_people
    (tmp_path / "people.csv").write_text("file,person\na.jpg,1\nb.jpg,2\n")
    for exclude in ("[1,2]", str(tmp_path / "people.csv")):
        kept = datamodule(tiny_coco, "data.groups=person", "data.valid_fraction=0.3", f"data.exclude_groups={exclude}")
        assert not {1, 2} & (set(person[kept.training]) | set(person[kept.validation]))
        assert len(kept.train_set) + len(kept.valid_set) == len(data.train_set) + len(data.valid_set) - 8
    with pytest.raises(DataError, match=r"images\[0\]: no field 'people' \(data.groups=people names the image field"):
        datamodule(tiny_coco, "data.groups=people")


def test_boxes_drawn_otherwise_give_the_same_faces(tiny_coco, tmp_path):
    """Every dataset draws its boxes its own way: the map learned from the training faces takes it out."""
    annotations = json.loads((tiny_coco / "annotations.json").read_text())
    for a in annotations["annotations"]:  # boxes half as large again, about the same centre
        x, y, w, h = a["bbox"]
        a["bbox"] = [x - w / 4, y - h / 4, 1.5 * w, 1.5 * h]
    wide = tmp_path / "wide"
    shutil.copytree(tiny_coco, wide)
    (wide / "annotations.json").write_text(json.dumps(annotations))
    tight, loose = datamodule(tiny_coco, "data.frame_by=box"), datamodule(wide, "data.frame_by=box")
    assert loose.box_to_frame["size"] == pytest.approx(tight.box_to_frame["size"] / 1.5, rel=1e-6)
    np.testing.assert_allclose(loose.valid_set[:][1], tight.valid_set[:][1], atol=1e-5)


def test_crops_are_cached_and_cropped_again_when_the_file_changes(tiny_coco, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_coco, data)
    cache = tmp_path / "cache"
    first = datamodule(data, cache=cache)
    (cached,) = cache.glob("annotations-*.npz")
    stamp = cached.stat().st_mtime_ns
    again = datamodule(data, cache=cache)  # read from the cache
    assert list(cache.glob("*.npz")) == [cached] and cached.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.train_set[:][0], first.train_set[:][0])
    os.utime(data / "images" / "3.png", ns=(stamp, stamp + 10**9))  # an image edited
    datamodule(data, cache=cache)
    assert len(list(cache.glob("*.npz"))) == 2
    datamodule(data, "data.size=64", cache=cache)  # the crops' size shapes them: a cache of its own
    assert len(list(cache.glob("*.npz"))) == 3
    cached.write_bytes(b"torn")  # a broken cache file is cropped again, not trusted
    np.testing.assert_array_equal(datamodule(data, cache=cache).train_set[:][0], first.train_set[:][0])


def test_a_set_takes_the_categorys_keypoints_by_name(tiny_coco68):
    data = datamodule(tiny_coco68, keypoints="ibug68", specialist="eyes")
    assert data.valid_set[:][1].shape[1] == 24  # the eyes' 12 keypoints
    with pytest.raises(
        DataError, match="category 'face' has no keypoint 'left_eye_center' of the keypoint set kaggle15"
    ):
        datamodule(tiny_coco68)


# --- bad input: one line naming the file and the field -------------------------------------------


def broken(tmp_path, source, change):
    """A copy of the COCO folder `source` with annotations.json changed by `change` (dict -> dict or text)."""
    folder = tmp_path / "broken"
    shutil.copytree(source, folder)
    result = change(json.loads((folder / "annotations.json").read_text()))
    (folder / "annotations.json").write_text(result if isinstance(result, str) else json.dumps(result))
    return folder


def edit(path, value):
    """A change that sets `path` (keys and indices) to `value`."""

    def change(data):
        node = data
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        return data

    return change


BAD = [
    (
        "not json",
        lambda d: "{images: [}",
        r"annotations.json: not JSON \(.* at line 1 column 2\); expected COCO keypoints",
    ),
    ("a list", lambda d: [d], r"annotations.json: a JSON list, not an object; expected COCO keypoints"),
    (
        "no annotations",
        lambda d: {k: v for k, v in d.items() if k != "annotations"},
        r"annotations.json: no 'annotations' list; expected COCO keypoints: a JSON object with images, annotations",
    ),
    (
        "missing image",
        edit(["images", 5, "file_name"], "images/gone.png"),
        r"annotations.json: images\[5\].file_name: .*images/gone.png: no such file",
    ),
    (
        "keypoint count",
        lambda d: edit(["annotations", 7, "keypoints"], d["annotations"][7]["keypoints"][:-3])(d),
        r"annotations.json: annotations\[7\].keypoints: 42 values; expected x, y, v for each of the 15 keypoints of "
        r"category 'face' \(45 numbers\)",
    ),
    (
        "no names",
        edit(["categories", 0, "keypoints"], None),
        r"annotations.json: no category with a list of keypoint names; expected one whose 'keypoints' names",
    ),
    (
        "names not a list",
        edit(["categories", 0, "keypoints"], "left_eye_center"),
        r"annotations.json: categories\[0\] \('face'\): no list of keypoint names in 'keypoints'",
    ),
    (
        "box outside",
        edit(["annotations", 2, "bbox"], [200, 10, 50, 50]),
        r"annotations.json: annotations\[2\].bbox: \[200, 10, 50, 50\] lies outside its image, images\[2\] \(140x150 px\)",
    ),
    (
        "box empty",
        edit(["annotations", 2, "bbox"], [20, 10, 0, 50]),
        r"annotations.json: annotations\[2\].bbox: \[20, 10, 0, 50\]; expected \[x, y, width, height\] with a positive",
    ),
    (
        "unknown image",
        edit(["annotations", 4, "image_id"], 999),
        r"annotations.json: annotations\[4\].image_id: 999 is not the id of any of the images",
    ),
    (
        "visibility",
        lambda d: edit(["annotations", 1, "keypoints", 5], 7)(d),
        r"annotations.json: annotations\[1\].keypoints\[5\]: visibility 7 of 'right_eye_center'; expected 0",
    ),
    (
        "size",
        edit(["images", 3, "width"], 141),
        r"annotations.json: images\[3\].file_name: .*3.png is 140x150 px, but the annotations give 141x150",
    ),
]


@pytest.mark.parametrize("name, change, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_one_line_naming_the_file_and_the_field(tiny_coco, tmp_path, name, change, message):
    folder = broken(tmp_path, tiny_coco, change)
    with pytest.raises(DataError) as error:
        datamodule(folder)
    assert "\n" not in str(error.value)
    assert str(error.value).startswith(str(folder / "annotations.json"))
    assert __import__("re").search(message, str(error.value)), str(error.value)


def test_an_unreadable_image_is_named(tiny_coco, tmp_path):
    folder = broken(tmp_path, tiny_coco, lambda d: d)
    (folder / "images" / "6.png").write_bytes(b"not a png")
    with pytest.raises(
        DataError, match=r"annotations.json: images\[6\].file_name: .*6.png: not an image Pillow can read"
    ):
        datamodule(folder)


def test_a_set_whose_mirror_pairs_name_unknown_keypoints_is_refused(tmp_path):
    path = tmp_path / "mine.yaml"
    node = OmegaConf.to_container(OmegaConf.load(keypointset.SETS / "ibug68.yaml"))
    node["mirror_pairs"][3] = ["jaw_3", "jaw_31"]
    OmegaConf.save(node, path)
    with pytest.raises(
        DataError,
        match=r"mine.yaml: mirror_pairs\[3\]\[1\]: 'jaw_31' is not one of the set's keypoints "
        r"\(did you mean 'jaw_3'\?\)$",
    ):
        keypointset.load(path)


@pytest.mark.slow
def test_train_py_stops_with_one_line_and_loses_nothing(tiny_coco, tmp_path):
    folder = broken(tmp_path, tiny_coco, edit(["annotations", 2, "bbox"], [200, 10, 50, 50]))
    (tmp_path / "outputs" / "runs").mkdir(parents=True)
    (tmp_path / "outputs" / "runs" / "mine.txt").write_text("the user's own")
    proc = run_train(
        tmp_path, "data=coco", f"data.dir={folder}", "hydra.run.dir=outputs/runs/bad", *TINY_HEATMAP, check=False
    )
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    (line,) = [l for l in proc.stderr.splitlines() if l.startswith("error:")]
    assert line.startswith(f"error: {folder / 'annotations.json'}: annotations[2].bbox:")
    assert (tmp_path / "outputs" / "runs" / "mine.txt").read_text() == "the user's own"


# --- training on a tiny COCO set of 68-point faces -----------------------------------------------


@pytest.mark.slow
def test_a_few_training_steps_on_a_tiny_coco_set_of_68_point_faces(tiny_coco68, tmp_path):
    run = tmp_path / "run"
    proc = run_train(
        tmp_path,
        "data=coco",
        f"data.dir={tiny_coco68}",
        "keypoints=ibug68",
        "data.groups=person",
        "experiment=fast",
        "trainer.max_epochs=2",
        "data.batch_size=4",
        "averaging=ema",
        f"paths.cache_dir={tmp_path / 'cache'}",
        f"hydra.run.dir={run}",
        *TINY_HEATMAP,
    )
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["epochs"] == 2 and metrics["n_train"] + metrics["n_valid"] == 24
    assert 0 < metrics["valid_nme_pct"] and 0 <= metrics["valid_failure_pct"] <= 100
    assert all("valid_nme_pct" in h for h in metrics["history"])
    assert "NME" in proc.stdout
    fit = OmegaConf.load(run / "framing.yaml")  # how detect frames these faces: the set's anchors
    assert fit.keypoint_set == "ibug68" and list(fit.canonical) == keypointset.load("ibug68").anchors
    assert fit.fit.faces == 16 and fit.box_to_frame is None  # the face finder finds no drawn face
    cfg = OmegaConf.load(run / "config.yaml")
    assert [list(p) for p in cfg.augment.flip.flip_indices] == keypointset.load("ibug68").flip_indices(
        cfg.keypoints.names
    )

"""A trained model as a function of faces: numpy in, keypoints in pixels out.

MODEL is a run directory, a checkpoint or a sweep directory (loaded by keypoints.inference.runs, with torch,
imported only then), or an exported .onnx file (keypoints.inference.export), run by onnxruntime alone, so a
deployment needs no torch. Either says what it predicts: `size` (the faces' side in pixels),
`keypoint_set` (its set's name), `keypoints` (the set's names, in order), `columns` (the `<name>_x`,
`<name>_y` it predicts, in the set's order), `skeleton` (pairs of names to draw lines between), and
`framing`: how its training faces were framed, as (where it is, the fit), for detect; None for models
of Kaggle-format crops, which conf/framing.yaml describes.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from keypoints.core.errors import DataError

# The .onnx file's metadata: the columns it predicts, the set's keypoints, name and skeleton (exports
# before keypoint sets have none: their keypoints are those of their columns), whether flip TTA is in
# the graph, and the framing fit of the runs' faces (JSON; none before COCO data: conf/framing.yaml's).
COLUMNS_KEY, KEYPOINTS_KEY, TTA_KEY = "kfkd_columns", "kfkd_keypoints", "kfkd_tta"
SET_KEY, SKELETON_KEY, FRAMING_KEY = "kfkd_keypoint_set", "kfkd_skeleton", "kfkd_framing"


class TorchModel:
    """Trained runs, assembled as `submit` assembles them (keypoints.inference.runs.load)."""

    def __init__(self, paths: list[str | Path], flip: bool, batch_size: int):
        from keypoints.inference import runs

        self.model, found = runs.load(paths, flip=flip)
        self.columns, self.flip, self.batch_size = list(self.model.columns), flip, batch_size
        self.keypoints, self.size = self.model.keypoint_set.names, self.model.size
        self.keypoint_set, self.skeleton = self.model.keypoint_set.name, self.model.keypoint_set.skeleton
        self.framing = runs.framing(found)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        import torch

        return self.model.predict(torch.from_numpy(faces), self.batch_size)


class OnnxModel:
    """An exported model; flip test-time augmentation is part of the graph when it was exported with it."""

    def __init__(self, path: str | Path, flip: bool, threads: int | None = None):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads or 0  # 0: onnxruntime's default, a thread per core
        try:
            self.session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors for bad files
            raise DataError(f"{path}: not a model onnxruntime can load ({str(e).splitlines()[0][:160]})") from None
        meta = self.session.get_modelmeta().custom_metadata_map
        if COLUMNS_KEY not in meta:
            raise DataError(f"{path}: no '{COLUMNS_KEY}' metadata; expected a model written by kfkd export")
        self.columns, self.flip = meta[COLUMNS_KEY].split(","), meta.get(TTA_KEY) == "flip"
        self.keypoints = (
            meta[KEYPOINTS_KEY].split(",") if KEYPOINTS_KEY in meta else [c[:-2] for c in self.columns[::2]]
        )
        self.keypoint_set = meta.get(SET_KEY, "kaggle15")
        self.skeleton = json.loads(meta.get(SKELETON_KEY, "[]"))
        self.framing = (str(path), json.loads(meta[FRAMING_KEY])) if FRAMING_KEY in meta else None
        if flip and not self.flip:
            raise DataError(
                f"{path}: exported without flip TTA; for --tta flip export it with `kfkd export MODEL --tta flip`"
            )
        faces = self.session.get_inputs()[0]
        self.input, self.size = faces.name, faces.shape[-1]  # (N, 1, size, size)

    def __call__(self, faces: np.ndarray) -> np.ndarray:
        return self.session.run(None, {self.input: np.ascontiguousarray(faces, np.float32)})[0]


def load(model: str | Path, flip: bool, batch_size: int, threads: int | None = None) -> TorchModel | OnnxModel:
    """The model at `model`: an exported .onnx file, or runs (a run, checkpoint or sweep directory).
    `threads`: an .onnx file's onnxruntime threads per call (default: one per core)."""
    if Path(model).suffix == ".onnx":
        if not Path(model).is_file():
            raise DataError(f"{model}: no such file; expected an .onnx model written by kfkd export")
        return OnnxModel(model, flip, threads)
    return TorchModel([model], flip, batch_size)

"""Export trained runs to ONNX, to run without this project.

    kfkd export MODEL [--out FILE] [--tta flip]

MODEL is a run directory, a checkpoint or a sweep directory; a sweep becomes one model whose columns
are assembled from its nets as `submit` assembles them (keypoints.inference.runs). The graph takes faces
`faces` (N, 1, size, size) float32 in [0, 1], any N, size the runs' data.size (Kaggle's: 96), and
gives `keypoints` (N, len(columns)) in pixels of that face. Its metadata holds the column names
(`kfkd_columns`, comma-separated, in the keypoint set's order), the set's keypoint names
(`kfkd_keypoints`), name (`kfkd_keypoint_set`) and skeleton (`kfkd_skeleton`, JSON pairs of names),
`kfkd_tta`: `flip` when --tta flip built the mirrored pass into the graph, and for runs trained on
COCO data their framing fit (`kfkd_framing`, RUN/framing.yaml as JSON), which detect frames faces with.
The default FILE is model.onnx (model_flip.onnx with --tta flip) in the run or sweep directory.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import warnings
from pathlib import Path

import onnx
import torch

from keypoints.core.errors import DataError
from keypoints.inference import runs as trained
from keypoints.inference.predictor import COLUMNS_KEY, FRAMING_KEY, KEYPOINTS_KEY, SET_KEY, SKELETON_KEY, TTA_KEY

OPSET = 18


def written_by_export(path: Path) -> bool:
    """Whether `path` is a model this command wrote (and so may be replaced)."""
    try:
        return any(p.key == COLUMNS_KEY for p in onnx.load(str(path), load_external_data=False).metadata_props)
    except Exception:  # noqa: BLE001 - anything onnx cannot parse is not ours
        return False


def export(model: str | Path, out: str | Path | None = None, flip: bool = False) -> Path:
    """Write the runs `model` names as one ONNX model; return its path."""
    assembled, found = trained.load([model], flip=flip)
    assembled = assembled.cpu().float()
    path = Path(model)
    home = path if path.is_dir() else found[0].dir
    out = Path(out) if out else home / ("model_flip.onnx" if flip else "model.onnx")
    if out.exists() and not written_by_export(out):
        raise DataError(f"{out}: exists and was not written by kfkd export; choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent) as tmp:
        staged = Path(tmp) / out.name
        # torch.export's exporter (the maintained one; needs onnxscript), one self-contained file. Its
        # notes about torchvision's operators and its own deprecated internals concern no kfkd net.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            torch.onnx.export(
                assembled,
                (torch.zeros(2, 1, assembled.size, assembled.size),),
                str(staged),
                dynamo=True,
                input_names=["faces"],
                output_names=["keypoints"],
                opset_version=OPSET,
                verbose=False,
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,
            )
        graph = onnx.load(str(staged))
        fit = trained.framing(found)
        onnx.helper.set_model_props(
            graph,
            {
                COLUMNS_KEY: ",".join(assembled.columns),
                KEYPOINTS_KEY: ",".join(assembled.keypoint_set.names),
                SET_KEY: assembled.keypoint_set.name,
                SKELETON_KEY: json.dumps(assembled.keypoint_set.skeleton),
                TTA_KEY: "flip" if flip else "none",
                **({FRAMING_KEY: json.dumps(fit[1])} if fit else {}),
                "kfkd_runs": ",".join(str(r.dir) for r in found),
            },
        )
        onnx.checker.check_model(graph)
        onnx.save(graph, str(staged))
        staged.replace(out)
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="kfkd export", description=__doc__.split("\n\n")[0])
    parser.add_argument("model", help="a run directory, a checkpoint or a sweep directory")
    parser.add_argument("--out", help="the .onnx file to write (default: model.onnx in the run or sweep directory)")
    parser.add_argument("--tta", choices=["flip"], help="build flip test-time augmentation into the graph")
    args = parser.parse_args(argv)
    try:
        print(f"wrote {export(args.model, args.out, args.tta == 'flip')}")
    except DataError as error:
        sys.exit(f"error: {error}")


if __name__ == "__main__":
    main()

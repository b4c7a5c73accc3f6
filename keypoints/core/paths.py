"""Where kfkd's own files are: the checkout's root and the configuration kfkd reads outside Hydra."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
CONF = ROOT / "conf"
DETECT = CONF / "detect.yaml"  # how detect finds, frames and crops faces in photos
FRAMING = CONF / "framing.yaml"  # how a face finder's box frames Kaggle-format faces (framefit writes it)
VIDEO = CONF / "video.yaml"  # how kfkd video tracks and smooths faces across frames
SETS = CONF / "keypoints"  # the keypoint sets
TRAIN = ROOT / "train.py"

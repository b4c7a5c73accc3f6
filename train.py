"""Train a keypoint net as the Hydra config in conf/ describes: `python train.py [overrides]` (or `kfkd train`)."""

from keypoints.cli import train_task

if __name__ == "__main__":
    train_task()

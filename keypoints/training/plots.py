"""Figures for comparing runs: the tutorial's learning curves of a sweep, and sample faces in TensorBoard."""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files and TensorBoard only: no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from pytorch_lightning.loggers import TensorBoardLogger  # noqa: E402

from keypoints.core import codec, keypointset  # noqa: E402
from keypoints.core.keypointset import ALL  # noqa: E402
from keypoints.training.rundir import saved_config  # noqa: E402

N_FACES = 16


def learning_curves(sweep: str | Path, out: str | Path | None = None) -> Path:
    """The tutorial's figure: valid RMSE solid, train dashed, one colour per run, and the specialists'
    valid RMSE averaged with each weighted by its number of outputs (a run that stopped early counts
    with its best value, the weights it ended with)."""
    sweep = Path(sweep)
    runs = sorted(d for d in sweep.glob("*/") if (d / "metrics.json").is_file())
    if not runs:
        raise FileNotFoundError(f"{sweep}: no run directory with metrics.json")
    fig, ax = plt.subplots(figsize=(9, 6))
    weighted = []
    for i, run in enumerate(runs):
        cfg = saved_config(run)
        history = json.loads((run / "metrics.json").read_text())["history"]
        valid = np.array([h["valid_rmse_px"] for h in history if "valid_rmse_px" in h])
        train = np.sqrt([h["train_loss"] for h in history if "train_loss" in h]) * codec.scale(cfg.data.size)
        label = cfg.specialist + (" (pretrained)" if cfg.init_from else "")
        ax.plot(valid, "-", marker=".", markersize=3, color=f"C{i}", label=label)  # dots: one-epoch runs show
        ax.plot(train, "--", color=f"C{i}")
        if cfg.specialist != ALL:
            weighted.append((len(keypointset.specialist(cfg).columns), valid))
    if weighted:
        length = max(len(v) for _, v in weighted)
        padded = np.array([np.pad(v, (0, length - len(v)), constant_values=v.min()) for _, v in weighted])
        weights = np.array([w for w, _ in weighted], float)
        ax.plot(weights @ padded / weights.sum(), "-", color="black", linewidth=2, label="specialists, weighted mean")
    ax.set(
        xlabel="epoch", ylabel="RMSE (px)", yscale="log", title=f"{sweep.name}: valid (solid) and train (dashed) RMSE"
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize="small")
    out = Path(out) if out else sweep / "curves.png"
    fig.savefig(out, dpi=100, bbox_inches="tight")
    plt.close(fig)
    return out


def face_grid(images: np.ndarray, predicted: np.ndarray, true: np.ndarray) -> plt.Figure:
    """Faces (N, size, size) with predicted (red +) and true (green x) keypoints, in pixels (N, 2K), NaN = none."""
    cols = int(np.ceil(np.sqrt(len(images))))
    rows = int(np.ceil(len(images) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2 * cols, 2 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, p, t in zip(axes.flat, images, predicted, true):
        ax.imshow(image, cmap="gray", vmin=0, vmax=1)
        ax.scatter(t[0::2], t[1::2], marker="x", s=12, c="lime")
        ax.scatter(p[0::2], p[1::2], marker="+", s=16, c="red")
    fig.tight_layout(pad=0.2)
    return fig


def log_sample_faces(logger, module, valid_set, step: int) -> None:
    """Log the first validation faces with the net's and the true keypoints as a TensorBoard image."""
    if not isinstance(logger, TensorBoardLogger):
        return
    x, y, mask = valid_set[:N_FACES]
    size = x.shape[-1]
    was_training = module.training
    module.eval()
    with torch.no_grad():
        predicted = codec.to_pixels(module(x.to(module.device)).float().cpu().numpy(), size)
    module.train(was_training)
    true = np.where(mask.cpu().numpy() > 0, codec.to_pixels(y.cpu().numpy(), size), np.nan)
    fig = face_grid(x[:, 0].float().cpu().numpy(), predicted, true)
    logger.experiment.add_figure("valid_faces", fig, global_step=step)

"""The specialists packed: trained together in one process, one step updating all of them.

    kfkd specialists experiment=specialists data=kaggle data.dir=DIR packed=true
    python -m keypoints.specialists.packed experiment=specialists init_from=BASE_RUN data=kaggle data.dir=DIR

The first trains the base net, then its specialists here. The second trains here the jobs that
`python train.py -m OVERRIDES` would run (the preset's specialists, or a sweep the command line
gives), each into the directory that multirun would give it.

Each job is configured, seeded, built and started from `init_from` as its own run would be
(keypoints.training.fit), and keeps its own rows, batches, optimiser, schedule, epoch budget and early
stopping, which restores its best weights; a job that has stopped no longer changes. What they
share is the step: their weights are stacked and `torch.func.vmap` runs the one architecture over
all of them at once (a batched convolution is one grouped convolution), so a step launches the
kernels of one net, not one net per job. Output layers, sized by each job's columns, are padded
with zero rows to the widest, and batches with zero rows to the longest (nets with batch norm,
whose batch statistics padding would change, step the batches of each length together instead);
the padding is masked out of the loss and changes no gradient. Each job ends as its own run
directory, as train.py leaves one: config.yaml, checkpoints/best.ckpt, metrics.json, TensorBoard.

The same batches as alone: each job draws its shuffles and augmentations from a random stream of
its own, which starts where its own run's would (seeded, its net built) and moves on as its own
run's does (each epoch's data loaders, each batch's augmentations). Without dropout, which vmap
draws for all the jobs at once, a job sees exactly the batches and flips of its own run, and its
losses match its own run's to float precision.

Ctrl-C or SIGTERM stops every job. Each keeps its best weights so far in checkpoints/best.ckpt (the
finished ones are complete runs); packed runs are not resumed, and `resume=` refuses them.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf, open_dict
from torch import nn
from torch.func import functional_call, vmap
from tqdm import tqdm

from keypoints.core.errors import DataError, RunError
from keypoints.specialists.pipeline import compose, one_process
from keypoints.training import fit
from keypoints.training.callbacks import EarlyStopping, Judge
from keypoints.training.faults import divergence
from keypoints.training.hardware import keep_freed_memory
from keypoints.training.module import TrainingLoss

log = logging.getLogger(__name__)
# What one step runs for all the jobs, and so must be the same in each (a specialist's overrides may change it).
SHARED = ("net", "loss.criterion", "trainer.accelerator", "trainer.devices", "trainer.precision")


def specialist(cfg: DictConfig) -> str:
    """The job's specialist, by name: the one place here that reads which one it is (keypoints.training.fit
    reads its columns, flip_indices and overrides from the keypoint set, as for any run)."""
    return cfg.specialist


def jobs(overrides: list[str]) -> list[tuple[DictConfig, list[str]]]:
    """The jobs `python train.py -m OVERRIDES` would run, in its order, as (config, job overrides): each
    config as its run would start (keypoints.training.fit.configure), with its multirun directory as
    paths.output_dir, and packed=true; refused where they differ in what one step runs for all."""
    parsed = OverridesParser.create().parse_overrides(overrides)
    cfg = compose([o.input_line for o in parsed if not o.is_sweep_override()])
    one_process(cfg)
    params = [f"{k}={v}" for k, v in (cfg.hydra.sweeper.params or {}).items()]
    fixed = OverridesParser.create().parse_overrides([*params, *overrides, f"hydra.sweep.dir={cfg.hydra.sweep.dir}"])
    (batch,) = BasicSweeper.split_arguments(fixed, None)  # Hydra's own split of a sweep into jobs
    found = []
    for num, job in enumerate(batch):
        cfg = compose([*job, f"hydra.job.num={num}"])
        out = Path(cfg.hydra.sweep.dir, cfg.hydra.sweep.subdir).absolute()
        with open_dict(cfg):
            del cfg["hydra"]
            cfg.paths.output_dir, cfg.packed = str(out), True
        found.append((fit.configure(cfg), job))
    one_device(found[0][0].trainer)
    for cfg, _ in found[1:]:
        for key in SHARED:
            if OmegaConf.select(cfg, key) != OmegaConf.select(found[0][0], key):
                raise DataError(
                    f"packed: {key} of {Path(cfg.paths.output_dir).name} differs from "
                    f"{Path(found[0][0].paths.output_dir).name}'s; one step runs every job, so they must share "
                    f"it (or set packed=false)"
                )
    return found


def one_device(trainer: DictConfig) -> None:
    """Refused before any run directory is claimed: several devices, and a precision that needs a gradient scaler."""
    devices = trainer.devices
    if "ddp" in str(trainer.get("strategy") or "") or (len(devices) if OmegaConf.is_list(devices) else devices) not in (
        1,
        "1",
    ):
        raise DataError(
            f"packed specialists train in one process on one device (trainer.devices={devices}, "
            f"trainer.strategy={trainer.get('strategy')}); use trainer=cpu or trainer=gpu"
        )
    if str(trainer.precision).startswith("16"):
        raise DataError(f"packed: trainer.precision={trainer.precision} needs a gradient scaler; use 32 or bf16-mixed")


def padded(t: torch.Tensor, shape) -> torch.Tensor:
    """`t` with zeros appended along each dimension up to `shape`."""
    pad = [p for have, want in zip(reversed(t.shape), reversed(shape)) for p in (0, want - have)]
    return F.pad(t, pad) if any(pad) else t


class Stream:
    """A random stream of its own: inside `with stream:` torch's generators (the CPU's, and the job's
    GPU's) go on from where this stream left off; outside, the process's own stream is undisturbed."""

    def __init__(self, device: torch.device):
        self.gpu = device if device.type == "cuda" else None
        self.state = self._get()

    def _get(self):
        return torch.get_rng_state(), self.gpu and torch.cuda.get_rng_state(self.gpu)

    def _set(self, state) -> None:
        torch.set_rng_state(state[0])
        if self.gpu:
            torch.cuda.set_rng_state(state[1], self.gpu)

    def __enter__(self):
        self.outer = self._get()
        self._set(self.state)

    def __exit__(self, *exc):
        self.state = self._get()
        self._set(self.outer)


class Job:
    """One job, built and started as its own run would be, trained a batch at a time by `train`."""

    def __init__(self, cfg: DictConfig, overrides: list[str]):
        self.cfg = cfg
        self.name, self.out, self.max_epochs = specialist(cfg), Path(cfg.paths.output_dir), self.cfg.trainer.max_epochs
        self.datamodule, self.module, self.trainer = fit.start(self.cfg, fresh=True)
        (self.out / ".hydra").mkdir()
        OmegaConf.save(OmegaConf.create(overrides), self.out / ".hydra" / "overrides.yaml")  # as Hydra records a job
        device = self.trainer.strategy.root_device
        self.stream = Stream(device)  # where its own run's training would start drawing
        self.datamodule.trainer = self.trainer  # its rows on the training device, as in its own run
        self.datamodule.setup("fit")
        self.module.to(device)
        self.loader, self.valid_loader = self.datamodule.train_dataloader(), self.datamodule.val_dataloader()
        self.params, self.buffers = dict(self.module.net.named_parameters()), dict(self.module.net.named_buffers())
        self.optimizer = self.module.optimizer(self.params.values())
        self.interval = self.module.scheduler and self.module.scheduler["interval"]
        if self.interval:  # a per-batch schedule (one-cycle) spans every step of the run
            steps = {"total_steps": self.max_epochs * len(self.loader)} if self.interval == "step" else {}
            self.scheduler = self.module.scheduler["scheduler"](self.optimizer, **steps)
        self.stopper = next((c for c in self.trainer.callbacks if isinstance(c, EarlyStopping)), None)
        # Its run's early stopping judges its epochs; without one, a judge that never stops (as ModelCheckpoint
        # judges best.ckpt) picks the epochs to checkpoint.
        self.judge = self.stopper or Judge("valid_loss", patience=math.inf, check_finite=False)
        self.io, saver = self.trainer.strategy.checkpoint_io, self.trainer.checkpoint_callback
        self.checkpoint = saver and Path(saver.dirpath) / f"{saver.filename}{saver.FILE_EXTENSION}"
        self.epoch = self.step = self.rows = 0
        self.left, self.batches, self.loss = len(self.loader), None, 0.0
        self.history, self.done = [], None

    def remaining(self) -> int:
        """Steps to its last epoch's end."""
        return (self.max_epochs - self.epoch - 1) * len(self.loader) + self.left

    def next_batch(self):
        """Its next training batch, augmented, drawn from its own stream; after the last, a new epoch."""
        with self.stream:
            if self.batches is None:
                self.batches = iter(self.loader)
                self._log_lr()
            x, y, mask = next(self.batches)
            for transform in self.module.augment:
                x, y, mask = transform(x, y, mask)
        return x, y, mask

    def stepped(self, loss: torch.Tensor, rows: int) -> None:
        """Its optimiser's step after the packed backward, and the epoch's end after its last batch."""
        self.optimizer.step()
        self.optimizer.zero_grad()
        if self.interval == "step":
            self.scheduler.step()
        self.module.on_train_batch_end(None, None, self.step)  # the weight average, where there is one
        self.step, self.left = self.step + 1, self.left - 1
        self.loss, self.rows = self.loss + loss.detach() * rows, self.rows + rows  # summed on the device: no sync
        if not self.left:
            self._end_epoch()

    def _end_epoch(self) -> None:
        valid_loss = self._validate()
        entry = {
            "epoch": self.epoch,
            "train_loss": float(self.loss / self.rows),
            "valid_loss": float(valid_loss),
            "valid_rmse_px": float(valid_loss.sqrt() * self.module.px_per_unit),
        }
        self.history.append(entry)
        self.trainer.logger.log_metrics({k: v for k, v in entry.items() if k != "epoch"}, step=self.epoch)
        stop = self._judge(entry)
        if self.interval == "epoch":
            self.scheduler.step()
        self.epoch, self.left, self.batches, self.loss, self.rows = self.epoch + 1, len(self.loader), None, 0.0, 0
        if stop:
            self.done = f"stopped early after epoch {self.epoch - 1}"
        elif self.epoch >= self.max_epochs:
            self.done = f"ran its {self.max_epochs} epochs"

    def _validate(self) -> torch.Tensor:
        """The masked MSE over its validation rows, as its module's validation measures it."""
        self.module.eval()
        with self.stream, torch.inference_mode(), self.trainer.precision_plugin.forward_context():
            for i, batch in enumerate(self.valid_loader):
                self.module.validation_step(batch, i)
            mse = self.module.valid_mse.compute()
        self.module.valid_mse.reset()
        self.module.train()
        return mse

    def _judge(self, entry: dict) -> bool:
        """Whether it stops early; an epoch that improved has its weights kept by the judge, and checkpointed."""
        stop = self.judge.verdict(entry[self.judge.monitor], self.epoch, self.step, self.module)
        if self.judge.best_epoch == self.epoch and self.checkpoint:
            self.io.save_checkpoint(
                {"state_dict": self.judge.best_weights, "epoch": self.epoch, "global_step": self.step, "packed": True},
                self.checkpoint,
            )
        return stop

    def _log_lr(self) -> None:
        """The epoch's learning rate and momentum against the optimiser step, as LearningRateMonitor logs them."""
        group, name = self.optimizer.param_groups[0], f"lr-{type(self.optimizer).__name__}"
        momentum = group["betas"][0] if "betas" in group else group.get("momentum")
        self.trainer.logger.log_metrics(
            {name: group["lr"], **({f"{name}-momentum": momentum} if momentum is not None else {})}, step=self.step
        )

    def end(self, start_time: float) -> dict | None:
        """Restore its best weights and write its run's metrics.json (keypoints.training.fit.finish); None where no
        epoch had finite losses (error.txt says so)."""
        diverged = divergence(self.history)
        if self.judge.best_epoch is None:
            message = (
                f"{self.name}: {diverged}, before any epoch with finite losses: nothing to keep (a lower optimizer.lr?)"
            )
            (self.out / "error.txt").write_text(message + "\n")
            log.error(message)
            self.trainer.logger.finalize("failed")
            return None
        if self.stopper:
            self.module.load_state_dict(self.judge.best_weights)
        if diverged:
            log.warning(f"{self.name}: {diverged}: training stopped; epoch {self.judge.best_epoch}'s weights restored")
        self.io.teardown()  # best.ckpt on disk now
        best_epoch = self.judge.best_epoch if self.stopper else len(self.history) - 1
        return fit.finish(self.trainer, self.module, self.datamodule, self.history, best_epoch, self.epoch, start_time)


class Pack:
    """The jobs' nets as one: one architecture, run by vmap over their stacked weights, its output
    layer as wide as the widest job's."""

    def __init__(self, jobs: list[Job]):
        first = jobs[0]
        self.precision = first.trainer.precision_plugin
        self.width = max(len(job.datamodule.columns) for job in jobs)
        with torch.device("meta"):  # the shapes and the code; every tensor comes from the jobs
            self.template = instantiate(first.cfg.net, n_outputs=self.width).train()
        self.shapes = {k: v.shape for k, v in [*self.template.named_parameters(), *self.template.named_buffers()]}
        # What training minimises, as each job's run defines it (its augmentation is drawn before, from its own
        # stream); in the net's default memory format, which a vmapped batch keeps.
        eager = first.module.training_loss.eager
        self.loss = TrainingLoss(self.template, [], eager.criterion, torch.contiguous_format, eager.size)
        # Batch norm's statistics would count padded rows: batches of each length are then stepped together.
        self.pad_rows = not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in self.template.modules())
        self.losses = vmap(self._loss, randomness="different")  # dropout: each job its own masks

    def _loss(self, params, buffers, x, y, mask):
        return functional_call(
            self.loss, {f"net.{k}": v for d in (params, buffers) for k, v in d.items()}, (x, y, mask)
        )

    def step(self, jobs: list[Job], batches: list[tuple]) -> list[torch.Tensor]:
        """Forward and backward for every job on its batch, in one pass where possible; their losses."""
        groups = {}
        for i, batch in enumerate(batches):
            groups.setdefault(0 if self.pad_rows else len(batch[0]), []).append(i)
        losses = [None] * len(jobs)
        for members in groups.values():
            rows = max(len(batches[i][0]) for i in members)
            x, y, mask = (
                torch.stack([padded(batches[i][n], (rows, *shape)) for i in members])
                for n, shape in enumerate([batches[members[0]][0].shape[1:], [self.width], [self.width]])
            )
            params, buffers = (
                {
                    k: torch.stack([padded(getattr(jobs[i], kind)[k], self.shapes[k]) for i in members])
                    for k in getattr(jobs[members[0]], kind)
                }
                for kind in ("params", "buffers")
            )
            with self.precision.forward_context():
                for i, loss in zip(members, self.losses(params, buffers, x, y, mask)):
                    losses[i] = loss
            with torch.no_grad():  # batch norm's running statistics, updated in the stack, back to each job
                for j, i in enumerate(members):
                    for k, b in buffers.items():
                        jobs[i].buffers[k].copy_(b[j])
        torch.stack(losses).sum().backward()  # each job's weights get the gradient of its own loss
        return losses


class Interrupted(KeyboardInterrupt):
    """SIGTERM, which ends the packed jobs as Ctrl-C does."""


def _sigterm(signum, frame):
    raise Interrupted()


def train(overrides: list[str]) -> dict[Path, dict | None]:
    """Train the jobs of `python train.py -m OVERRIDES` packed; return each run directory's metrics
    (None: failed)."""
    start_time = time.time()
    configs = jobs(overrides)
    if configs[0][0].keep_freed_memory:
        keep_freed_memory()
    members = [Job(cfg, job) for cfg, job in configs]
    pack = Pack(members)
    print(
        f"packed: {len(members)} jobs in one step on {members[0].trainer.strategy.root_device} "
        f"({members[0].trainer.precision}): "
        + ", ".join(f"{m.name} ({len(m.datamodule.train_set)} rows, {m.max_epochs} epochs)" for m in members),
        flush=True,
    )
    results, active = {}, list(members)
    bar = tqdm(
        total=max(m.remaining() for m in members),
        unit="step",
        dynamic_ncols=True,
        disable=not members[0].cfg.trainer.enable_progress_bar,
    )
    previous = signal.signal(signal.SIGTERM, _sigterm)
    try:
        while active:
            batches = [m.next_batch() for m in active]
            for m, loss, batch in zip(active, pack.step(active, batches), batches):
                m.stepped(loss, len(batch[0]))
            bar.update()
            for m in [m for m in active if m.done]:
                results[m.out] = metrics = m.end(start_time)
                if metrics:
                    tqdm.write(
                        f"{m.name}: {m.done}; best epoch {metrics['best_epoch']}: valid RMSE "
                        f"{metrics['valid_rmse_px']:.3f} px ({m.out})"
                    )
            if any(m.done for m in active):
                active = [m for m in active if not m.done]
                bar.total = bar.n + max((m.remaining() for m in active), default=0)
            bar.set_postfix_str(" ".join(f"{m.name} {m.epoch}/{m.max_epochs}" for m in active), refresh=False)
    except KeyboardInterrupt as stop:
        name = "SIGTERM" if isinstance(stop, Interrupted) else "Ctrl-C"
        bar.close()
        kept = lambda m: (
            f"best weights so far in {m.checkpoint}"
            if m.judge.best_epoch is not None and m.checkpoint
            else "nothing kept (" + ("no epoch ended" if m.checkpoint else "no checkpoint callback") + ")"
        )
        log.warning(
            f"{name}: packed training stopped. "
            + "; ".join(f"{m.name}: epoch {m.epoch} of {m.max_epochs}, {kept(m)}" for m in active)
            + ". Packed runs are not resumed: train them again with python -m keypoints.specialists.packed "
            + "(the specialists of a trained base net, init_from=...) into another hydra.sweep.dir"
            + (f"; finished: {', '.join(p.name for p in results)}" if results else "")
        )
        raise SystemExit(128 + (signal.SIGTERM if name == "SIGTERM" else signal.SIGINT)) from None
    finally:
        signal.signal(signal.SIGTERM, previous)
        bar.close()
        for m in active:  # interrupted or failed: what each has reached is kept
            m.io.teardown()
    failed = [out.name for out, metrics in results.items() if metrics is None]
    print(
        f"{len(members)} jobs packed in {members[0].out.parent}: {len(members) - len(failed)} completed, "
        f"{len(failed)} failed{' (' + ', '.join(failed) + ')' if failed else ''}; {time.time() - start_time:.0f} s"
    )
    return {m.out: results[m.out] for m in members}


def main(argv: list[str] | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="[%(name)s] %(message)s")
    for name in ("pytorch_lightning", "lightning_fabric"):  # each job's Trainer and seed would say so
        logging.getLogger(name).setLevel(logging.WARNING)
    argv = sys.argv[1:] if argv is None else argv
    if {"-h", "--help"} & set(argv):
        print(__doc__)
        return
    try:
        results = train(argv)
    except (DataError, RunError) as e:
        sys.exit(f"error: {e}")
    if None in results.values():
        sys.exit(1)


if __name__ == "__main__":
    main()

"""What the machine computes fast: the default precision (`${fastest_precision:ACCELERATOR}` in
conf/trainer), and memory that training steps reuse instead of faulting in anew."""

from __future__ import annotations

import ctypes
from pathlib import Path

M_TRIM_THRESHOLD, M_MMAP_MAX = -1, -4  # glibc's mallopt parameters (malloc.h)


def fastest_precision(accelerator: str) -> str:
    """bf16-mixed where the device has native bf16 (GPU: compute capability 8+ such as A100/H100;
    CPU: AVX512-BF16 or AMX), else 32: bf16 emulated in software is slower than fp32."""
    import torch  # here, not at import: resolvers are registered before `train.py --help` answers

    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        native = torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8
    elif accelerator in ("cpu", "auto"):
        native = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    else:
        native = False
    return "bf16-mixed" if native else "32"


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo does not exist."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    return {flag for line in text.splitlines() if line.startswith("flags") for flag in line.split(":", 1)[1].split()}


def keep_freed_memory() -> bool:
    """Have glibc's malloc keep freed memory for reuse instead of handing it back to the system.

    By default glibc maps every large block (activations, gradients) afresh and unmaps it when it is
    freed, so each training step page-faults its memory in again: that was a third of net2's time on
    this CPU (BENCHMARKS.md). With mmap and trimming off, freed blocks are reused, and the process
    keeps its peak memory. False where the C library is not glibc (macOS, Windows, musl): their
    allocators are left as they are."""
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):
        return False
    return mallopt(M_MMAP_MAX, 0) == 1 and mallopt(M_TRIM_THRESHOLD, 2**31 - 1) == 1


def spread_over_gpus(cfg) -> None:
    """In a multirun with trainer=gpu and one device per job, job n takes GPU n mod the GPU count."""
    import torch
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if cfg.trainer.accelerator != "gpu" or cfg.trainer.devices != 1 or not HydraConfig.initialized():
        return
    hydra = HydraConfig.get()
    if hydra.mode == RunMode.MULTIRUN and torch.cuda.device_count() > 1:
        cfg.trainer.devices = [hydra.job.num % torch.cuda.device_count()]

"""What the machine computes fast: the default precision, `${fastest_precision:ACCELERATOR}` in conf/trainer."""
from __future__ import annotations

from pathlib import Path


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

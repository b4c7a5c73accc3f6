import resource
import subprocess
import sys

import pytest
from conftest import ROOT, compose

from keypoints.training import hardware


@pytest.mark.parametrize(
    "flags, expected",
    [
        ({"avx512f", "avx512_bf16"}, "bf16-mixed"),
        ({"amx_bf16"}, "bf16-mixed"),
        ({"avx2", "avx512f"}, "32"),
        (set(), "32"),
    ],
)
def test_cpu_trainer_defaults_to_bf16_only_where_the_cpu_has_it(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert compose().trainer.precision == expected
    assert compose("trainer.precision=32").trainer.precision == 32


def test_gpu_trainer_without_a_gpu_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert compose("trainer=gpu").trainer.precision == "32"


def test_keep_freed_memory_reuses_large_blocks_without_page_faults():
    # In a fresh process, as train.py runs: a test session's heap has been through much else.
    code = """
import resource, sys, torch
from keypoints.training import hardware
if not hardware.keep_freed_memory():
    sys.exit(3)

def faults_to_fill_100_mb():
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(100_000_000 // 4)  # allocated, written, freed
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before

print(*(faults_to_fill_100_mb() for _ in range(20)))
"""
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode == 3:
        pytest.skip("not glibc")
    assert proc.returncode == 0, proc.stderr
    # glibc's default maps each such block anew: every page faults in again, every time. Kept, the
    # block faults in while the heap settles (twice here, up to seven times on a busy host), then never.
    full = 100_000_000 / resource.getpagesize()
    faults = [int(n) for n in proc.stdout.split()]
    assert all(n < full / 10 for n in faults[10:]), faults

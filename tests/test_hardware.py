import pytest

from conftest import compose
from keypoints import hardware


@pytest.mark.parametrize("flags, expected", [({"avx512f", "avx512_bf16"}, "bf16-mixed"),
                                             ({"amx_bf16"}, "bf16-mixed"),
                                             ({"avx2", "avx512f"}, "32"), (set(), "32")])
def test_cpu_trainer_defaults_to_bf16_only_where_the_cpu_has_it(monkeypatch, flags, expected):
    monkeypatch.setattr(hardware, "cpu_flags", lambda: flags)
    assert compose().trainer.precision == expected
    assert compose("trainer.precision=32").trainer.precision == 32


def test_gpu_trainer_without_a_gpu_falls_back_to_fp32(monkeypatch):
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert compose("trainer=gpu").trainer.precision == "32"

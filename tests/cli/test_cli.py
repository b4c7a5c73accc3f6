"""The kfkd command: its subcommands, help without heavy imports, and the debug presets."""

import subprocess
import sys

import pytest
from conftest import ROOT, TINY

from keypoints import cli


def kfkd(*args: str, cwd=ROOT) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "keypoints", *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_help_lists_every_command_without_importing_torch_or_lightning():
    code = "import sys; from keypoints import cli; cli.main(['--help']); print(sorted({'torch', 'pytorch_lightning'} & set(sys.modules)))"
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert all(f"  {name} " in proc.stdout for name in cli.COMMANDS)
    assert proc.stdout.strip().endswith("[]")


def test_a_mistyped_command_is_one_line_with_the_nearest_one():
    proc = kfkd("evalute", "RUN")
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr == "error: kfkd evalute: no such command; did you mean kfkd evaluate?\n"


@pytest.mark.parametrize("name", sorted(set(cli.COMMANDS) - {"train", "search"}))
def test_each_command_has_its_own_help(name):
    proc = kfkd(name, "--help")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("usage: kfkd") or proc.stdout.startswith(f"kfkd {name}") or "kfkd" in proc.stdout


def test_search_runs_a_multirun_with_the_search_preset_unless_another_is_named(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "train_task", lambda: seen.append(sys.argv[1:]))
    cli.main(["search", "data=kaggle", "-m"])
    cli.main(["search", "hparams_search=other", "seed=1"])
    cli.main(["train", "net=mlp"])
    assert seen == [["-m", "hparams_search=fast", "data=kaggle"], ["-m", "hparams_search=other", "seed=1"], ["net=mlp"]]


@pytest.mark.slow
@pytest.mark.parametrize("preset", ["fdr", "limit"])
def test_a_debug_preset_trains_a_few_batches_into_outputs_debug(preset, tiny_data, tmp_path):
    proc = kfkd("train", f"debug={preset}", "data=kaggle", f"data.dir={tiny_data}", *TINY, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (run,) = (tmp_path / "outputs" / "debug").iterdir()
    assert (run / "metrics.json").is_file() and (run / "train.log").is_file()
    assert (run / "checkpoints" / "best.ckpt").is_file() == (preset == "limit")  # fast_dev_run saves none


def test_verbose_is_hydras_verbose(monkeypatch):
    seen = []
    monkeypatch.setattr(cli, "train_run", lambda: seen.append(sys.argv[1:]))
    cli.main(["train", "-v", "seed=1"])
    assert seen == [["seed=1", "hydra.verbose=true"]]

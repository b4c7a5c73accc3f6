import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from keypoints import keypointset

ROOT = Path(__file__).resolve().parents[1]
REALFACES = ROOT.parent / "shared" / "data" / "realfaces"
KAGGLE15 = keypointset.load("kaggle15")  # the default keypoint set: Kaggle's 15, in its order


@pytest.fixture(autouse=True)
def cpu_unless_marked_cuda(request, monkeypatch):
    """Tests not marked `cuda` run as on a machine without a GPU, in this process and in the commands
    they start: on a GPU host too they compare results in the precision they were computed in (the CPU's),
    never a CPU run against the GPU's TF32 or bf16 arithmetic. tests/test_cuda.py covers the GPU."""
    if request.node.get_closest_marker("cuda") is None:
        import torch
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small Kaggle-format dataset of synthetic faces (80 training rows, 12 test images)."""
    from keypoints import synthetic
    return synthetic.generate(tmp_path_factory.mktemp("tiny"), n_train=80, n_test=12, seed=1)


@pytest.fixture
def realfaces() -> Path:
    if not (REALFACES / "training.csv.gz").is_file():
        pytest.skip(f"{REALFACES} is absent")
    return REALFACES


def compose(*overrides: str):
    """The config `python train.py OVERRIDES` would run, composed by Hydra's API."""
    from hydra import compose as hydra_compose, initialize_config_dir
    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return hydra_compose("config", overrides=list(overrides))


def run_train(cwd: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python train.py OVERRIDES` in `cwd`, quietly, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run([sys.executable, str(ROOT / "train.py"), "trainer.enable_progress_bar=false", *overrides],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


TINY = ("net=cnn", "net.channels=[4,4,4]", "net.hidden=8", "trainer.enable_progress_bar=false")
# The residual nets, as small: an 8-channel stride-2 stem (48x48), stages at 48 and 24 pixels.
TINY_BACKBONE = ("net.backbone.stem=[8]", "net.backbone.channels=[8,16]", "net.backbone.blocks=[1,1]")
TINY_RESNET = ("net=resnet", *TINY_BACKBONE)
TINY_HEATMAP = ("net=heatmap", *TINY_BACKBONE, "net.width=8")


def make_run(directory, data_dir, specialist="all", seed=0, bias=None, net_overrides=TINY):
    """A run directory as train.py leaves it (config.yaml, checkpoints/best.ckpt), with an untrained net
    (`net_overrides`: its settings)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from keypoints.nets import output_layer

    cfg = compose("data=kaggle", f"data.dir={data_dir}", f"specialist={specialist}", f"paths.output_dir={directory}",
                  f"paths.cache_dir={directory.parent}/cache", *net_overrides)
    torch.manual_seed(seed)
    net = instantiate(cfg.net, n_outputs=len(keypointset.specialist(cfg).columns))
    if bias is not None:
        with torch.no_grad():
            net.get_submodule(output_layer(net)).bias.fill_(bias)
    (directory / "checkpoints").mkdir(parents=True)
    torch.save({"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, directory / "checkpoints" / "best.ckpt")
    OmegaConf.save(cfg, directory / "config.yaml", resolve=True)
    return directory


@pytest.fixture
def sweep(tiny_data, tmp_path):
    """A sweep directory holding an `all` run and an `eyes` run."""
    make_run(tmp_path / "sweep" / "all", tiny_data, "all", seed=0)
    make_run(tmp_path / "sweep" / "0_eyes", tiny_data, "eyes", seed=1)
    return tmp_path / "sweep"


# Services: a Slurm cluster and a PostgreSQL server (`eval "$(.ci/services start)"` starts both here).
# Their tests are marked `slurm` and `postgres`; where a service is absent they are skipped, saying so,
# unless KFKD_REQUIRE_SERVICES=1 (as in CI), which makes that a failure.
START = 'eval "$(.ci/services start)"'


def unavailable(why: str):
    if os.environ.get("KFKD_REQUIRE_SERVICES") == "1":
        pytest.fail(f"{why} (KFKD_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(f"{why}; start it with {START}")


@pytest.fixture
def slurm():
    """A Slurm cluster with an idle or working node; its jobs that a test left running are cancelled after it."""
    try:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        unavailable(f"no Slurm cluster answers here ({e})")
    if nodes.returncode or not {"idle", "mixed", "allocated"} & set(nodes.stdout.split()):
        unavailable(f"no Slurm node is up here ({(nodes.stderr or nodes.stdout or 'none').strip().splitlines()[0][:200]})")
    before = set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split())
    yield
    left = set(subprocess.run(["squeue", "-h", "-o", "%i"], capture_output=True, text=True).stdout.split()) - before
    if left:
        subprocess.run(["scancel", *left])


@pytest.fixture
def postgres():
    """The URL of a fresh database of the PostgreSQL server in $KFKD_POSTGRES, dropped after the test."""
    url = os.environ.get("KFKD_POSTGRES")
    if not url:
        unavailable("no PostgreSQL server here (KFKD_POSTGRES is not set)")
    try:
        import psycopg
    except ImportError:
        unavailable("psycopg is not installed: pip install -e '.[cluster]'")
    try:
        server = psycopg.connect(url, autocommit=True, connect_timeout=5)
    except psycopg.OperationalError as e:
        unavailable(f"the PostgreSQL server of KFKD_POSTGRES does not answer: {str(e).strip()[:200]}")
    name = f"kfkd_test_{uuid.uuid4().hex[:12]}"
    server.execute(f"CREATE DATABASE {name}")
    yield url.rsplit("/", 1)[0] + "/" + name
    server.execute(f"DROP DATABASE {name} WITH (FORCE)")
    server.close()


SERVICES = ("slurm", "postgres")


def pytest_report_teststatus(report, config):
    """Tests that ran against Slurm or PostgreSQL count apart in the summary line: "3 passed on slurm"."""
    services = [m for m in SERVICES if m in report.keywords]
    if services and report.when == "call" and report.passed:
        return f"passed on {'+'.join(services)}", ".", "PASSED"

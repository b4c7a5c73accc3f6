import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from keypoints.core import keypointset

ROOT = Path(__file__).resolve().parents[1]
REALFACES = ROOT.parent / "shared" / "data" / "realfaces"
KAGGLE15 = keypointset.load("kaggle15")  # the default keypoint set: Kaggle's 15, in its order
# A KeypointsDataModule's settings besides its folder and columns, for tests that build one directly.
KW = dict(
    size=96,
    batch_size=4,
    valid_fraction=0.25,
    split_seed=0,
    cache_dir=None,
    generate=None,
    groups=None,
    exclude_groups=None,
)


@pytest.fixture(autouse=True)
def cpu_unless_marked_cuda(request, monkeypatch):
    """Tests not marked `cuda` run as on a machine without a GPU, in this process and in the commands
    they start: on a GPU host too they compare results in the precision they were computed in (the CPU's),
    never a CPU run against the GPU's TF32 or bf16 arithmetic. tests/training/test_cuda.py covers the GPU."""
    if request.node.get_closest_marker("cuda") is None:
        import torch

        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
        monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    """A small Kaggle-format dataset of synthetic faces (80 training rows, 12 test images)."""
    from keypoints.data import synthetic

    return synthetic.generate(tmp_path_factory.mktemp("tiny"), n_train=80, n_test=12, seed=1)


@pytest.fixture
def realfaces() -> Path:
    if not (REALFACES / "training.csv.gz").is_file():
        pytest.skip(f"{REALFACES} is absent")
    return REALFACES


@pytest.fixture(scope="session")
def realfaces_cache(tmp_path_factory) -> Path:
    """One paths.cache_dir for the tests that train on realfaces: its CSVs' pixels are parsed once (about
    10 s on a 2-core host) and read back from the cache by the runs and tests that follow."""
    return tmp_path_factory.mktemp("realfaces_cache")


def compose(*overrides: str):
    """The config `python train.py OVERRIDES` would run, composed by Hydra's API."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(ROOT / "conf")):
        return hydra_compose("config", overrides=list(overrides))


def run_train(cwd: Path, *overrides: str, check: bool = True) -> subprocess.CompletedProcess:
    """`python train.py OVERRIDES` in `cwd`, quietly, as a user runs it."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "trainer.enable_progress_bar=false", *overrides],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


TINY = ("net=cnn", "net.channels=[4,4,4]", "net.hidden=8", "trainer.enable_progress_bar=false")
# The residual nets, as small: an 8-channel stride-2 stem (48x48), stages at 48 and 24 pixels.
TINY_BACKBONE = ("net.backbone.stem=[8]", "net.backbone.channels=[8,16]", "net.backbone.blocks=[1,1]")
TINY_RESNET = ("net=resnet", *TINY_BACKBONE)
TINY_HEATMAP = ("net=heatmap", *TINY_BACKBONE, "net.width=8")


def make_run(directory, data_dir, specialist="all", seed=0, bias=None, net_overrides=TINY, data=("data=kaggle",)):
    """A run directory as train.py leaves it (config.yaml, checkpoints/best.ckpt), with an untrained net
    (`net_overrides`: its settings) and `data`'s settings (e.g. data=coco keypoints=ibug68)."""
    import torch
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    from keypoints.models.nets import output_layer

    cfg = compose(
        *data,
        f"data.dir={data_dir}",
        f"specialist={specialist}",
        f"paths.output_dir={directory}",
        f"paths.cache_dir={directory.parent}/cache",
        *net_overrides,
    )
    torch.manual_seed(seed)
    net = instantiate(cfg.net, n_outputs=len(keypointset.specialist(cfg).columns))
    if bias is not None:
        with torch.no_grad():
            net.get_submodule(output_layer(net)).bias.fill_(bias)
    (directory / "checkpoints").mkdir(parents=True)
    torch.save(
        {"state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, directory / "checkpoints" / "best.ckpt"
    )
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
def slurm(monkeypatch):
    """A Slurm cluster with an idle or working node; its jobs that a test left running are cancelled after it.
    The sweeps the test starts ask sacct each second, and wait 2 s, not 15, for the result of a job that
    Slurm says has ended: the results are on this machine's disk (keypoints/sweeps/cluster.py)."""
    monkeypatch.setenv("KFKD_SLURM_POLL_S", "1")
    monkeypatch.setenv("KFKD_SLURM_RESULT_GRACE_S", "2")
    try:
        nodes = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired) as e:
        unavailable(f"no Slurm cluster answers here ({e})")
    # completing: up, and still cleaning up after a job that the previous test cancelled or killed
    if nodes.returncode or not {"idle", "mixed", "allocated", "completing"} & set(nodes.stdout.split()):
        unavailable(
            f"no Slurm node is up here ({(nodes.stderr or nodes.stdout or 'none').strip().splitlines()[0][:200]})"
        )
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
    with server:
        server.execute(f"CREATE DATABASE {name}")
    yield url.rsplit("/", 1)[0] + "/" + name
    with psycopg.connect(url, autocommit=True, connect_timeout=5) as server:  # a test may have restarted the server
        server.execute(f"DROP DATABASE {name} WITH (FORCE)")


SERVICES = ("slurm", "postgres")


def pytest_report_teststatus(report, config):
    """Tests that ran against Slurm or PostgreSQL count apart in the summary line: "3 passed on slurm"."""
    services = [m for m in SERVICES if m in report.keywords]
    if services and report.when == "call" and report.passed:
        return f"passed on {'+'.join(services)}", ".", "PASSED"


# --- tiny COCO keypoints datasets (keypoints/data/coco.py), made here: the tests need no ../shared ----------


def write_coco(directory: Path, photos: list, points, boxes, names: list[str], people: list[int]) -> Path:
    """`photos` (uint8 arrays) as images/<i>.png and annotations.json: one face per photo, its keypoints
    (K, 2) with v = 0 where NaN, its box (left, top, right, bottom), its image's `person`."""
    import json

    import numpy as np
    from PIL import Image

    (directory / "images").mkdir(parents=True, exist_ok=True)
    images, annotations = [], []
    for i, (photo, p, box, person) in enumerate(zip(photos, points, boxes, people)):
        Image.fromarray(photo).save(directory / "images" / f"{i}.png")
        images.append(
            {
                "id": i + 1,
                "file_name": f"images/{i}.png",
                "width": photo.shape[1],
                "height": photo.shape[0],
                "person": int(person),
            }
        )
        triples = [[0.0, 0.0, 0] if np.isnan(x) else [round(float(x), 2), round(float(y), 2), 2] for x, y in p]
        left, top, right, bottom = map(float, box)
        annotations.append(
            {
                "id": i + 1,
                "image_id": i + 1,
                "category_id": 1,
                "iscrowd": 0,
                "bbox": [left, top, right - left, bottom - top],
                "keypoints": [v for t in triples for v in t],
                "num_keypoints": sum(t[2] > 0 for t in triples),
            }
        )
    categories = [{"id": 1, "name": "face", "keypoints": names, "skeleton": []}]
    (directory / "annotations.json").write_text(
        json.dumps({"images": images, "annotations": annotations, "categories": categories})
    )
    return directory


@pytest.fixture(scope="session")
def tiny_coco(tiny_data, tmp_path_factory) -> Path:
    """40 synthetic faces (kaggle15's names, many keypoints unlabelled, as Kaggle's) each set into a
    photo of its own at its own place, boxed by its 96x96 square; 10 people of 4 photos each."""
    import numpy as np

    from keypoints.data.kaggle import read_csv

    frame, faces = read_csv(tiny_data / "training.csv", None, 96)
    rng = np.random.default_rng(0)
    photos, points, boxes = [], [], []
    for face, row in zip(faces[:40], frame[KAGGLE15.columns].to_numpy()[:40]):
        left, top = rng.integers(10, 40, 2)
        photos.append(np.pad(face, ((top, 150 - 96 - top), (left, 140 - 96 - left)), mode="edge"))
        points.append(row.reshape(-1, 2) + (left, top))
        boxes.append((left, top, left + 96, top + 96))
    return write_coco(
        tmp_path_factory.mktemp("coco") / "tiny", photos, points, boxes, KAGGLE15.names, [i // 4 for i in range(40)]
    )


def face68(rng, centre=(60.0, 62.0), scale=1.0, angle=0.0):
    """The 68 iBUG points of a drawn, mirror-symmetric face (jaw, brows, nose, eyes, lips), 96 px across
    at scale 1, turned by `angle` and placed at `centre`, with a little noise."""
    import numpy as np

    t = np.pi - np.arange(17) * np.pi / 16
    jaw = np.stack([48 + 38 * np.cos(t), 40 + 45 * np.sin(t)], 1)
    brows = [(20 + 5.5 * k, 28 - 3 * np.sin(np.pi * k / 4)) for k in range(5)]
    brows += [(96 - x, y) for x, y in brows[::-1]]
    nose = [(48, 36 + 6 * k) for k in range(4)] + [(40 + 4 * k, 58 + (k in (0, 4)) * -2) for k in range(5)]
    eye = lambda cx: [(cx - 7, 40), (cx - 3, 37), (cx + 3, 37), (cx + 7, 40), (cx + 3, 43), (cx - 3, 43)]
    outer = [
        (48 - 14 * np.cos(a), 72 + 7 * np.sin(a) * (1 if k > 6 else -1))
        for k, a in enumerate(np.r_[np.linspace(0, np.pi, 7), np.linspace(np.pi, 0, 7)[1:-1]])
    ]
    inner = [
        (48 - 10 * np.cos(a), 72 + 3 * np.sin(a) * (1 if k > 4 else -1))
        for k, a in enumerate(np.r_[np.linspace(0, np.pi, 5), np.linspace(np.pi, 0, 5)[1:-1]])
    ]
    shape = np.concatenate([jaw, brows, nose, eye(30), eye(66), outer, inner]) - 48
    c, s = np.cos(angle), np.sin(angle)
    return shape @ (np.array([[c, -s], [s, c]]) * scale).T + centre + rng.normal(0, 0.5, shape.shape)


@pytest.fixture(scope="session")
def tiny_coco68(tmp_path_factory) -> Path:
    """24 photos of a drawn 68-point face (ibug68's names) at varied places, sizes and rolls, on noise,
    each boxed by the tight box of its 68 points, as faces68 is; 6 people of 4 photos each."""
    import numpy as np
    from PIL import Image, ImageDraw

    rng = np.random.default_rng(1)
    names, photos, points, boxes = keypointset.load("ibug68").names, [], [], []
    for _ in range(24):
        p = face68(rng, rng.uniform(55, 75, 2), rng.uniform(0.7, 1.1), rng.uniform(-0.2, 0.2))
        image = Image.fromarray(rng.integers(150, 230, (130, 140), np.uint8))
        pen = ImageDraw.Draw(image)
        for a, b in keypointset.load("ibug68").skeleton:
            pen.line([*p[names.index(a)], *p[names.index(b)]], fill=30, width=2)
        photos.append(np.asarray(image))
        points.append(p)
        boxes.append((*p.min(0), *p.max(0)))
    return write_coco(
        tmp_path_factory.mktemp("coco68") / "tiny", photos, points, boxes, names, [i // 4 for i in range(24)]
    )

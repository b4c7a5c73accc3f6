"""Clips with truth for the video benchmark, made from the labelled photos of people a run never saw.

    python -m benchmarks.video_clips RUN --out outputs/video/clips
    python -m benchmarks.video_clips RUN --out outputs/video/stills --kinds still=30 --seed 7   # still clips only

RUN: a run trained with data=coco and data.groups=person (faces68, keypoints=ibug68). Its validation people
(the ones it held out) are split in two, alternately in the order of their ids: the *tuning* people, whose
clips choose settings, and the *scored* people, whose clips give the figures. out/people.csv lists the people the
clips show (`person`), for training a net of another keypoint set without them (`data.exclude_groups`). Each clip
is an H.264 MP4 (PyAV, libx264, yuv420p) with its truth beside it (NAME.npz: `points` (frames, faces, 68, 2) in
the frame's pixels, also where they fall outside it; `visible` (frames, faces): all 68 points inside the frame;
`persons`). Kinds:

- still: one photo held still, with fresh sensor noise (and H.264's compression) on every frame: any motion of
  the points is jitter;
- moving: a smooth random camera path over a photo: pan, zoom 0.7-1.4x, roll within 20 degrees, 2-6 s;
- cut: the face pans out of the frame, stays out for a second and comes back;
- two: two photos side by side, each swaying a little;
- real: faces68's own frame sequences, three frames of one video (Name_10, _11, _12), as they are.

The synthetic clips are 640x480 at 30 fps; a face at zoom 1 has 75 px between its outer eye corners.
Nothing here is committed: the clips are made again from the photos, the same for the same RUN and seed.
"""

from __future__ import annotations

import argparse
import math
import re
from dataclasses import dataclass
from pathlib import Path

import av
import cv2
import numpy as np

from benchmarks.coco_photos import validation_photos
from keypoints.core.errors import DataError
from keypoints.data import images

W, H, FPS = 640, 480, 30
EYES = 75.0  # px between the outer eye corners (points 36 and 45) at zoom 1
NOISE = 4.0  # the sensor noise's standard deviation, in grey levels
KINDS = {"still": 3, "moving": 4, "cut": 2, "two": 2, "real": 40}  # clips of each kind per split (real: at most)


@dataclass
class Face:
    photo: np.ndarray  # RGB
    points: np.ndarray  # (68, 2) in the photo's pixels (corner convention: a pixel's centre at index + 0.5)
    person: str
    file: Path


def people(run: str) -> dict[str, list[Face]]:
    """The run's validation faces (one per photo), split by person into `tuning` and `scored`."""
    coco, _, photos = validation_photos(run, None)
    split = {"tuning": [], "scored": []}
    persons = sorted({coco.images[i]["person"] for i, _ in photos})
    side = {p: ("tuning", "scored")[k % 2] for k, p in enumerate(persons)}
    for i, truth in photos:
        photo = np.asarray(images.read(coco.files[i]).convert("RGB"))
        split[side[coco.images[i]["person"]]].append(
            Face(photo, truth[0], str(coco.images[i]["person"]), coco.files[i])
        )
    return split


def placement(face: Face, cx: float, cy: float, zoom: float, roll_deg: float) -> np.ndarray:
    """The 2x3 map from the photo's pixel indices to the frame's that puts the face's eye midpoint at
    (cx, cy), its outer eyes EYES * zoom apart, rolled by `roll_deg`."""
    eyes = face.points[[36, 45]]
    mid = eyes.mean(0) - 0.5
    scale = EYES * zoom / np.linalg.norm(eyes[1] - eyes[0])
    tilt = math.degrees(math.atan2(*(eyes[1] - eyes[0])[::-1]))  # the photo's own roll, undone first
    m = cv2.getRotationMatrix2D((float(mid[0]), float(mid[1])), tilt + roll_deg, scale)
    m[:, 2] += np.array([cx, cy]) - mid
    return m


def render(faces: list[Face], maps: list[np.ndarray], background: np.ndarray, rng) -> tuple[np.ndarray, np.ndarray]:
    """One frame: each face's photo warped onto the background by its map, with sensor noise; and the
    faces' true points in the frame (faces, 68, 2)."""
    frame = background.copy()
    truth = []
    for face, m in zip(faces, maps):
        # Into the frame in place (so it must be uint8, as the photo is): the backdrop stays where the photo is not.
        cv2.warpAffine(face.photo, m, (W, H), dst=frame, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_TRANSPARENT)
        truth.append((face.points - 0.5) @ m[:, :2].T + m[:, 2] + 0.5)
    noisy = frame + rng.normal(0, NOISE, frame.shape)
    return np.clip(noisy, 0, 255).astype(np.uint8), np.array(truth)


def backdrop(rng) -> np.ndarray:
    """A smooth random colour field: a scene with no face in it."""
    small = rng.uniform(40, 200, (4, 5, 3)).astype(np.float32)
    return cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC).clip(0, 255).astype(np.uint8)


def wander(rng, n: int, amplitude: float) -> np.ndarray:
    """A smooth random path of n frames within +-amplitude: two sines of random frequency (0.1-0.6 Hz) and phase."""
    t = np.arange(n) / FPS
    f, phase = rng.uniform(0.1, 0.6, 2), rng.uniform(0, 2 * np.pi, 2)
    return amplitude * (np.sin(2 * np.pi * f[0] * t + phase[0]) + np.sin(2 * np.pi * f[1] * t + phase[1])) / 2


def still(face: Face, rng) -> list[list[np.ndarray]]:
    m = placement(face, W / 2 + rng.uniform(-60, 60), H / 2, rng.uniform(0.8, 1.2), rng.uniform(-20, 20))
    return [[m]] * (3 * FPS)


def moving(face: Face, rng) -> list[list[np.ndarray]]:
    n = int(rng.uniform(2, 6) * FPS)
    x, y = W / 2 + wander(rng, n, 150), H / 2 + wander(rng, n, 70)
    zoom = 1.05 + wander(rng, n, 0.35)  # 0.7-1.4
    roll = wander(rng, n, 20)
    return [[placement(face, x[i], y[i], zoom[i], roll[i])] for i in range(n)]


def cut(face: Face, rng) -> list[list[np.ndarray]]:
    """In the frame for 1 s, out to one side over 0.5 s, away for 1 s, back over 0.5 s, then 1 s more."""
    n = 4 * FPS
    t = np.arange(n) / FPS
    away = np.clip(np.minimum(t - 1.0, 3.0 - t) / 0.5, 0, 1)  # 0 in the frame, 1 out of it
    away = (1 - np.cos(np.pi * away)) / 2
    x = W / 2 + rng.choice([-1, 1]) * (W / 2 + 2.5 * EYES) * away
    zoom, roll = rng.uniform(0.8, 1.2), rng.uniform(-10, 10)
    return [[placement(face, x[i], H / 2, zoom, roll)] for i in range(n)]


def two(pair: list[Face], rng) -> list[list[np.ndarray]]:
    n = 3 * FPS
    paths = [(W / 4 + W / 2 * k + wander(rng, n, 20), H / 2 + wander(rng, n, 20)) for k in range(2)]
    return [[placement(f, x[i], y[i], 0.75, 0.0) for f, (x, y) in zip(pair, paths)] for i in range(n)]


def write(path: Path, frames: list[np.ndarray]) -> None:
    """An H.264 MP4, yuv420p, padded to even sides."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=FPS, options={"preset": "veryfast", "crf": "23"})
        h, w = frames[0].shape[:2]
        stream.width, stream.height, stream.pix_fmt = w + w % 2, h + h % 2, "yuv420p"
        for f in frames:
            f = np.pad(f, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")))
        out.mux(stream.encode())


def synthetic(kind: str, faces: list[Face], rng) -> tuple[list[np.ndarray], np.ndarray]:
    """A clip of `kind` over `faces` (two for `two`): its frames and true points (frames, faces, 68, 2)."""
    maps = two(faces, rng) if kind == "two" else {"still": still, "moving": moving, "cut": cut}[kind](faces[0], rng)
    ground = backdrop(rng)
    rendered = [render(faces, m, ground, rng) for m in maps]
    return [r[0] for r in rendered], np.array([r[1] for r in rendered])


def sequences(faces: list[Face]) -> list[list[Face]]:
    """faces68's three-frame sequences among `faces`: Name_X0, _X1, _X2 of one video, all three present."""
    groups: dict[tuple, dict] = {}
    for f in faces:
        m = re.fullmatch(r"(.+)_(\d)([0-2])", Path(f.file).stem)
        if m:
            groups.setdefault(m.groups()[:2], {})[m.group(3)] = f
    return [[g[k] for k in "012"] for _, g in sorted(groups.items()) if len(g) == 3]


def make(run: str, out: Path, seed: int = 0, kinds: dict[str, int] = KINDS) -> None:
    """`kinds`' clips of both splits into out/<split>/NAME.mp4 with NAME.npz, and the people shown into
    out/people.csv."""
    rng = np.random.default_rng(seed)
    shown = set()
    splits = people(run)
    photos = sum(n * (2 if kind == "two" else 1) for kind, n in kinds.items() if kind != "real")
    for split, faces in splits.items():
        if photos > len(faces):
            raise DataError(f"{run}: its {split} people have {len(faces)} photos, too few for {kinds}")
    for split, faces in splits.items():
        folder = out / split
        folder.mkdir(parents=True, exist_ok=True)
        taken = iter([faces[i] for i in rng.permutation(len(faces))])  # each synthetic clip a different photo
        for kind, count in kinds.items():
            for k in range(count if kind != "real" else 0):
                chosen = [next(taken) for _ in range(2 if kind == "two" else 1)]
                frames, truth = synthetic(kind, chosen, rng)
                save(folder / f"{kind}{k}", frames, truth, [f.person for f in chosen])
                shown.update(f.person for f in chosen)
        for k, seq in enumerate(sequences(faces)[: kinds.get("real", 0)]):
            save(folder / f"real{k}", [f.photo for f in seq], np.array([[f.points] for f in seq]), [seq[0].person])
            shown.add(seq[0].person)
        print(f"{folder}: {len(list(folder.glob('*.mp4')))} clips of {len({f.person for f in faces})} people")
    (out / "people.csv").write_text("person\n" + "".join(f"{p}\n" for p in sorted(shown, key=int)))


def save(stem: Path, frames: list[np.ndarray], truth: np.ndarray, persons: list[str]) -> None:
    write(stem.with_suffix(".mp4"), frames)
    h, w = frames[0].shape[:2]
    inside = (truth[..., 0] >= 0) & (truth[..., 0] < w) & (truth[..., 1] >= 0) & (truth[..., 1] < h)
    np.savez(stem.with_suffix(".npz"), points=truth, visible=inside.all(-1), persons=np.array(persons))


def kind_count(text: str) -> tuple[str, int]:
    kind, _, count = text.partition("=")
    if kind not in KINDS or not count.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected KIND=N, KIND one of {', '.join(KINDS)}")
    return kind, int(count)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", help="a run trained with data=coco data.groups=person (ibug68)")
    parser.add_argument("--out", default="outputs/video/clips", help="the folder for tuning/ and scored/")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--kinds",
        nargs="+",
        type=kind_count,
        default=list(KINDS.items()),
        metavar="KIND=N",
        help=f"clips of each kind per split, only these kinds (default: {' '.join(f'{k}={n}' for k, n in KINDS.items())})",
    )
    args = parser.parse_args()
    try:
        make(args.run, Path(args.out), args.seed, dict(args.kinds))
    except DataError as error:
        raise SystemExit(f"error: {error}") from None


if __name__ == "__main__":
    main()

"""Keypoints on a video, a folder of frames or a camera: each face tracked from frame to frame, its keypoints
smoothed.

    kfkd video INPUT [--model MODEL] [--out DIR] [--video OUT.mp4] [--max-faces N] [--no-smooth] [--show]
    kfkd video --camera N|URL [--model MODEL] [...]

INPUT: a video file OpenCV reads, or a folder of frames (image files, in the order of their names). MODEL: a
run directory or an exported .onnx (any keypoint set). Writes DIR/keypoints.csv, a row per face per frame
as each frame is done (frame, time_s, track, the face's box, the columns of the model's keypoint set in the
frame's pixels), and with --video an annotated H.264 MP4. Settings: conf/video.yaml (tracking, smoothing)
and conf/detect.yaml (finding, framing). The Python API:

    tracker = Tracker(Detector("model.onnx", threads=1))
    for faces in tracker.frames(rgb_arrays, fps=30):   # (H, W, 3) or (H, W) uint8 arrays
        for face in faces:
            face.track, face.box, face.keypoints       # id, (4,), (K, 2) in the frame's pixels
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import math
import os
import queue
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from pathlib import Path
from types import SimpleNamespace

import numpy as np
from omegaconf import OmegaConf
from PIL import Image, ImageDraw

from keypoints.core.errors import DataError
from keypoints.core.paths import VIDEO as SETTINGS
from keypoints.data import framing, images
from keypoints.photos import detect
from keypoints.photos.smoothing import OneEuro

READER = "kfkd video reader"  # the name of the thread that reads a Source's frames
SHIFTS = ((0.1, 0), (-0.1, 0), (0, 0.1), (0, -0.1))  # `Tracker.follows`: crops moved by these fractions of their side
ZOOMS = (1.15, 1 / 1.15)  # ... and zoomed by these factors
HEADER = ["frame", "time_s", "track", "box_left", "box_top", "box_right", "box_bottom"]  # then the set's columns


@dataclass
class Tracked:
    track: int  # the face's id, kept while it is tracked
    box: np.ndarray  # (4,): the box the face finder would give for the face's (filtered) crop, in the image's pixels
    keypoints: np.ndarray  # (K, 2): x, y in the image's pixels (smoothed unless the tracker's smooth is off)


@dataclass
class _Track:
    id: int
    points: np.ndarray  # the model's columns in the image's pixels, as predicted
    frame: framing.Frame  # fitted to their anchors
    before: framing.Frame  # the frame before's fit: with `frame`, the face's motion
    filter: OneEuro | None
    steady: OneEuro  # the frame's own filter (crop_smooth)

    def ahead(self) -> framing.Frame:
        """Where the face will be on the next frame if it keeps moving as it did: the crop it is predicted in."""
        f, b = self.frame, self.before
        return framing.Frame(2 * f.cx - b.cx, 2 * f.cy - b.cy, f.size**2 / b.size, f.pixels, 2 * f.angle - b.angle)

    def moved(self, frame: framing.Frame, time_s: float, jumped: bool) -> None:
        """The face's frame on a new frame: its fit, smoothed (the roll in px at the face's side, as the rest),
        unless it `jumped` (it was re-framed): then the filter starts again from the fit, since what it held
        is where the face no longer is."""
        if jumped:
            self.steady.reset()
        cx, cy, size, turn = self.steady(time_s, (frame.cx, frame.cy, frame.size, frame.angle * frame.size), frame.size)
        self.before, self.frame = self.frame, framing.Frame(cx, cy, size, frame.pixels, turn / size)


def iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two boxes (left, top, right, bottom)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    inter = max(w, 0.0) * max(h, 0.0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def off(crop: framing.Frame, face: framing.Frame) -> float:
    """How far `face` sits from `crop`: the centres' distance over the crop's side, plus the sides' log ratio."""
    return math.hypot(face.cx - crop.cx, face.cy - crop.cy) / crop.size + abs(math.log(face.size / crop.size))


class Tracker:
    """Faces followed across the frames of one stream, by `detector` (keypoints.photos.detect.Detector).

    Each tracked face is cropped where its last two frames' keypoints put it, moving on as it moved (the
    anchors fit of detect's refine step, through a filter of its own, `crop_smooth`), and predicted; where
    the prediction sits more than `refine_over` off its crop, it is re-framed and predicted again, up to
    `refine` times. The face finder runs on the first frame, on a frame where a track is lost, and every
    `finder_every.searching` frames while no face is tracked, `finder_every.tracking` while one is (then
    beside the next frames, its boxes taken `finder_wait` frames later), and not while `max_faces` are; its
    boxes that overlap no tracked face (IoU under `iou`) start new tracks, framed and refined as detect frames
    them, where a second cascade or the net confirms the face (`confirmed`). A track is lost when its anchors stop
    looking like a face (`looks_like_a_face`), its centre leaves the image or its size jumps (`lost_resize`).
    `cfg`: conf/video.yaml's settings."""

    def __init__(self, detector: detect.Detector, cfg=None, smooth: bool = True):
        from hydra.utils import instantiate

        if detector.anchors is None:
            raise DataError(
                f"{detector.cfg.framing}: the model predicts none or only some of the anchors "
                f"{detector.anchor_names}; tracking follows a face by them"
            )
        cfg = cfg if cfg is not None else OmegaConf.load(SETTINGS)
        if cfg.max_faces is not None and not (isinstance(cfg.max_faces, int) and cfg.max_faces >= 1):
            raise DataError(f"max_faces={cfg.max_faces} (--max-faces, or {SETTINGS}): expected 1 or more, or null")
        # Plain values: a DictConfig's attribute costs microseconds, and these are read many times a frame.
        self.cfg = SimpleNamespace(**OmegaConf.to_container(cfg, resolve=True))
        self.box_fit, self.min_face_px = OmegaConf.to_container(detector.cfg.box_to_frame), detector.cfg.min_face_px
        self.detector, self.smooth, self.confirm = detector, smooth, instantiate(cfg.confirm)
        self.tracks: list[_Track] = []
        self.index, self.next_id, self.found_at = 0, 0, -math.inf  # found_at: the finder's last frame
        self.search = None  # a search running beside the frames: (its frame, its future, the boxes tracked then)
        self.finding = threading.Lock()  # OpenCV's cascade is not safe for two threads at once

    def frames(self, frames: Iterable[np.ndarray], fps: float = 30.0) -> Iterator[list[Tracked]]:
        """The tracked faces of each frame of `frames`, taken `fps` frames a second."""
        for i, image in enumerate(frames):
            yield self.step(image, i / fps)

    def step(self, image: np.ndarray, time_s: float) -> list[Tracked]:
        """The tracked faces of the next frame, (H, W) grey or (H, W, 3) RGB uint8, taken at `time_s`."""
        grey = image if image.ndim == 2 and image.dtype == np.uint8 else images.grey(images.from_array(image))
        frames = [t.ahead() for t in self.tracks]
        points = self._predict(grey, frames)
        fits = [self.fit(p) for p in points]
        first = [off(a, f) if f is not None else 0.0 for a, (f, _) in zip(frames, fits)]
        expected = [self.box(a) for a in frames]
        jumped = set()
        for _ in range(self.cfg.refine):
            # Predicted again, re-framed, only where the face sat well off its crop: a jump the motion did not
            # foresee (a re-frame costs a pass of the net, and a steady crop gives steadier points).
            again = [
                i
                for i, ((f, _), a) in enumerate(zip(fits, frames))
                if f is not None and off(a, f) > self.cfg.refine_over
            ]
            for i, p in zip(again, self._predict(grey, [fits[i][0] for i in again])):
                frames[i], points[i], fits[i] = fits[i][0], p, self.fit(p)
            jumped.update(again)
        # Where the first crop was far off (the face moved faster than its track knew), the re-frames may settle
        # on the wrong place, since the net follows its crop: the finder's box that overlaps the crop most, framed
        # as detect frames it, puts the face back.
        far = [i for i, o in enumerate(first) if o > self.cfg.refind_over]
        found = self._found(grey, [0]) if far else []
        for i in far:
            overlaps = [iou(b, expected[i]) for b, _ in found]
            if overlaps and max(overlaps) > 0:
                (points[i],) = self._framed(grey, [found[int(np.argmax(overlaps))][1]])
                fits[i] = self.fit(points[i])
                jumped.add(i)
        kept, (h, w) = [], grey.shape
        for i, (track, p, (frame, residual)) in enumerate(zip(self.tracks, points, fits)):
            # A face whose centre has left the image is lost: its keypoints would only be guessed. So is one whose
            # side changed by more than `lost_resize` in a frame: its fit has left the face (a face does not).
            if (
                self.looks_like_a_face(frame, residual)
                and 0 <= frame.cx < w
                and 0 <= frame.cy < h
                and abs(math.log(frame.size / track.frame.size)) <= math.log(self.cfg.lost_resize)
            ):
                track.points = p
                track.moved(frame, time_s, i in jumped)
                kept.append(track)
        lost = len(kept) < len(self.tracks)
        # Two tracks that drifted onto one face: the older one keeps it.
        self.tracks = [
            t
            for i, t in enumerate(kept)
            if all(iou(self.box(t.frame), self.box(o.frame)) < self.cfg.iou for o in kept[:i])
        ]
        every = self.cfg.finder_every["tracking" if self.tracks else "searching"]
        tracked = [self.box(t.frame) for t in self.tracks]
        if far:  # the finder searched this frame already: its other boxes may be new faces
            self._find(grey, found if found or self.tracks else self._found(grey, self.cfg.finder_rolls), tracked)
            self.found_at = self.index
        elif (self.index - self.found_at >= every or lost) and not self._full():
            if self.tracks and not lost and self.cfg.finder_wait and self.search is None:
                # While every face is tracked, a further one can wait: the finder searches beside the next frames.
                pool = ThreadPoolExecutor(1)
                self.search = self.index, pool.submit(self._found, grey, [0]), tracked
                pool.shutdown(wait=False)  # its thread ends with the search
            else:
                self._find(grey, self._found(grey, [0, *([] if self.tracks else self.cfg.finder_rolls)]), tracked)
            self.found_at = self.index
        if self.search is not None and self.index - self.search[0] >= self.cfg.finder_wait:
            _, search, then = self.search
            self.search = None
            # Its boxes were found on an earlier frame: new faces are those that overlapped no tracked face then
            # and overlap none now; they are framed on this frame, from where they were.
            self._find(grey, search.result(), then + tracked)
        self.index += 1
        return [self._output(t, time_s) for t in self.tracks]

    def _full(self) -> bool:
        """Whether `max_faces` faces are tracked: then the finder looks for no further one."""
        return self.cfg.max_faces is not None and len(self.tracks) >= self.cfg.max_faces

    def fit(self, points: np.ndarray) -> tuple[framing.Frame | None, float]:
        """The frame that puts the predicted anchors of `points` (the model's columns) at their canonical
        places, and how far they stay from them: the root mean square distance, as a fraction of the face's
        side (inf where there is no fit: anchors missing or all at one place)."""
        d = self.detector
        anchors = points[d.anchors].reshape(-1, 2)
        with np.errstate(all="ignore"):
            frame, residual = framing.similarity(anchors, d.canonical, d.rotate, d.model.size)
        if not (math.isfinite(residual) and math.isfinite(frame.size) and frame.size > 0):
            return None, math.inf
        return frame, residual / d.model.size

    def looks_like_a_face(self, frame: framing.Frame | None, residual: float) -> bool:
        """Whether a fit (`fit`) is a face's: its anchors near their canonical places, and its box no smaller
        than the smallest face detect frames (a track that shrinks onto a speck is lost)."""
        return residual <= self.cfg.lost_residual and self._side(frame) >= self.min_face_px

    def _side(self, frame: framing.Frame) -> float:
        """The side of the box the face finder would give for `frame`."""
        return frame.size / self.box_fit["size"]

    def box(self, frame: framing.Frame) -> np.ndarray:
        """The box the face finder would give for a face's frame: detect's box-to-frame map inverted."""
        side = self._side(frame)
        left, top = frame.cx - self.box_fit["x"] * side, frame.cy - self.box_fit["y"] * side
        return np.array([left, top, left + side, top + side])

    def _predict(self, grey: np.ndarray, frames: list[framing.Frame]) -> list[np.ndarray]:
        return self.detector.predict(grey, frames, dict.fromkeys(detect.STAGES, 0.0))

    def _find(self, grey: np.ndarray, found: list[tuple[np.ndarray, framing.Frame]], tracked: list[np.ndarray]):
        """New tracks for the finder's faces (`_found`) that overlap none of the `tracked` boxes, framed and
        refined on `grey` as detect does, in the finder's order until `max_faces` are tracked."""
        frames = [
            f
            for b, f in found
            if math.sqrt((b[2] - b[0]) * (b[3] - b[1])) >= self.min_face_px
            and all(iou(b, t) < self.cfg.iou for t in tracked)
        ]
        tracked = list(tracked)
        for p in self._framed(grey, frames) if not self._full() else []:
            frame, residual = self.fit(p)
            # A box the model does not see a face in, or the second cascade does not confirm, starts nothing; nor
            # does one whose face a track started here already holds (two of the finder's boxes on one face).
            if (
                self.looks_like_a_face(frame, residual)
                and all(iou(self.box(frame), t) < self.cfg.iou for t in tracked)
                and self.confirmed(grey, frame, tracked)
            ):
                tracked.append(self.box(frame))
                smoother = OneEuro(**self.cfg.smooth) if self.smooth else None
                steady = OneEuro(**self.cfg.crop_smooth)
                self.tracks.append(_Track(self.next_id, p, frame, frame, smoother, steady))
                self.next_id += 1
                if self._full():
                    break

    def confirmed(self, grey: np.ndarray, frame: framing.Frame, tracked: Iterable[np.ndarray] = ()) -> bool:
        """Whether a face the net framed from a finder's box is one: a second cascade sees a face there (`confirm`),
        or the face the net draws there stays as its crop moves (`follows`): on no face, the net draws one where its
        crop says one is, so it moves with the crop. The net is not asked where the face's box touches a `tracked`
        face's: there the crop holds part of that face, which the net may find wherever it is cropped."""
        if self.confirm(grey, frame, self._side(frame), self.detector.max_step):
            return True
        if self.cfg.follows is None or any(iou(self.box(frame), t) > 0 for t in tracked):
            return False
        return max(self.follows(grey, frame)) <= self.cfg.follows

    def follows(self, grey: np.ndarray, frame: framing.Frame) -> tuple[float, float]:
        """How far the face the net draws at `frame` moves with its crop: the crop moved by `SHIFTS` of its side or
        zoomed by `ZOOMS`, the face's fit moves by this fraction of the shift, and of the zoom's log (means). 0: the
        net finds a face wherever it is cropped; 1: it draws one where its crop says a face is, as it does where
        there is none (inf: no fit)."""
        crops = [
            frame,
            *(replace(frame, cx=frame.cx + x * frame.size, cy=frame.cy + y * frame.size) for x, y in SHIFTS),
        ]
        crops += [replace(frame, size=frame.size * zoom) for zoom in ZOOMS]
        there, *drawn = [self.fit(p)[0] for p in self._predict(grey, crops)]
        if there is None or any(f is None for f in drawn):
            return math.inf, math.inf
        shifts = [
            ((f.cx - there.cx) * x + (f.cy - there.cy) * y) / ((x * x + y * y) * frame.size)
            for (x, y), f in zip(SHIFTS, drawn)
        ]
        zooms = [math.log(f.size / there.size) / math.log(zoom) for zoom, f in zip(ZOOMS, drawn[len(SHIFTS) :])]
        return float(np.mean(shifts)), float(np.mean(zooms))

    def _framed(self, grey: np.ndarray, frames: list[framing.Frame]) -> list[np.ndarray]:
        """The predictions for faces framed from finder boxes (`frames`), re-framed as detect re-frames them.
        Each face is framed `start_wider.zoom` times larger too, and that framing kept where its face comes out
        `start_wider.larger` times the size or more: from a box tight on a big face, the net's re-frames can
        settle on a face drawn inside the face."""
        zoom, larger = self.cfg.start_wider["zoom"], self.cfg.start_wider["larger"]
        wider = [framing.Frame(f.cx, f.cy, f.size * zoom, f.pixels, f.angle) for f in frames]
        points = self._refined(grey, frames + wider)
        kept = []
        for p, q in zip(points[: len(frames)], points[len(frames) :]):
            (a, _), (b, _) = self.fit(p), self.fit(q)
            kept.append(q if b is not None and (a is None or b.size >= larger * a.size) else p)
        return kept

    def _refined(self, grey: np.ndarray, frames: list[framing.Frame]) -> list[np.ndarray]:
        points = self._predict(grey, frames)
        for _ in range(self.detector.cfg.refine):
            fits = [self.fit(p)[0] for p in points]
            again = [i for i, f in enumerate(fits) if f is not None]
            for i, p in zip(again, self._predict(grey, [fits[i] for i in again])):
                points[i] = p
        return points

    def _found(self, grey: np.ndarray, rolls: list[float]) -> list[tuple[np.ndarray, framing.Frame]]:
        """The finder's boxes on the frame reduced to `finder_side`, each with the face's frame: on the frame
        turned by each of `rolls` degrees in turn (0: upright), until one gives any. While no face is tracked,
        `finder_rolls` follow the upright search, since the finder misses a rolled face; a box found on a
        turned frame is given in its pixels, its face's frame turned back."""
        import cv2

        d = self.detector
        h, w = grey.shape
        for roll in rolls:
            turn = cv2.getRotationMatrix2D((w / 2, h / 2), roll, 1.0)  # the frame's pixels -> the turned frame's
            turned = cv2.warpAffine(grey, turn, (w, h), borderMode=cv2.BORDER_REPLICATE) if roll else grey
            with self.finding:  # the main thread may search while the search beside the frames runs
                boxes = detect.boxes(d.finder, turned, self.cfg.finder_side)
            if len(boxes):
                back = cv2.invertAffineTransform(turn)
                frames = []
                for b in boxes:
                    f = framing.from_box(b, d.cfg.box_to_frame, d.model.size)
                    cx, cy = back @ (f.cx, f.cy, 1.0)
                    frames.append(framing.Frame(cx, cy, f.size, f.pixels, math.atan2(back[1, 0], back[0, 0])))
                return list(zip(boxes, frames))
        return []

    def _output(self, track: _Track, time_s: float) -> Tracked:
        # Smoothed in units of the face's side, so that the same settings suit a face near and far.
        points = track.filter(time_s, track.points, track.frame.size) if track.filter else track.points
        return Tracked(track.id, self.box(track.frame), self.detector.as_keypoints(points))


# --- reading frames ---------------------------------------------------------------------------------


class Source:
    """The frames of a folder of images, a video file or a camera, as (index, time_s, RGB array).
    A camera is read as a video is, through OpenCV's VideoCapture, timed by the wall clock."""

    def __init__(self, path: str | None = None, camera: str | None = None, folder_fps: float = 30.0):
        self.name = path if camera is None else f"camera {camera}"
        self.files, self.capture, self.total, self.fps = None, None, None, folder_fps
        self.live = camera is not None  # timed by the wall clock, of no known length
        if self.live:
            self._open(
                int(camera) if camera.isdigit() else camera,
                "OpenCV cannot open it",
                "check that it is connected and not in use, or its URL",
            )
            return
        if Path(path).is_dir():
            self.files, problems = detect.photos([path])
            if problems:
                raise DataError(f"{problems[0]}; give a folder of frames or a video file")
            self.total = len(self.files)
        elif Path(path).is_file():
            self._open(
                path,
                "OpenCV cannot open it as a video (truncated or not a video)",
                "give a video file (MP4, AVI, MKV, ...) or a folder of frames",
            )
            self.total = self.frame_count or None
        else:
            raise DataError(f"{path}: no such file or folder; give a video file or a folder of frames")

    def _open(self, what, problem: str, advice: str) -> None:
        # FFmpeg (in OpenCV) would print its own lines about a damaged file; the error says it in one. OpenCV
        # reads this when it first opens a video in the process.
        os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "-8")
        import cv2

        self.capture = cv2.VideoCapture(what)
        if not self.capture.isOpened():
            raise DataError(f"{self.name}: {problem}; {advice}")
        ok, first = self.capture.read()
        if not ok:
            raise DataError(f"{self.name}: no frame could be read; {advice}")
        self._first = first
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or self.fps
        self.frame_count = int(self.capture.get(cv2.CAP_PROP_FRAME_COUNT))

    def __iter__(self) -> Iterator[tuple[int, float, np.ndarray, np.ndarray]]:
        """The frames as (index, time_s, RGB, grey), read, decoded and made grey by a thread of their own
        (OpenCV and Pillow let go of Python's lock meanwhile), so that the next frame is made ready beside the
        work on this one, on another core; the reader's error, if any, after the frames before it."""
        ahead = queue.Queue(maxsize=2)
        stop = threading.Event()

        def put(item) -> bool:
            """Hand `item` on, unless the consumer has stopped: whether it went."""
            while not stop.is_set():
                with contextlib.suppress(queue.Full):
                    ahead.put(item, timeout=0.1)
                    return True
            return False

        def read() -> None:
            try:
                if all(put((i, t, rgb, images.grey(images.from_array(rgb)))) for i, t, rgb in self._read()):
                    put(None)  # the end
            except Exception as error:  # noqa: BLE001 - raised again in the consumer's thread
                put(error)

        reader = threading.Thread(target=read, daemon=True, name=READER)
        reader.start()
        try:
            while (item := ahead.get()) is not None:
                if isinstance(item, Exception):
                    raise item
                yield item
        finally:  # the consumer stopped early (q, Ctrl-C): the reader stops too
            stop.set()
            reader.join()

    def _read(self) -> Iterator[tuple[int, float, np.ndarray]]:
        import cv2

        if self.files is not None:
            for i, path in enumerate(self.files):
                yield i, i / self.fps, np.asarray(images.read(path).convert("RGB"))
            return
        start, frame, i = time.monotonic(), self._first, 0
        while frame is not None:
            t = time.monotonic() - start if self.live else i / self.fps
            yield i, t, cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)  # OpenCV's BGR; 40x faster than numpy's reversed copy
            ok, frame = self.capture.read()
            frame, i = (frame if ok else None), i + 1
        if self.total and i < self.total:
            raise DataError(
                f"{self.name}: the video ended after {i} of its {self.total} frames (truncated or damaged); "
                f"the rows of those {i} are written; repair or re-encode the file for the rest"
            )

    def close(self) -> None:
        if self.capture is not None:
            self.capture.release()


# --- writing --------------------------------------------------------------------------------------


class Annotated:
    """An MP4 of the frames with each face's box, track id, skeleton and keypoints drawn (`annotate`): H.264,
    yuv420p (browsers play it), written by PyAV; `close` ends it cleanly, so that a stream stopped early
    still plays."""

    def __init__(self, path: Path, fps: float, codec: str, preset: str, skeleton: list[tuple[int, int]]):
        import av

        self.container = av.open(str(path), "w")
        rate = Fraction(fps).limit_denominator(1001)
        self.stream = self.container.add_stream(codec, rate=rate, options={"preset": preset})
        self.stream.pix_fmt = "yuv420p"
        self.size, self.skeleton = None, skeleton

    def write(self, rgb: np.ndarray, faces: list[Tracked]) -> None:
        import av

        frame = annotate(rgb, faces, self.skeleton)
        frame = np.pad(frame, ((0, frame.shape[0] % 2), (0, frame.shape[1] % 2), (0, 0)), mode="edge")  # 4:2:0
        if self.size is None:
            self.size = self.stream.height, self.stream.width = frame.shape[:2]
        for packet in self.stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
            self.container.mux(packet)

    def close(self) -> None:
        if self.size is not None:
            for packet in self.stream.encode():  # the encoder's last frames
                self.container.mux(packet)
        self.container.close()


def annotate(rgb: np.ndarray, faces: list[Tracked], skeleton: list[tuple[int, int]]) -> np.ndarray:
    """The frame with each face's box and track id (green), its keypoint set's skeleton (yellow lines between
    the `skeleton` pairs of keypoint indices) and keypoints (red) drawn, as detect draws a photo's faces."""
    canvas = Image.fromarray(rgb)
    pen = ImageDraw.Draw(canvas)
    width = max(1, round(max(canvas.size) / 400))
    for face in faces:
        detect.draw_face(pen, face.box, face.keypoints, skeleton, width)
        pen.text((face.box[0] + 2 * width, face.box[1] + 2 * width), str(face.track), fill=(0, 255, 0))
    return np.asarray(canvas)


def _table(path: Path):
    """keypoints.csv, opened for writing, unless it exists and was not written by this command."""
    if path.exists():
        with open(path, newline="") as f:
            if (next(csv.reader(f), None) or [])[: len(HEADER)] != HEADER:
                raise DataError(f"{path}: exists and was not written by kfkd video; choose another --out")
    return open(path, "w", newline="")


def main(argv: list[str] | None = None) -> None:
    from tqdm import tqdm

    parser = argparse.ArgumentParser(prog="kfkd video", description=__doc__.split("\n\n")[0])
    parser.add_argument("input", nargs="?", help="a video file, or a folder of frames (in the order of their names)")
    parser.add_argument("--model", help="a run directory or an exported .onnx (default: conf/video.yaml's model)")
    parser.add_argument("--out", default="outputs/video", help="the folder for keypoints.csv")
    parser.add_argument("--video", help="also write the frames annotated to this .mp4 (H.264)")
    parser.add_argument("--camera", help="read a camera instead of INPUT: its number (0, 1, ...) or a stream's URL")
    parser.add_argument(
        "--max-faces",
        type=int,
        help="track at most this many faces, and stop searching while they are (conf/video.yaml)",
    )
    parser.add_argument("--no-smooth", action="store_true", help="keypoints as predicted, without the One Euro filter")
    parser.add_argument("--show", action="store_true", help="show the annotated frames in a window (q stops)")
    args = parser.parse_args(argv)
    cfg = OmegaConf.load(SETTINGS)
    model = args.model or cfg.model
    if model is None:
        parser.error(f"--model is needed (or model: in {SETTINGS})")
    if args.max_faces is not None:
        cfg.max_faces = args.max_faces
    if (args.input is None) == (args.camera is None):
        parser.error("give INPUT or --camera, one of them")
    source = writer = table = None
    done = faces = 0
    try:
        source = Source(args.input, args.camera, cfg.folder_fps)
        if args.show:
            _window()
        tracker = Tracker(detect.Detector(model, threads=cfg.onnx_threads), cfg, smooth=not args.no_smooth)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        table = _table(out / "keypoints.csv")
        rows = csv.writer(table)
        rows.writerow(HEADER + tracker.detector.header[len(detect.HEADER) :])
        writer = (
            Annotated(Path(args.video), source.fps, cfg.codec, cfg.preset, tracker.detector.skeleton)
            if args.video
            else None
        )
        bar = tqdm(source, total=source.total, desc="frames", unit="frame", file=sys.stderr)
        for i, t, rgb, grey in bar:
            found = tracker.step(grey, t)
            for face in found:
                values = ["" if np.isnan(v) else round(float(v), 2) for v in face.keypoints.reshape(-1)]
                rows.writerow([i, round(t, 4), face.track, *np.round(face.box, 2).tolist(), *values])
            table.flush()  # a stream that stops keeps its rows
            if writer:
                writer.write(rgb, found)
            done, faces = i + 1, faces + len(found)
            if args.show and _shown(rgb, found, tracker.detector.skeleton):
                break
    except DataError as error:
        _close(source, writer, table)
        sys.exit(f"error: {error}")
    except KeyboardInterrupt:
        _close(source, writer, table)
        sys.exit(f"interrupted after {done} frames; the rows so far are in {Path(args.out) / 'keypoints.csv'}")
    _close(source, writer, table)
    print(
        f"frames: {done}, faces: {faces}, tracks: {tracker.next_id}; wrote {Path(args.out) / 'keypoints.csv'}"
        + (f" and {args.video}" if args.video else "")
    )


def _close(*things) -> None:
    for thing in things:
        if thing is not None:
            thing.close()


def _window() -> None:
    import cv2

    try:
        cv2.namedWindow("kfkd video")
    except cv2.error:
        raise DataError(
            "--show: this OpenCV has no windows (opencv-python-headless); pip install opencv-python, "
            "or leave --show out and write --video"
        ) from None


def _shown(rgb: np.ndarray, found: list[Tracked], skeleton: list[tuple[int, int]]) -> bool:
    """Show the frame annotated; whether the user pressed q to stop."""
    import cv2

    cv2.imshow("kfkd video", annotate(rgb, found, skeleton)[:, :, ::-1])
    return cv2.waitKey(1) & 0xFF == ord("q")


if __name__ == "__main__":
    main()

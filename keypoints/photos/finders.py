"""Face finders: a grey photo (H, W) uint8 in, boxes (N, 4) out as left, top, right, bottom in its pixels.

`Cascade` runs an OpenCV cascade (OpenCV 4.x wheels ship the Haar cascades in `cv2.data`;
scikit-image ships an LBP cascade in OpenCV's format); `DlibHog` runs dlib's HOG detector where
dlib is installed (`pip install dlib-bin`). conf/detect.yaml picks one; BENCHMARKS.md says why.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from keypoints.core.errors import DataError
from keypoints.data import framing


def _cascade_file(name: str) -> Path:
    """A cascade file by path, or by name in OpenCV's or scikit-image's bundled cascades."""
    import cv2

    candidates = [Path(name).expanduser(), Path(cv2.data.haarcascades) / name]
    try:
        import skimage.data

        candidates.append(Path(skimage.data.lbp_frontal_face_cascade_filename()).parent / name)
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    raise DataError(
        f"finder.cascade={name}: no such cascade file; expected a path or one of "
        f"{sorted(p.name for p in Path(cv2.data.haarcascades).glob('*.xml'))}"
    )


class Cascade:
    """OpenCV's `CascadeClassifier.detectMultiScale`: windows from `min_size` px up, grown by
    `scale_factor`, kept where at least `min_neighbors` overlapping windows agree."""

    def __init__(self, cascade: str, scale_factor: float, min_neighbors: int, min_size: int):
        import cv2

        self.classifier = cv2.CascadeClassifier(str(_cascade_file(cascade)))
        if self.classifier.empty():
            raise DataError(f"finder.cascade={cascade}: OpenCV cannot load it as a cascade")
        self.scale_factor, self.min_neighbors, self.min_size = scale_factor, min_neighbors, min_size

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        boxes = self.classifier.detectMultiScale(
            grey, scaleFactor=self.scale_factor, minNeighbors=self.min_neighbors, minSize=(self.min_size, self.min_size)
        )
        boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
        return np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], 1)


class DlibHog:
    """dlib's frontal face detector (HOG features, a linear SVM; 80x80 px windows), on the photo
    enlarged `upsample` times, so that faces from 80 / 2**upsample px up are found."""

    def __init__(self, upsample: int):
        try:
            import dlib
        except ImportError:
            raise DataError("finder: DlibHog needs dlib (pip install dlib-bin)") from None
        self.detector, self.upsample = dlib.get_frontal_face_detector(), upsample

    def __call__(self, grey: np.ndarray) -> np.ndarray:
        found = self.detector(np.ascontiguousarray(grey), self.upsample)
        return np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in found], np.float64).reshape(-1, 4)


class Confirm:
    """A second opinion on a face already framed: how many of `cascade`'s windows, ungrouped, lie on the face's
    upright crop (`side` px, its box `box` of that) at the face's own scale (`scales` of its box). A face
    gathers many overlapping windows; a box another finder put on lettering or hair gathers few. A face is
    confirmed by `windows` or more (0: every box is)."""

    def __init__(self, cascade: str, side: int, box: float, scales: list[float], windows: int):
        import cv2

        self.classifier = cv2.CascadeClassifier(str(_cascade_file(cascade)))
        if self.classifier.empty():
            raise DataError(f"confirm.cascade={cascade}: OpenCV cannot load it as a cascade")
        self.side, self.box, self.windows = side, box, windows
        self.sizes = [round(s * box * side) for s in scales]

    def __call__(self, grey: np.ndarray, frame: framing.Frame, box_side: float, max_step: float) -> bool:
        """Whether the face framed by `frame`, whose finder's box would be `box_side` photo px, is confirmed
        (the crop made as `frame.crop` makes it, with `max_step`)."""
        if not self.windows:
            return True
        upright = framing.Frame(frame.cx, frame.cy, box_side / self.box, self.side, frame.angle)
        found = self.classifier.detectMultiScale(
            upright.crop(grey, max_step), 1.1, 0, minSize=(self.sizes[0],) * 2, maxSize=(self.sizes[1],) * 2
        )
        return len(found) >= self.windows

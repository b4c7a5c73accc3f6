"""Photos in, as people have them: any format Pillow reads (JPEG, PNG, BMP, TIFF, WebP, ...), colour
or grey, with alpha, 8 or 16 bits per channel, turned upright by their EXIF orientation.

Everything becomes 8-bit RGB (to draw on) and 8-bit grey made by Pillow's `convert("L")`, the
conversion that made realfaces' training faces (kfkd data realfaces).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from keypoints.core.errors import DataError

# The pixel count above which Pillow refuses a file as a likely decompression bomb (~179 Mpx); an
# 8000x6000 photo (48 Mpx) is read as usual.
Image.MAX_IMAGE_PIXELS = 2 * 89_478_485


def read(path: str | Path) -> Image.Image:
    """The photo at `path`, upright (EXIF orientation applied), as 8-bit RGB or grey."""
    path = Path(path)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(path) as image:
                image.load()  # decode now: a truncated file fails here, not later
                upright = ImageOps.exif_transpose(image)
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image Pillow can read (expected JPEG, PNG, BMP, TIFF, WebP, ...)") from None
    except Image.DecompressionBombError as e:
        raise DataError(f"{path}: too large to read safely ({e})") from None
    except (OSError, ValueError, SyntaxError) as e:
        raise DataError(f"{path}: unreadable or truncated image ({str(e).splitlines()[0][:160]})") from None
    return eight_bit(upright)


def eight_bit(image: Image.Image) -> Image.Image:
    """`image` as mode RGB or L: alpha composited over white, 16-bit and float scaled to 8 bits."""
    if image.mode in ("L", "RGB"):
        return image
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        # 16-bit grey (PNG, TIFF) spans 0..65535; float images are taken to span 0..1.
        scale = 255 / 65535 if image.mode != "F" else (255 if values.max(initial=0) <= 1 else 1)
        return Image.fromarray(np.clip(values * scale + 0.5, 0, 255).astype(np.uint8), "L")
    if "A" in image.getbands() or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB" if len(image.getbands()) >= 3 else "L")


def from_array(array: np.ndarray) -> Image.Image:
    """An image array (H, W) grey or (H, W, 3) RGB, uint8, as a Pillow image."""
    array = np.asarray(array)
    if array.dtype != np.uint8 or not (array.ndim == 2 or (array.ndim == 3 and array.shape[2] == 3)):
        raise ValueError(f"expected an image array (H, W) or (H, W, 3) of uint8, got {array.shape} {array.dtype}")
    return Image.fromarray(np.ascontiguousarray(array), "L" if array.ndim == 2 else "RGB")


def grey(image: Image.Image) -> np.ndarray:
    """The image as (H, W) uint8 grey, as the training faces were made."""
    return np.asarray(image.convert("L"))

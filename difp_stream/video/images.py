"""Still images: read as RGB, written whole or not at all (OpenCV writes no EXIF: no GPS, camera or serial)."""
from __future__ import annotations

import os
import warnings
from pathlib import Path

import cv2
import numpy as np
import PIL.Image

from ..errors import InputError, OutputError
from ..staging import partial_path

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


# the most pixels a still may declare: 120 MP is above any camera's photo; a 1 MB PNG that declares 20000 x 20000
# would take ~5 GB to decode and protect, and one declaring 60000 x 60000 aborts OpenCV
MAX_PIXELS = 120_000_000


def check_size(path: str | Path) -> None:
    """An :class:`InputError` for an image whose header declares more than ``MAX_PIXELS``, read without decoding
    it (formats Pillow cannot parse are checked after decoding)."""
    too_big = f"image {path} declares more pixels than the {MAX_PIXELS // 1_000_000} MP this filter decodes"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", PIL.Image.DecompressionBombWarning)  # (our own limit speaks)
            with PIL.Image.open(path) as im:
                w, h = im.size
    except PIL.Image.DecompressionBombError:  # (Pillow's own limit, above ours)
        raise InputError(f"{too_big} (a decompression bomb?)") from None
    except (OSError, ValueError):
        return
    if w * h > MAX_PIXELS:
        raise InputError(f"{too_big}: {w} x {h} (a decompression bomb?)")


def read_image(path: str | Path) -> np.ndarray:
    check_size(path)
    try:
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # EXIF orientation applied: faces are found upright
    except cv2.error as e:
        raise InputError(f"cannot read image {path}: {str(e).strip().splitlines()[-1]}") from None
    if img is None:
        raise InputError(f"cannot read image {path}")
    if img.shape[0] * img.shape[1] > MAX_PIXELS:
        raise InputError(f"image {path} has {img.shape[1]} x {img.shape[0]} pixels, more than {MAX_PIXELS} pixels")
    return img[:, :, ::-1].copy()


def write_image(path: str | Path, rgb: np.ndarray) -> None:
    path = Path(path)
    tmp = partial_path(path)
    try:
        ok = cv2.imwrite(str(tmp), rgb[:, :, ::-1])
        if not ok or not tmp.exists():
            raise OutputError(f"cannot write image {path} (unknown extension, or the folder is not writable)")
        os.replace(tmp, path)
    except (OSError, cv2.error) as e:
        raise OutputError(f"cannot write image {path}: {getattr(e, 'strerror', None) or e}") from None
    finally:
        tmp.unlink(missing_ok=True)

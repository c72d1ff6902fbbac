"""Still images: read as RGB, written whole or not at all (OpenCV writes no EXIF: no GPS, camera or serial)."""
from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError, OutputError
from ..files import partial_path

IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


def read_image(path: str | Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)  # EXIF orientation applied: faces are found upright
    if img is None:
        raise InputError(f"cannot read image {path}")
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

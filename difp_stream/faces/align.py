"""The alignment template, crops, and pasting a crop back into the frame (feathered mask, colour matching)."""
from __future__ import annotations

import cv2
import numpy as np
from ..gan.encoder import ffhq_transform

# The 5-point ArcFace 112x112 template shifted by +8 px into a 128x128 canvas (the training data's template):
# left eye, right eye, nose tip, left mouth corner, right mouth corner.
TEMPLATE_128 = np.array([[46.2946, 59.6963], [81.5318, 59.5014], [64.0252, 79.7366],
                         [49.5493, 100.3655], [78.7299, 100.2041]], np.float32)


def template(size: int) -> np.ndarray:
    return TEMPLATE_128 * (size / 128.0)


def similarity(landmarks: np.ndarray, size: int) -> np.ndarray:
    """2x3 similarity transform (rotation, uniform scale, translation) taking the 5 landmarks onto the template."""
    # the same call (OpenCV's defaults) that aligned the training crops
    m, _ = cv2.estimateAffinePartial2D(np.asarray(landmarks, np.float32).reshape(5, 2), template(size))
    if m is None or not np.isfinite(m).all():
        raise ValueError("cannot align: degenerate landmarks")
    return m


def is_profile(landmarks: np.ndarray, max_yaw: float) -> bool:
    """True when the face is turned too far for the frontal template: the nose lies far off the eyes' midpoint
    (relative to the eye distance), or the eyes nearly coincide."""
    lm = np.asarray(landmarks, np.float32).reshape(5, 2)
    eyes = lm[1] - lm[0]
    dist = float(np.hypot(*eyes))
    if dist < 1e-3:
        return True
    mid = (lm[0] + lm[1]) / 2
    offset = float(np.dot(lm[2] - mid, eyes / dist))  # along the eye line
    return abs(offset) / dist > max_yaw


def crop(frame: np.ndarray, m: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(frame, m, (size, size), flags=cv2.INTER_AREA if _scale(m) < 1 else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT101)


def _scale(m: np.ndarray) -> float:
    return float(np.sqrt(abs(np.linalg.det(m[:, :2]))))


_MASKS: dict[tuple[int, float], np.ndarray] = {}


def feather_mask(size: int, margin: float = 0.12) -> np.ndarray:
    """float32 [size, size] in [0, 1]: 1 in the middle of the crop, falling smoothly to 0 at its border."""
    key = (size, margin)
    if key not in _MASKS:
        c = (np.arange(size, dtype=np.float32) + 0.5) / size
        edge = np.minimum(c, 1 - c) / margin  # 0 at the border, 1 at `margin` inside
        ramp = np.clip(edge, 0, 1)
        ramp = ramp * ramp * (3 - 2 * ramp)  # smoothstep
        _MASKS[key] = np.outer(ramp, ramp)
    return _MASKS[key]


def face_mask(size: int) -> np.ndarray:
    """float32 [size, size]: the face region (brows to chin, cheek to cheek) of an FFHQ-framed crop, a soft
    ellipse; hair, ears and background of the frame stay the original's."""
    key = (size, -1.0)
    if key not in _MASKS:
        c = (np.arange(size, dtype=np.float32) + 0.5) / size
        x, y = np.meshgrid(c, c)
        r = np.sqrt(((x - 0.5) / 0.30) ** 2 + ((y - 0.62) / 0.35) ** 2)  # 1 on the ellipse
        ramp = np.clip((1.15 - r) / 0.3, 0, 1)  # soft edge, about 10% of the face wide
        _MASKS[key] = (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)
    return _MASKS[key]


def framing_mask(framing: str, size: int) -> np.ndarray:
    """The paste mask of a model's crops: the feathered square (template framing) or the face region (FFHQ)."""
    return face_mask(size) if framing == "ffhq" else feather_mask(size)


def framing_transform(framing: str, landmarks: np.ndarray, m128: np.ndarray) -> np.ndarray:
    """2x3 transform from the frame to a model's crop at 128 px (multiply by size / 128 for another size): the
    template's own (``m128``) or, for the face generator's models, the FFHQ framing from the five points."""
    if framing != "ffhq":
        return m128
    return ffhq_transform(landmarks, 128).astype(np.float32)


def _frame_box(m: np.ndarray, x0: float, y0: float, x1: float, y1: float, shape: tuple[int, int],
               pad: int) -> tuple[int, int, int, int] | None:
    """The crop rectangle (x0, y0)-(x1, y1), aligned by ``m``, as a box in the frame, clipped; None if outside."""
    inv = cv2.invertAffineTransform(m)
    corners = np.array([[x0, y0, 1], [x1, y0, 1], [x0, y1, 1], [x1, y1, 1]], np.float32) @ inv.T
    bx0, by0 = np.floor(corners.min(0)).astype(int) - pad
    bx1, by1 = np.ceil(corners.max(0)).astype(int) + pad
    h, w = shape
    bx0, by0, bx1, by1 = max(0, bx0), max(0, by0), min(w, bx1), min(h, by1)
    if bx1 <= bx0 or by1 <= by0:
        return None
    return int(bx0), int(by0), int(bx1), int(by1)


def roi_of(m: np.ndarray, size: int, shape: tuple[int, int], pad: int = 2) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1) in the frame of the crop square, clipped; None if outside the frame."""
    return _frame_box(m, 0, 0, size, size, shape, pad)


def mask_roi(m: np.ndarray, mask: np.ndarray, shape: tuple[int, int], pad: int = 2) -> tuple[int, int, int, int] | None:
    """Bounding box in the frame of where ``mask`` (a crop's paste mask, aligned by ``m``) is above zero: what a
    paste can change."""
    ys, xs = np.nonzero(mask > 0)
    if len(xs) == 0:
        return None
    return _frame_box(m, xs.min(), ys.min(), xs.max() + 1, ys.max() + 1, shape, pad)


def match_colour(src: np.ndarray, ref: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """Shift/scale each channel of ``src`` so its weighted mean and std match ``ref`` (no seam in tone). The
    statistics are read at most 64 px wide (the same to ~0.1 level; a tenth of the cost at 256 px)."""
    s = src.astype(np.float32)
    small = min(64, src.shape[0])

    def thumb(a):
        a = np.asarray(a, np.float32)
        return a if a.shape[0] == small else cv2.resize(a, (small, small), interpolation=cv2.INTER_AREA)

    ts, tr, tw = thumb(s), thumb(ref), thumb(weight)
    w = tw[..., None] / max(float(tw.sum()), 1e-6)
    ms, mr = (ts * w).sum((0, 1)), (tr * w).sum((0, 1))
    ss = np.sqrt(((ts - ms) ** 2 * w).sum((0, 1))) + 1e-3
    sr = np.sqrt(((tr - mr) ** 2 * w).sum((0, 1))) + 1e-3
    gain = np.clip(sr / ss, 0.7, 1.4)
    return np.clip((s - ms) * gain + mr, 0, 255)


def band_energy(img: np.ndarray, size: int = 128) -> tuple[float, float]:
    """(mid, high): FFT power of a picture resized to ``size`` grey, Hann-windowed, in the radial bands 8-32 and
    32-64 cycles per 128 px (eyes, mouth, wrinkles; texture and noise)."""
    g = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2GRAY) if img.ndim == 3 else img
    g = cv2.resize(g, (size, size), interpolation=cv2.INTER_AREA).astype(np.float64)
    w = np.outer(np.hanning(size), np.hanning(size))
    p = np.abs(np.fft.fftshift(np.fft.fft2((g - g.mean()) * w))) ** 2
    yy, xx = np.mgrid[:size, :size] - size // 2
    r = np.hypot(yy, xx) * 128 / size
    return float(p[(r >= 8) & (r < 32)].sum()), float(p[(r >= 32) & (r < 64)].sum())


DETAIL_SIGMAS = (0.6, 0.9, 1.3, 1.8, 2.5, 3.5)


def match_detail(src: np.ndarray, ref: np.ndarray, weight: np.ndarray, tol: float = 1.5) -> np.ndarray:
    """``src`` (float RGB) softened by the least Gaussian blur that brings its fine detail (the high band's FFT
    energy, :func:`band_energy`, over the box of the mask's core) within ``tol`` of the original ``ref``'s
    there: a render sharper than the footage around it (a low-resolution, soft or compressed video) would stand
    out as pasted; a sharper original leaves it as it is."""
    ys, xs = np.nonzero(weight > 0.5)
    if len(xs) < 64:
        return src
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))
    target = tol * band_energy(ref[box].astype(np.float32))[1]
    if band_energy(src[box])[1] <= target:
        return src
    lo, hi, best = 0, len(DETAIL_SIGMAS) - 1, None  # the least blur that meets it (bisection: detail falls with sigma)
    while lo <= hi:
        mid = (lo + hi) // 2
        soft = cv2.GaussianBlur(src, (0, 0), DETAIL_SIGMAS[mid])
        if band_energy(soft[box])[1] <= target:
            best, hi = soft, mid - 1
        else:
            lo = mid + 1
    return best if best is not None else cv2.GaussianBlur(src, (0, 0), DETAIL_SIGMAS[-1])


def paste(frame: np.ndarray, face: np.ndarray, m: np.ndarray, original: np.ndarray | None = None,
          margin: float = 0.12, mask: np.ndarray | None = None, detail: bool = True) -> None:
    """Warp the crop ``face`` (aligned by ``m``) back into ``frame`` in place, with a feathered mask (or ``mask``);
    when the original crop is given, the face's colours (and with ``detail``, its level of fine detail) are matched
    to it first."""
    size = face.shape[0]
    box = roi_of(m, size, frame.shape[:2])
    if box is None:
        return
    x0, y0, x1, y1 = box
    mask = feather_mask(size, margin) if mask is None else mask
    src = match_colour(face, original, mask) if original is not None else face.astype(np.float32)
    inv = cv2.invertAffineTransform(m)
    inv[:, 2] -= (x0, y0)
    dsize = (x1 - x0, y1 - y0)
    warped = cv2.warpAffine(src, inv, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    alpha = cv2.warpAffine(mask, inv, dsize, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)[..., None]
    roi = frame[y0:y1, x0:x1].astype(np.float32)
    if original is not None and detail:  # at the frame's scale: the detail a viewer sees there
        warped = match_detail(warped, roi, alpha[..., 0])
    frame[y0:y1, x0:x1] = np.clip(roi * (1 - alpha) + warped * alpha + 0.5, 0, 255).astype(np.uint8)


def obscure(frame: np.ndarray, m: np.ndarray, size: int = 128, margin: float = 0.06,
            grow: float = 1.1) -> tuple[int, int, int, int] | None:
    """Fail-closed cover: pixelate and blur the aligned face's square (``m`` takes the frame to a ``size`` crop),
    ``grow`` times as wide (for the 128 template: the face with its forehead and jaw, about 1.8x the eye-to-chin
    height) in place. Nothing recognisable survives: the face becomes a 4x4 mosaic, smoothed. Returns the frame box
    the cover changed (what its key record holds), or None where the square lies outside the frame."""
    c = size / 2
    m = (np.array([[1 / grow, 0, c * (1 - 1 / grow)], [0, 1 / grow, c * (1 - 1 / grow)]], np.float32)
         @ np.vstack([m, [0, 0, 1]]).astype(np.float32))
    box = roi_of(m, size, frame.shape[:2])
    if box is None:
        return None
    face = crop(frame, m, size)
    tiny = cv2.resize(face, (4, 4), interpolation=cv2.INTER_AREA)
    cover = cv2.GaussianBlur(cv2.resize(tiny, (size, size), interpolation=cv2.INTER_LINEAR), (0, 0), size / 12)
    paste(frame, cover, m, None, margin)
    return box

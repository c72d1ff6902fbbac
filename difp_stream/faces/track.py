"""Face tracking: IoU association under a constant-velocity motion model, landmark smoothing, short-miss coasting.

The IoU matrix and the greedy assignment are numba kernels (they run for every frame)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numba
import numpy as np

from .detect import Face


@numba.njit(cache=True)
def iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0], b.shape[0]), np.float32)
    for i in range(a.shape[0]):
        area_a = max(0.0, a[i, 2] - a[i, 0]) * max(0.0, a[i, 3] - a[i, 1])
        for j in range(b.shape[0]):
            w = min(a[i, 2], b[j, 2]) - max(a[i, 0], b[j, 0])
            h = min(a[i, 3], b[j, 3]) - max(a[i, 1], b[j, 1])
            if w <= 0 or h <= 0:
                continue
            inter = w * h
            area_b = (b[j, 2] - b[j, 0]) * (b[j, 3] - b[j, 1])
            out[i, j] = inter / (area_a + area_b - inter + 1e-9)
    return out


@numba.njit(cache=True)
def greedy_match(score: np.ndarray, threshold: float) -> np.ndarray:
    """Pairs (row, col) by descending score above ``threshold``, each row and column used once."""
    n, m = score.shape
    pairs = np.empty((min(n, m), 2), np.int64)
    used_r = np.zeros(n, np.bool_)
    used_c = np.zeros(m, np.bool_)
    k = 0
    flat = np.argsort(-score.ravel())
    for f in flat:
        i, j = f // m, f % m
        if score[i, j] < threshold:
            break
        if used_r[i] or used_c[j]:
            continue
        used_r[i] = True
        used_c[j] = True
        pairs[k, 0], pairs[k, 1] = i, j
        k += 1
    return pairs[:k]


@dataclass
class Track:
    id: int
    box: np.ndarray  # float32 [4]
    landmarks: np.ndarray  # float32 [5, 2]
    score: float
    first_frame: int
    last_seen: int
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(2, np.float32))  # centre motion per frame
    hits: int = 1
    detected: bool = True  # detected in the current frame (False: position predicted)

    def shifted(self, frames: int) -> tuple[np.ndarray, np.ndarray]:
        d = self.velocity * frames
        return self.box + np.tile(d, 2), self.landmarks + d


class Tracker:
    """``update(faces, frame_index) -> active tracks``; ``predict(frame_index)`` coasts all tracks one frame
    (frames without detection). A track survives ``max_misses`` frames without a detection; while it coasts it
    stays in the output so its face keeps being covered."""

    def __init__(self, iou_threshold: float = 0.25, max_misses: int = 12, smoothing: float = 0.5, jitter: float = 0.04):
        self.iou_threshold, self.max_misses, self.smoothing, self.jitter = iou_threshold, max_misses, smoothing, jitter
        self.tracks: list[Track] = []
        self.next_id = 0
        self.frame = -1

    def _predicted(self, frame_index: int) -> np.ndarray:
        if not self.tracks:
            return np.zeros((0, 4), np.float32)
        return np.stack([t.shifted(frame_index - t.last_seen)[0] for t in self.tracks]).astype(np.float32)

    def update(self, faces: list[Face], frame_index: int) -> list[Track]:
        self.frame = frame_index
        boxes = np.stack([f.box for f in faces]).astype(np.float32) if faces else np.zeros((0, 4), np.float32)
        pairs = greedy_match(iou_matrix(self._predicted(frame_index), boxes), self.iou_threshold)
        matched_t, matched_f = set(), set()
        a = self.smoothing
        for ti, fi in pairs:
            t, f = self.tracks[ti], faces[fi]
            gap = max(1, frame_index - t.last_seen)
            pbox, plm = t.shifted(gap)
            centre_new = (f.box[:2] + f.box[2:]) / 2
            centre_old = (t.box[:2] + t.box[2:]) / 2
            t.velocity = (0.5 * t.velocity + 0.5 * (centre_new - centre_old) / gap).astype(np.float32)
            # smooth jitter only: a detection that moved more than a few percent of the face size is taken as is
            # (a lagging box would leave part of the face uncovered)
            size = max(1.0, float(f.box[2] - f.box[0]))
            w = a if np.abs(plm - f.landmarks).max() < self.jitter * size else 0.0
            t.box = (w * pbox + (1 - w) * f.box).astype(np.float32)
            t.landmarks = (w * plm + (1 - w) * f.landmarks).astype(np.float32)
            t.score, t.last_seen, t.detected = f.score, frame_index, True
            t.hits += 1
            matched_t.add(int(ti))
            matched_f.add(int(fi))
        for i, t in enumerate(self.tracks):
            if i not in matched_t:
                t.detected = False
        for j, f in enumerate(faces):
            if j not in matched_f:
                self.tracks.append(Track(self.next_id, f.box.copy(), f.landmarks.copy(), f.score, frame_index,
                                         frame_index))
                self.next_id += 1
        self.tracks = [t for t in self.tracks if frame_index - t.last_seen <= self.max_misses]
        return self.active()

    def predict(self, frame_index: int) -> list[Track]:
        """No detection this frame: every track is placed where its motion model puts it."""
        self.frame = frame_index
        for t in self.tracks:
            t.detected = False
        self.tracks = [t for t in self.tracks if frame_index - t.last_seen <= self.max_misses]
        return self.active()

    def active(self) -> list[Track]:
        return list(self.tracks)

    def position(self, t: Track) -> tuple[np.ndarray, np.ndarray]:
        """Box and landmarks of ``t`` in the current frame (predicted when it was not detected)."""
        return t.shifted(self.frame - t.last_seen)

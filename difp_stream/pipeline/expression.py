"""The fake face moves with the person: each frame the original's expression is measured by the face mesh, and the
fake is set to it (absolutely, not by the change since a keyframe) along the style space's expression directions.

Per track:

- the original's measures are smoothed over time (an exponential average that follows a talking mouth within a
  frame or two);
- the fake's own expression is measured once on its keyframe render; a render is asked for the step that takes it to
  the original's, divided by a per-track ``gain`` that closes the loop: every render is measured, and the gain (a
  running least-squares fit of measured over asked change, from the fake's own expression) learns how far the
  linear directions really move this fake;
- renders are kept in an **atlas** keyed by the target expression and the pose, in bins of a fraction of each
  measure's spread: a face whose bin was rendered before reuses that render (warped into place by the paste), so a
  talking face settles into a few renders; at most one new render per ``render_every`` frames, between them the
  nearest one in the atlas stands in;
- the paste mask is the fake's own face region (from its mesh) intersected with the original's, feathered inside:
  the render's hair, hat and background never reach the frame, and nothing outside the original's face is touched.
"""
from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from ..faces import mesh as fm

POSE = (fm.MEASURES.index("yaw"), fm.MEASURES.index("pitch"))


@dataclass
class Look:
    """One rendered expression of a track's fake face."""

    crop: np.ndarray  # uint8 [S, S, 3]
    points: np.ndarray  # its mesh, [478, 2] in the crop's pixels
    measured: np.ndarray  # its measures [6]


@dataclass
class TrackExpression:
    smooth: np.ndarray | None = None  # the original's measures, smoothed [6]
    points: np.ndarray | None = None  # the original's mesh this frame, [478, 2] in the 256 px model crop
    found: bool = False  # the mesh found the original's face this frame
    fake: np.ndarray | None = None  # the fake's measures at its keyframe (unedited) [6]
    key: object = None  # the keyframe latent ``fake`` was measured for
    sxy: np.ndarray | None = None  # per driven measure: the gain's running sums (measured x asked, asked x asked)
    sxx: np.ndarray | None = None
    atlas: "OrderedDict[tuple, Look]" = field(default_factory=OrderedDict)
    last_render: int = -(10 ** 9)
    renders: int = 0


class ExpressionDrive:
    # what each driven measure can be (mouth opening, eye opening: >= 0; smile, a blendshape score: 0-1)
    RANGE = {"mouth": (0.0, 1.0), "smile": (0.0, 1.0), "eyes": (0.0, 1.0), "brows": (-1.0, 2.0)}

    def __init__(self, expression, mesh: fm.FaceMesh, smoothing: float = 0.15, bin_std: float = 0.35,
                 atlas_size: int = 48, feather: float = 0.035, gains: tuple[float, float] = (0.3, 3.0)):
        self.x, self.mesh = expression, mesh
        self.smoothing, self.bin_std, self.atlas_size, self.feather, self.gains = (smoothing, bin_std, atlas_size,
                                                                                   feather, gains)
        self.std = np.maximum(np.asarray(expression.d.std, np.float32), 1e-4)
        self.rows = list(expression.rows)
        self.tracks: dict[int, TrackExpression] = {}

    def state(self, tid: int) -> TrackExpression:
        te = self.tracks.get(tid)
        if te is None:
            te = self.tracks[tid] = TrackExpression()
            self._reset_gain(te)
        return te

    def _reset_gain(self, te: TrackExpression) -> None:
        te.sxy = np.ones(len(self.rows), np.float64)  # the prior: one step of one standard deviation, gain 1
        te.sxx = np.ones(len(self.rows), np.float64)

    def gain(self, te: TrackExpression) -> np.ndarray:
        return np.clip(te.sxy / te.sxx, *self.gains)

    def forget(self, alive: set[int]) -> None:
        for tid in [t for t in self.tracks if t not in alive]:
            del self.tracks[tid]

    # ---- the original
    def observe(self, tid: int, crop256: np.ndarray) -> TrackExpression:
        """Measure the original (its FFHQ crop at 256 px) and update the track's smoothed measures."""
        te = self.state(tid)
        r = self.mesh(crop256[None])
        te.found = bool(r.presence[0] > 0.5)
        if not te.found:  # no face for the mesh (blur, occlusion): keep the last expression, no region
            te.points = None
            return te
        m = fm.measures(r)[0]
        te.points = r.points[0, :, :2]
        te.smooth = m if te.smooth is None else self.smoothing * te.smooth + (1 - self.smoothing) * m
        return te

    # ---- the fake
    def measure(self, crop: np.ndarray) -> Look | None:
        r = self.mesh(crop[None])
        if r.presence[0] <= 0.5:
            return None
        return Look(crop, r.points[0, :, :2], fm.measures(r)[0])

    def keyframe(self, te: TrackExpression, key, crop: np.ndarray) -> None:
        """The fake's unedited expression at a (new) keyframe; a new fake person starts a new atlas."""
        look = self.measure(crop)
        te.fake = None if look is None else look.measured
        te.key, te.atlas = key, OrderedDict()
        self._reset_gain(te)

    def target(self, te: TrackExpression) -> np.ndarray:
        """The measures to render: the original's expression (within what each measure can be), the fake's own
        pose."""
        t = te.fake.copy()
        for i in self.rows:
            t[i] = np.clip(te.smooth[i], *self.RANGE.get(fm.MEASURES[i], (-np.inf, np.inf)))
        return t

    def bin(self, te: TrackExpression, target: np.ndarray) -> tuple:
        q = [int(np.floor(target[i] / (self.bin_std * self.std[i]) + 0.5)) for i in self.rows]
        q += [int(np.floor(te.smooth[i] / (self.bin_std * self.std[i]) + 0.5)) for i in POSE]
        return tuple(q)

    def centre(self, key: tuple, te: TrackExpression) -> np.ndarray:
        """The measures at the middle of an atlas bin (what its render aims at)."""
        t = te.fake.copy()
        for i, q in zip(self.rows, key):
            t[i] = q * self.bin_std * self.std[i]
        return t

    def nearest(self, te: TrackExpression, key: tuple) -> Look | None:
        if not te.atlas:
            return None
        k = np.asarray(key, np.float32)
        return min(te.atlas.items(), key=lambda kv: float(np.sum((np.asarray(kv[0], np.float32) - k) ** 2)))[1]

    def steps(self, te: TrackExpression, aim: np.ndarray) -> np.ndarray:
        """The steps along the directions asked of a render aiming at ``aim``: the change from the fake's own
        expression, divided by the track's gain."""
        ask = te.fake.copy()
        ask[self.rows] = te.fake[self.rows] + (aim[self.rows] - te.fake[self.rows]) / self.gain(te)
        return self.x.steps(te.fake[None], ask[None])[0]

    def rendered(self, te: TrackExpression, key: tuple, aim: np.ndarray, crop: np.ndarray, index: int) -> Look:
        """Keep a new render in the atlas; its measured expression updates the track's gain."""
        look = self.measure(crop)
        te.last_render, te.renders = index, te.renders + 1
        if look is None:  # the mesh did not find the render's face: use it, do not keep it
            return Look(crop, np.zeros((0, 2), np.float32), aim)
        sd = self.std[self.rows]
        g = self.gain(te)
        asked = (aim[self.rows] - te.fake[self.rows]) / g / sd  # in standard deviations
        got = (look.measured[self.rows] - te.fake[self.rows]) / sd
        te.sxy, te.sxx = te.sxy + asked * got, te.sxx + asked * asked
        te.atlas[key] = look
        while len(te.atlas) > self.atlas_size:
            te.atlas.popitem(last=False)
        return look

    # ---- the paste mask
    def mask(self, te: TrackExpression | None, points: np.ndarray | None, size: int) -> np.ndarray | None:
        """The paste mask for a fake crop of ``size`` px whose mesh is ``points`` (in its pixels; None: unknown):
        the fake's face region intersected with the original's, feathered inside both; None when the original's
        mesh is unknown this frame (the caller's default mask)."""
        if te is None or te.points is None:
            return None
        region = fm.face_region(te.points * (size / fm.SIZE), size)
        if points is not None and len(points):
            region &= fm.face_region(points, size)
        return fm.feathered(region, self.feather * size)

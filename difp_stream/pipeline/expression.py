"""The fake face moves with the person: each frame the original's expression is measured by the face mesh, and the
fake shows that expression (absolutely, not the change since a keyframe), rendered along the style space's
expression directions.

Per track:

- the original's measures (``faces/mesh.MEASURES``) are smoothed lightly over time;
- the fake's renders are kept in an **atlas**, each with its *measured* expression and pose (the mesh runs on every
  render): a frame shows the render whose measures are nearest the original's (closed loop: a render that missed its
  aim is simply not picked for it), warped into place by the paste. Only when none is near enough
  (``tolerance`` standard deviations) is a new one rendered, at most one per ``render_every`` frames per face; so a
  talking face settles into a few dozen renders and the per-frame cost is the mesh and the paste;
- a new render aims at the original's expression from the fake's own (measured on its keyframe), the step divided by
  a per-track gain (a running least-squares fit of measured over asked change) that learns how far the linear
  directions really move this fake;
- edits drift identity: a render (asked to move more than ``check_above`` standard deviations: by default every
  one) whose face is farther than ``max_drift`` (dlib) from the fake's keyframe face is not used, and the track's
  steps shrink from then on (at 0.6 and only past 1.5 std, one shown render of a talking clip came 0.68 from the
  track's first output face: a different person to a viewer; the original itself moves up to 0.4 while talking);
- the paste mask is the fake's own face region (from its mesh) intersected with the original's, feathered inside:
  the render's hair, hat and background never reach the frame, and nothing outside the original's face is touched.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

import cv2
import numpy as np

from ..faces import mesh as fm

POSE = [fm.MEASURES.index("yaw"), fm.MEASURES.index("pitch")]
ANCHORS = [33, 133, 362, 263, 1, 61, 291, 152, 234, 454, 10, 168]  # the face's frame, for fitting fake to original
# how much each measure counts when picking the atlas render for a frame (in standard deviations)
WEIGHTS = {"mouth": 2.0, "smile": 1.5, "eyes": 0.8, "brows": 0.3, "yaw": 0.7, "pitch": 0.7}
# eye opening and brow height are partly the person's build (narrow eyes, high brows), not expression: the fake
# takes their change from the person's own usual level (the median of the last HISTORY frames), not their value
RELATIVE = ("eyes", "brows")
HISTORY = 150


@dataclass
class Look:
    """One rendered expression of a track's fake face."""

    crop: np.ndarray  # uint8 [S, S, 3]
    points: np.ndarray  # its mesh, [478, 2] in the crop's pixels
    measured: np.ndarray  # its measures [6]
    used: int = 0  # the last frame it was shown


@dataclass
class TrackExpression:
    smooth: np.ndarray | None = None  # the original's measures, smoothed [6]
    history: deque = field(default_factory=lambda: deque(maxlen=HISTORY))  # the original's recent measures
    points: np.ndarray | None = None  # the original's mesh this frame, [478, 2] in the 256 px model crop
    found: bool = False  # the mesh found the original's face this frame
    fake: np.ndarray | None = None  # the fake's measures at its keyframe (unedited) [6]
    fake_code: np.ndarray | None = None  # the fake's identity code at its keyframe
    pose_offset: np.ndarray | None = None  # the fake's measured yaw/pitch minus the person's, at the keyframe [2]
    key: object = None  # the keyframe latent ``fake`` was measured for
    sxy: np.ndarray | None = None  # per driven measure: the gain's running sums (measured x asked, asked x asked)
    sxx: np.ndarray | None = None
    reach: float = 1.0  # steps are scaled by this (shrinks when an edit drifted identity)
    atlas: list = field(default_factory=list)
    last_render: int = -(10 ** 9)
    renders: int = 0
    rejected: int = 0


class ExpressionDrive:
    # what each driven measure can be (mouth opening, eye opening: >= 0; smile, a blendshape score: 0-1)
    RANGE = {"mouth": (0.0, 1.0), "smile": (0.0, 1.0), "eyes": (0.0, 1.0), "brows": (-1.0, 2.0)}

    def __init__(self, expression, mesh: fm.FaceMesh, identity=None, smoothing: float = 0.15, tolerance: float = 0.35,
                 atlas_size: int = 64, feather: float = 0.05, gains: tuple[float, float] = (0.3, 3.0),
                 max_drift: float = 0.5, settle: int = 6, check_above: float = 0.0, size: int = 256):
        self.x, self.mesh, self.identity = expression, mesh, identity
        self.smoothing, self.tolerance, self.atlas_size, self.feather, self.gains, self.max_drift = (
            smoothing, tolerance, atlas_size, feather, gains, max_drift)
        self.settle, self.check_above, self.size = settle, check_above, size
        self.std = np.maximum(np.asarray(expression.d.std, np.float32), 1e-4)
        self.rows = list(expression.rows)
        self.weights = np.array([WEIGHTS[n] if (i in self.rows or i in POSE) else 0.0
                                 for i, n in enumerate(fm.MEASURES)], np.float32)
        self.tracks: dict[int, TrackExpression] = {}

    def state(self, tid: int) -> TrackExpression:
        te = self.tracks.get(tid)
        if te is None:
            te = self.tracks[tid] = TrackExpression()
            self._reset(te)
        return te

    def _reset(self, te: TrackExpression) -> None:
        te.sxy = np.ones(len(self.rows), np.float64)  # the prior: one step of one standard deviation, gain 1
        te.sxx = np.ones(len(self.rows), np.float64)
        te.atlas, te.reach = [], 1.0

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
        te.history.append(m)
        return te

    # ---- the fake
    def measure(self, crop: np.ndarray) -> Look | None:
        r = self.mesh(crop[None])
        if r.presence[0] <= 0.5:
            return None
        return Look(crop, r.points[0, :, :2], fm.measures(r)[0])

    def _code(self, look: Look) -> np.ndarray | None:
        if self.identity is None:
            return None
        return self.identity(fm.template_crop(look.crop, look.points)[None])[0]

    def keyframe(self, te: TrackExpression, key, crop: np.ndarray, index: int = 0) -> None:
        """The fake's unedited expression at a (new) keyframe; a new fake person starts a new atlas (with this
        render in it, at most ``size`` px like the drive's renders: every face of the atlas shows the same detail,
        and a 512 px paste cost 50 ms a frame against 16 ms at 256)."""
        self._reset(te)
        if crop.shape[0] > self.size:
            crop = cv2.resize(crop, (self.size, self.size), interpolation=cv2.INTER_AREA)
        look = self.measure(crop)
        te.key = key
        te.fake = None if look is None else look.measured
        te.pose_offset = None
        if look is not None and te.smooth is not None:  # the measured pose is partly build (nose, face length)
            te.pose_offset = look.measured[POSE] - te.smooth[POSE]
        if look is not None:
            te.fake_code = self._code(look)
            look.used = index
            te.atlas.append(look)

    def target(self, te: TrackExpression) -> np.ndarray:
        """The measures to render: the original's expression (within what each measure can be) and pose. Mouth
        and smile are taken as they are (a shut mouth is shut on any face); eye opening as the fake's own scaled
        by the person's opening over their usual one (a blink closes the fake's eyes, a person with narrow eyes
        does not give the fake sleepy ones), brows as the fake's own plus the person's raise over their usual;
        the pose as the person's plus the fake's offset at the keyframe (a longer nose is not a turned head)."""
        t = te.smooth.copy()
        if te.pose_offset is not None:  # the pose the fake's renders show when they follow the person's
            t[POSE] += te.pose_offset
        if te.fake is not None and len(te.history):
            usual = np.median(np.asarray(te.history), axis=0)
            for name in RELATIVE:
                i = fm.MEASURES.index(name)
                if name == "eyes":
                    t[i] = te.fake[i] * float(np.clip(t[i] / max(float(usual[i]), 1e-3), 0.0, 1.3))
                else:
                    t[i] = te.fake[i] + (t[i] - usual[i])
        for i in self.rows:
            t[i] = np.clip(t[i], *self.RANGE.get(fm.MEASURES[i], (-np.inf, np.inf)))
        return t

    def distance(self, a: np.ndarray, b: np.ndarray) -> float:
        """Weighted distance between two measure vectors, in standard deviations."""
        return float(np.sqrt(np.sum(self.weights * ((a - b) / self.std) ** 2) / max(self.weights.sum(), 1e-6)))

    def pick(self, te: TrackExpression, index: int, every: int) -> tuple[Look | None, bool]:
        """(the atlas render nearest the original's expression and pose, whether a new render is wanted): nothing
        near enough and none rendered in the last ``every`` frames, a span that grows by ``every`` with each
        ``settle`` renders in the atlas (a track's first second fills it; later the expressions it has seen come
        back, and a new render is the exception)."""
        target = self.target(te)
        best = min(te.atlas, key=lambda lk: self.distance(lk.measured, target), default=None)
        far = best is None or self.distance(best.measured, target) > self.tolerance
        span = every * (1 + len(te.atlas) // max(1, self.settle))
        return best, far and index - te.last_render >= span

    def steps(self, te: TrackExpression, aim: np.ndarray) -> np.ndarray:
        """The steps along the directions asked of a render aiming at ``aim``: the change from the fake's own
        expression, divided by the track's gain, scaled by its reach."""
        ask = te.fake.copy()
        ask[self.rows] = te.fake[self.rows] + te.reach * (aim[self.rows] - te.fake[self.rows]) / self.gain(te)
        return self.x.steps(te.fake[None], ask[None])[0]

    def rendered(self, te: TrackExpression, aim: np.ndarray, crop: np.ndarray, index: int,
                 person: np.ndarray | None = None, min_distance: float = 0.0, keeps=None) -> Look | None:
        """A new render: measured, its gain fed; kept in the atlas unless its identity drifted off the fake's
        keyframe face (then None, and the track's steps shrink) or came closer than ``min_distance`` (dlib) to any
        of the person's codes ``person`` [K, 128] (then None: an edit never brings the person back), or when
        ``keeps(template_crop)`` says the edit lost the person's gender or age band (--attributes keep)."""
        look = self.measure(crop)
        te.last_render, te.renders = index, te.renders + 1
        if look is None or (keeps is not None and not keeps(fm.template_crop(look.crop, look.points))):
            te.rejected += 1  # the mesh did not find the render's face, or its edit changed who it seems to be
            return None
        sd = self.std[self.rows]
        asked = te.reach * (aim[self.rows] - te.fake[self.rows]) / self.gain(te) / sd  # in standard deviations
        got = (look.measured[self.rows] - te.fake[self.rows]) / sd
        te.sxy, te.sxx = te.sxy + asked * got, te.sxx + asked * asked
        if te.fake_code is not None and float(np.abs(asked).max(initial=0.0)) > self.check_above:
            code = self._code(look)  # (a small edit barely moves identity: the carried-face check sees it later)
            if code is not None and float(np.linalg.norm(code - te.fake_code)) > self.max_drift:
                te.reach = max(0.6, 0.9 * te.reach)
                te.rejected += 1
                return None
            if code is not None and person is not None and min_distance > 0 and \
                    float(np.linalg.norm(np.atleast_2d(person) - code, axis=1).min()) < min_distance:
                te.rejected += 1
                return None
        look.used = index
        te.atlas.append(look)
        if len(te.atlas) > self.atlas_size:  # the one shown longest ago goes (never the keyframe's own)
            te.atlas.pop(1 + int(np.argmin([lk.used for lk in te.atlas[1:]])))
        return look

    def drop(self, te: TrackExpression, crop: np.ndarray) -> None:
        """Take the render ``crop`` out of the track's atlas (it came too close to the person; never the keyframe's
        own face)."""
        te.atlas[1:] = [lk for lk in te.atlas[1:] if lk.crop is not crop]

    # ---- the paste
    def conform(self, te: TrackExpression | None, crop: np.ndarray, points: np.ndarray | None):
        """The fake crop (and its mesh) warped by the affine map that best takes its face's frame (eye corners,
        nose, mouth corners, cheeks, chin, forehead) onto the original's this frame: a fake whose face is shorter
        or wider than the person's, or a render of the atlas made at a slightly different pose, lands with its
        eyes, mouth and chin where the person's are. Unchanged when a mesh is missing or the map is implausible."""
        if te is None or te.points is None or points is None or not len(points):
            return crop, points
        size = crop.shape[0]
        src = points[ANCHORS].astype(np.float64)
        dst = te.points[ANCHORS].astype(np.float64) * (size / fm.SIZE)
        a, *_ = np.linalg.lstsq(np.c_[src, np.ones(len(src))], dst, rcond=None)
        m = a.T  # 2x3
        sv = np.linalg.svd(m[:, :2], compute_uv=False)
        if not np.all(np.isfinite(m)) or sv.max() > 1.25 or sv.min() < 0.8:
            return crop, points
        warped = cv2.warpAffine(crop, m.astype(np.float32), (size, size), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_REFLECT101)
        return warped, (np.c_[points, np.ones(len(points))] @ m.T).astype(np.float32)

    # ---- the paste mask
    def mask(self, te: TrackExpression | None, points: np.ndarray | None, size: int,
             crop: np.ndarray | None = None) -> np.ndarray | None:
        """The paste mask for a fake ``crop`` of ``size`` px whose mesh is ``points`` (in its pixels; None:
        unknown): the fake's face region, less its dark hair over the forehead, intersected with the original's,
        feathered inside both and faded out up the forehead; None when the original's mesh is unknown this frame
        (the caller's default mask)."""
        if te is None or te.points is None:
            return None
        own = te.points * (size / fm.SIZE)  # the original's mesh in this crop
        region = fm.face_region(own, size)
        if points is not None and len(points):
            region &= fm.face_region(points, size)
            if crop is not None:
                region &= ~self._hair(crop, points)
        return np.minimum(fm.feathered(region, self.feather * size), fm.forehead_fade(own, size))

    @staticmethod
    def _hair(crop: np.ndarray, points: np.ndarray) -> np.ndarray:
        """bool [S, S]: the fake's dark hair over its forehead (a fringe): pixels above the brows much darker
        than the skin between its eyes and mouth."""
        grey = cv2.cvtColor(crop, cv2.COLOR_RGB2GRAY).astype(np.float32)
        size = crop.shape[0]
        p = points.astype(np.int32).clip(0, size - 1)
        cheeks = grey[p[[50, 280, 4, 205, 425], 1], p[[50, 280, 4, 205, 425], 0]]  # cheeks, nose, beside the mouth
        skin = float(np.median(cheeks))
        brow = int(points[fm.BROWS, 1].min())
        dark = grey < 0.6 * skin
        dark[max(0, brow):] = False
        dark = cv2.dilate(dark.astype(np.uint8), np.ones((3, 3), np.uint8), iterations=max(1, size // 128)) > 0
        return dark

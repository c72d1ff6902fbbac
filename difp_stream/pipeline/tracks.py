"""What the pipeline keeps per track, and the two per-face decisions that use it: the similarity skip (reuse a still
face's last result) and the identity check (is the fake face far enough from this person, as it will look in the
output?)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from ..faces import align

MAX_LOOKS = 8  # recent views of a person kept per track for the verification (verify_every)


@dataclass
class FaceResult:
    """One protected face: the crop (model resolution), its recovery key, the fake identity it was drawn with and,
    for a DIFP keyframe, its protected latent (what later frames carry)."""

    crop: np.ndarray
    key: object = None  # FaceKey | None
    surrogate: np.ndarray | None = None
    latent: torch.Tensor | None = None  # [1, C, h, w]
    source: torch.Tensor | None = None  # a carried result: the original's latent in its frame (z0)
    points: np.ndarray | None = None  # the fake face's mesh [478, 2] in the crop's pixels (expression drive)
    kept: bool | None = None  # --attributes keep: whether the fake reads the original's gender and age band
    gender: bool | None = None  # ... and whether it reads at least the original's gender (None: not measured)


@dataclass
class Keyframe:
    index: int  # frame number of the track's last DIFP run
    latent: torch.Tensor  # the original's latent z0 there [1, C, h, w]
    protected: torch.Tensor  # the protected latent z0' there [1, C, h, w]


@dataclass
class TrackState:
    """Identity (who this is and which fake person stands in), the last keyframe, and the last result."""

    seed: int
    id_code: np.ndarray  # the original's dlib code at the track's first frame (or last refresh)
    id_frame: int = 0
    surrogate: np.ndarray | None = None  # the fake identity, one per track for its whole life
    seen_codes: list = field(default_factory=list)  # the original's codes at verified keyframes (newest last)
    weak: bool = False  # the last keyframe's fake face still matched the original: blurred until a keyframe passes
    key: Keyframe | None = None
    checked: int = -1  # frame of the last identity check of a carried face (models that keep their first keyframe)
    last: FaceResult | None = None  # the last result pasted (reused when time runs out, or the face is still)
    last_input: np.ndarray | None = None  # the original crop that produced it (int16, for the similarity skip)
    goal: object = None  # the original's apparent gender and age (difp.attributes.Goal; --attributes keep)

    def looks(self) -> np.ndarray:
        """The original's identity codes a fake face is checked against: the track's own plus recent views."""
        return np.stack([self.id_code, *self.seen_codes])


class SimilaritySkip:
    """While a face's aligned crop changes by less than ``level`` (mean absolute difference, 0-255), its last result
    (and recovery key) is reused: still faces and repeated frames cost nothing. ``level`` 0: off."""

    def __init__(self, level: float):
        self.level = level

    def same(self, state: TrackState, crop: np.ndarray) -> bool:
        return (self.level > 0 and state.last_input is not None
                and float(np.mean(np.abs(crop.astype(np.int16) - state.last_input))) < self.level)


class IdentityCheck:
    """A fake face must be far (dlib L2 >= ``cfg.verify_distance``) from every view of the person seen so far, as it
    will look in the output (pasted, colour-matched, re-cropped). Too close: other fake identities are drawn (up to
    ``cfg.verify_tries``) and the farthest is kept; if even that one is closer than ``cfg.blur_below``, the track
    is marked weak (blurred until a later keyframe passes)."""

    def __init__(self, protector, identity_encoder, cfg, timings, stats):
        self.p, self.id_enc, self.cfg, self.timings, self.stats = protector, identity_encoder, cfg, timings, stats

    @property
    def on(self) -> bool:
        return self.cfg.verify_distance > 0

    def wanted(self, st: TrackState) -> bool:
        """A track's first keyframe is always checked; later ones with ``verify_every``."""
        return self.on and (st.surrogate is None or self.cfg.verify_every)

    def distance(self, seen: np.ndarray, codes: np.ndarray) -> float:
        """dlib distance from a protected face to the nearest of the original's identity codes ``[K, D]``."""
        with self.timings("verify"):
            return float(np.linalg.norm(codes - self.id_enc(seen[None])[0], axis=1).min())

    @staticmethod
    def look(frame: np.ndarray, m128: np.ndarray, put):
        """How a protected crop will look in the output (``put(patch, crop)`` pastes it as the pipeline does): what
        a recognizer would see there."""

        def seen(crop: np.ndarray) -> np.ndarray:
            patch = frame.copy()
            put(patch, crop)
            return align.crop(patch, m128, 128)
        return seen

    def check(self, st: TrackState, result: FaceResult, frame: np.ndarray, m128: np.ndarray, put, crop: np.ndarray,
              crop128: np.ndarray, key_crop: np.ndarray | None, need: float | None = None, adjust=None,
              same: list | None = None) -> FaceResult:
        """The result to keep for this keyframe (maybe a redrawn one); sets ``st.weak`` and, when a redraw replaced
        a later keyframe's fake person, ``st.surrogate``. ``need``: the distance that passes without a redraw
        (default ``verify_distance``; a carried face that already passed once keeps its fake person down to
        ``blur_below``, so the track's fake does not change for a small move of the distance). ``adjust``: applied
        to each redrawn result before it is measured (the attribute steer); a fake far enough that misses the
        original's gender or age band is redrawn too (while ``cfg.verify_tries`` are left): of
        those at least ``verify_distance`` away, one that keeps them is preferred, then one that reaches ``need``.
        ``same``: other faces of the track's fake person (FaceResults without a latent), tried before any redraw."""
        need = self.cfg.verify_distance if need is None else need
        first = st.surrogate
        if first is not None:  # a later keyframe: this view of the person counts too
            with self.timings("identity"):
                st.seen_codes = [*st.seen_codes, self.id_enc(crop128[None])[0]][-MAX_LOOKS:]
        look = self.look(frame, m128, put)

        floor = min(need, self.cfg.verify_distance)  # never traded for the attributes (the margin above it can be)

        def rank(res: FaceResult, dist: float) -> tuple:  # privacy first, then the attributes, then the margin
            return dist >= floor, res.kept is not False, res.gender is not False, dist >= need, dist

        best, d = result, self.distance(look(result.crop), st.looks())
        for alt in same or ():  # the same fake person's other faces first: no new person while one of them passes
            if d >= need and best.kept is not False:
                break
            d2 = self.distance(look(alt.crop), st.looks())
            if rank(alt, d2) > rank(best, d):
                best, d = alt, d2
        for j in range(self.cfg.verify_tries):
            if d >= need and best.kept is not False:
                break
            self.stats.redrawn += 1
            with self.timings("difp"):
                r = self.p.protect(crop[None], seeds=[st.seed + 7919 * (j + 1)], id_codes=st.id_code[None],
                                   keys=self.cfg.keys, key_crops=key_crop)
            redrawn = FaceResult(r.crops[0], r.keys[0] if r.keys else None, r.surrogates[0], r.protected_latents[0:1])
            if adjust is not None:
                redrawn = adjust(redrawn)
            d2 = self.distance(look(redrawn.crop), st.looks())
            if rank(redrawn, d2) > rank(best, d):
                best, d = redrawn, d2
        st.weak = d < min(self.cfg.blur_below, self.cfg.verify_distance)
        if first is not None and best.surrogate is not None and best is not result:
            st.surrogate = best.surrogate  # privacy first: this track's fake person changes from here on
        return best


@dataclass
class Crops:
    """A frame's faces, aligned: at 128 (identity codes, checks), at the model's resolution, at the keys'."""

    c128: np.ndarray
    model: np.ndarray
    key: np.ndarray | None


@dataclass
class Plan:
    same: list = field(default_factory=list)  # faces whose last result is reused (similarity skip)
    full: list = field(default_factory=list)  # DIFP keyframes
    carried: list = field(default_factory=list)  # carried from their track's last keyframe


class FaceCheck:
    """A track whose detections the detector is unsure of (score below ``below``) is a face only once the face mesh
    finds one in its aligned crop (presence >= ``presence``; looked at again every ``every`` frames of the track);
    one detection at ``below`` or more, or one mesh that finds a face, settles it for the track's life. Until then
    the track is blurred (fail closed): a fake face is never pasted on what may not be a face. Measured on the
    dinner-table clip (2560x1920 fisheye): flowers, a vase, a bowl and a pair of glasses were detected at
    0.51-0.71 and tracked, and got fake faces; their crops read mesh presence 0.00-0.01, the people's 0.99-1.0.
    (The mesh finds no face in small, blurred or half-hidden real faces either: a half-hidden eval face at 0.83;
    faces narrower than ``min_size`` px, where a fake on a false detection is a smudge, are not looked at: on the
    crowd clip's 24-40 px faces the check would have blurred 30 more face-frames, most of them real faces.)"""

    def __init__(self, mesh, below: float = 0.8, min_size: int = 40, presence: float = 0.5, every: int = 8):
        self.mesh, self.below, self.presence, self.every = mesh, below, presence, max(1, every)
        self.min_size = min_size
        self._faces: set[int] = set()  # tracks settled as faces
        self._looked: dict[int, int] = {}  # track id -> the frame its doubtful face was last looked at

    def __call__(self, index: int, frame: np.ndarray, track_id: int, score: float, landmarks: np.ndarray,
                 width: float) -> bool:
        """Whether the track (its face ``width`` px wide) is taken for a face this frame."""
        if width < self.min_size:
            return True
        if track_id in self._faces or score >= self.below or self.mesh is None:
            self._faces.add(track_id)
            return True
        last = self._looked.get(track_id)
        if last is None or index - last >= self.every:
            self._looked[track_id] = index
            crop = align.crop(frame, align.similarity(landmarks, 256), 256)
            if self.mesh(crop[None]).presence[0] >= self.presence:
                self._faces.add(track_id)
                return True
        return False

    def forget(self, live: set) -> None:
        self._faces &= live
        self._looked = {k: v for k, v in self._looked.items() if k in live}

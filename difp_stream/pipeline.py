"""The frame loop's per-frame work: detect -> track -> align -> protect (batched) -> paste back, fail-closed.

``FaceProtector`` is the frame-level API for library use: ``process(frame_index, rgb) -> rgb``."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from .difp import Protector
from .faces import align
from .faces.detect import Detector
from .faces.track import Track, Tracker
from .keys.keyfile import FaceRecord


@dataclass
class PipelineConfig:
    seed: int = 0
    detect_every: int = 1  # run the detector every N frames; track in between
    threshold: float = 0.5  # detector score threshold (low: a missed face is a leak, a false one costs little)
    detect_size: int = 1280  # frames are downscaled to this longest side for detection
    min_face: int = 12  # ignore faces smaller than this (pixels)
    min_difp: int = 40  # faces narrower than this (pixels) get the blur cover: too small for a fake face to hold
    max_misses: int = 12  # frames a track is kept (and covered) without a detection
    identity_refresh: int = 0  # recompute a track's identity code every N frames (0: once per track)
    max_edge_cut: float = 0.15  # a face with more than this share of its box outside the frame is blurred (cut
    #                             faces cannot be aligned; the detector finds them on a padded frame)
    change_level: float = 12.0  # with detect_every > 1: a frame whose picture changed by more than this (0-255,
    #                            1/8-scale grey) outside the tracked faces is detected anyway (a new face shows up)
    max_yaw: float = 0.3  # nose offset from the eyes' midpoint / eye distance above which a face is blurred instead
    protect_every: int = 4  # full DIFP run per track every N frames; frames between are carried (Protector.carry)
    carry_cutoff: int = 8  # latent low-pass size of the motion carried between keyframes
    verify_distance: float = 0.7  # a fake face must be this far (dlib L2) from the original (0.6: same person) ...
    verify_tries: int = 2  # ... else up to this many other fake identities are tried (verify_distance 0: no check)
    blur_below: float = 0.65  # the farthest one tried still closer than this: the face is blurred (the margin above
    #                           0.6 absorbs how the distance moves from frame to frame and view to view)
    verify_every: bool = True  # check every DIFP keyframe, not only a track's first, against every look of the
    #                            person seen so far (each check adds that keyframe's original to the track's codes)
    skip_below: float = 1.0  # reuse a track's last result when its aligned crop changed less than this (mean |diff|,
    #                          0-255 levels); 0 disables the similarity skip
    keys: bool = False  # compute recovery keys (handed to ``on_key``)
    exact: bool = False  # also hand over the original pixels of each face region (exact recovery mode)


class Timings:
    """Wall time per stage in ms (``with timings("detect"): ...``, nestable); cheap enough to stay on."""

    def __init__(self):
        self.ms: dict[str, list[float]] = {}

    @contextmanager
    def __call__(self, stage: str):
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.ms.setdefault(stage, []).append((time.perf_counter() - t0) * 1000)


MAX_LOOKS = 8  # recent views of a person kept per track for the verification (verify_every)


@dataclass
class TrackState:
    seed: int
    id_code: np.ndarray
    surrogate: np.ndarray | None = None
    id_frame: int = 0
    key_frame: int = -1  # last DIFP keyframe of the track
    key_latent: object = None  # its original latent z0 [1, C, h, w]
    key_protected: object = None  # its protected latent z0' [1, C, h, w]
    last_crop: np.ndarray | None = None  # last protected crop (model resolution), reused when time runs out
    last_input: np.ndarray | None = None  # the original crop that produced last_crop (similarity skip)
    last_key: object = None  # and its recovery key
    weak: bool = False  # the last keyframe's fake face still matched the original: covered by the blur until the next
    seen_codes: list = field(default_factory=list)  # identity codes of the original at verified keyframes (newest last)

    def looks(self) -> np.ndarray:
        """The original's identity codes a fake face is checked against: the track's own plus recent views."""
        return np.stack([self.id_code, *self.seen_codes])


@dataclass
class Stats:
    frames: int = 0
    faces: int = 0  # face-frames covered
    protected: int = 0  # face-frames replaced (DIFP keyframes + carried frames)
    carried: int = 0  # of which carried from the track's last keyframe
    obscured: int = 0  # face-frames covered by the fail-closed blur
    reused: int = 0  # face-frames covered by the track's last protected crop (live mode, out of time)
    redrawn: int = 0  # fake identities drawn again because the first was too close to the original
    skipped: int = 0  # face-frames whose crop barely changed: the track's last result was reused (similarity skip)
    tracks: set = field(default_factory=set)


class FaceProtector:
    def __init__(self, protector: Protector, identity_encoder, cfg: PipelineConfig | None = None,
                 detector: Detector | None = None, on_key=None, log=None):
        self.p = protector
        self.id_enc = identity_encoder
        self.cfg = cfg or PipelineConfig()
        self.detector = detector or Detector(self.cfg.threshold, max_side=self.cfg.detect_size,
                                             min_size=self.cfg.min_face)
        self.tracker = Tracker(max_misses=self.cfg.max_misses)
        self.states: dict[int, TrackState] = {}
        self.stats = Stats()
        self.timings = Timings()
        self.p.timings = self.timings  # the protector's sub-stages (VAE, inversion, denoising) land here too
        self.on_key = on_key  # callable(FaceRecord)
        self.log = log or (lambda m: print(f"warning: {m}", file=sys.stderr))
        self._warned: set[str] = set()
        self.last_faces: list = []
        self._ref: np.ndarray | None = None  # 1/8-scale grey of the last detected frame (detect_every > 1)

    def warmup(self) -> None:
        """Run every stage once on a blank frame (runtime sessions, lazy model loads) so that the first real frames
        of a live stream do not pay for it; leaves no state behind."""
        blank = np.zeros((64, 64, 3), np.uint8)
        self.detector.detect([blank])
        crops = np.zeros((1, self.p.resolution, self.p.resolution, 3), np.uint8)
        code = self.id_enc(np.zeros((1, 128, 128, 3), np.uint8))
        kr = self.p.key_resolution  # keys at a higher resolution: their VAE encode is warmed up too
        self.p.protect(crops, seeds=[0], id_codes=code, keys=self.cfg.keys,
                       key_crops=np.zeros((1, kr, kr, 3), np.uint8))

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log(msg)

    def tracks_for(self, index: int, frame: np.ndarray) -> list[Track]:
        every = max(1, self.cfg.detect_every)
        thumb = _thumb(frame) if every > 1 else None
        if index % every == 0 or self._changed(thumb, index):
            with self.timings("detect"):
                faces = self.detector.detect([frame])[0]
            self._ref = thumb
            with self.timings("track"):
                return self.tracker.update(faces, index)
        with self.timings("track"):
            return self.tracker.predict(index)

    def _changed(self, thumb: np.ndarray, index: int) -> bool:
        """Between detections: did the picture change outside the faces already tracked (someone new walks in)?"""
        if self._ref is None or self._ref.shape != thumb.shape:
            return True
        diff = np.abs(thumb - self._ref) > self.cfg.change_level
        for t in self.tracker.tracks:  # where tracked faces move is no news: they are covered anyway
            box, _ = t.shifted(index - t.last_seen)
            cx, cy, half = (box[0] + box[2]) / 16, (box[1] + box[3]) / 16, 0.75 * max(box[2] - box[0], box[3] - box[1]) / 8
            diff[max(0, int(cy - half)):max(0, int(cy + half) + 1), max(0, int(cx - half)):max(0, int(cx + half) + 1)] = False
        return int(diff.sum()) >= 4

    def process(self, index: int, frame: np.ndarray, fast: bool = False) -> np.ndarray:
        """Protect every face of one RGB frame (a copy is returned). ``fast`` (live mode, behind real time): no
        diffusion; each face gets its track's last protected crop warped to its new position, or a blur."""
        out = frame.copy()
        tracks = self.tracks_for(index, frame)
        self.last_faces = []  # (track id, box, landmarks) of this frame, for benchmarks and callers
        self.stats.frames += 1
        if not tracks:
            return out
        todo = []  # (track, transform at model resolution, transform at 128)
        for t in tracks:
            box, lms = self.tracker.position(t)
            self.last_faces.append((t.id, box, lms))
            self.stats.faces += 1
            self.stats.tracks.add(t.id)
            if (align.is_profile(lms, self.cfg.max_yaw) or box[2] - box[0] < self.cfg.min_difp
                    or _outside(box, frame.shape) > self.cfg.max_edge_cut):
                self._cover_box(out, box)  # a profile (the frontal template cannot cover it), a tiny face, or one
                continue  #                  cut by the frame's edge
            try:
                m128 = align.similarity(lms, 128)
            except ValueError:
                self._cover_box(out, box)
                continue
            todo.append((t, m128))
        if todo and fast:
            self._reuse(frame, out, todo)
        elif todo:
            self._protect(index, frame, out, todo)
        return out

    def _distance(self, seen: np.ndarray, codes: np.ndarray) -> float:
        """dlib distance from a protected face to the nearest of the original's identity codes ``[K, D]``."""
        with self.timings("verify"):
            return float(np.linalg.norm(codes - self.id_enc(seen[None])[0], axis=1).min())

    @staticmethod
    def _seen(frame: np.ndarray, m128: np.ndarray, original: np.ndarray):
        """How a protected crop will look in the output (pasted, colour-matched, re-cropped at 128): what a
        recognizer would see there."""
        res = original.shape[0]
        m = m128 * np.float32(res / 128.0)

        def look(crop: np.ndarray) -> np.ndarray:
            patch = frame.copy()
            align.paste(patch, crop, m, original)
            return align.crop(patch, m128, 128)
        return look

    def _verified(self, crop: np.ndarray, st: "TrackState", res: tuple, look, key_crop=None) -> tuple[tuple, float]:
        """A protected face must be far from the original's identity: if dlib still matches it (distance <
        verify_distance), draw other fake identities (up to verify_tries) and keep the farthest. Returns the kept
        result and its distance."""
        best, d = res, self._distance(look(res[0]), st.looks())
        for j in range(self.cfg.verify_tries):
            if d >= self.cfg.verify_distance:
                break
            self.stats.redrawn += 1
            with self.timings("difp"):
                r = self.p.protect(crop[None], seeds=[st.seed + 7919 * (j + 1)], id_codes=st.id_code[None],
                                   keys=self.cfg.keys, key_crops=key_crop)
            d2 = self._distance(look(r.crops[0]), st.looks())
            if d2 > d:
                best, d = (r.crops[0], r.keys[0] if r.keys else None, r.surrogates[0], r.protected_latents[0:1]), d2
        return best, d

    def _reuse(self, frame: np.ndarray, out: np.ndarray, todo: list) -> None:
        res = self.p.resolution
        scale = np.array([[res / 128.0], [res / 128.0]], np.float32)
        for t, m128 in todo:
            st = self.states.get(t.id)
            with self.timings("reuse"):
                if st is not None and st.last_crop is not None and not st.weak:
                    m = m128 * scale
                    align.paste(out, st.last_crop, m, align.crop(frame, m, res))
                    self.stats.reused += 1
                else:
                    align.obscure(out, m128, 128)
                    self.stats.obscured += 1

    def _cover_box(self, out: np.ndarray, box: np.ndarray) -> None:
        x0, y0, x1, y1 = box
        cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * 1.2
        m = np.array([[128 / s, 0, 64 - cx * 128 / s], [0, 128 / s, 64 - cy * 128 / s]], np.float32)
        align.obscure(out, m, 128)
        self.stats.obscured += 1

    def _protect(self, index: int, frame: np.ndarray, out: np.ndarray, todo: list) -> None:
        res = self.p.resolution
        try:
            with self.timings("align"):
                crops128 = np.stack([align.crop(frame, m, 128) for _, m in todo])
                crops = crops128 if res == 128 else np.stack(
                    [cv2.resize(c, (res, res), interpolation=cv2.INTER_AREA) for c in crops128])
                kres, kcrops = self.p.key_resolution, None  # keys at a higher resolution see the face at that size
                if self.cfg.keys and kres != res:
                    kcrops = crops128 if kres == 128 else np.stack([align.crop(frame, m * (kres / 128.0), kres)
                                                                    for _, m in todo])
            for k, (t, _) in enumerate(todo):
                st = self.states.get(t.id)
                refresh = self.cfg.identity_refresh and st and index - st.id_frame >= self.cfg.identity_refresh
                if st is None or refresh:
                    with self.timings("identity"):
                        code = self.id_enc(crops128[k:k + 1])[0]
                    if st is None:
                        self.states[t.id] = TrackState(seed=self.cfg.seed * 1_000_003 + t.id, id_code=code,
                                                       id_frame=index)
                    else:
                        st.id_code, st.id_frame = code, index
            states = [self.states[t.id] for t, _ in todo]
            out_crops, out_keys = [None] * len(todo), [None] * len(todo)
            same = []
            if self.cfg.skip_below > 0:
                with self.timings("skip check"):
                    same = [k for k, s in enumerate(states) if s.last_input is not None and np.mean(
                        np.abs(crops[k].astype(np.int16) - s.last_input)) < self.cfg.skip_below]
                for k in same:
                    out_crops[k], out_keys[k] = states[k].last_crop, states[k].last_key
                self.stats.skipped += len(same)
            every = max(1, self.cfg.protect_every)
            full = [k for k, s in enumerate(states) if k not in same and (s.key_frame < 0 or index - s.key_frame >= every)]
            carried = [k for k in range(len(states)) if k not in full and k not in same]
            if full:
                st = [states[k] for k in full]
                surs = [s.surrogate for s in st]
                with self.timings("difp"):
                    r = self.p.protect(crops[full], seeds=[s.seed for s in st],
                                       id_codes=np.stack([s.id_code for s in st]), keys=self.cfg.keys,
                                       surrogates=None if any(v is None for v in surs) else np.stack(surs),
                                       key_crops=None if kcrops is None else kcrops[full])
                for i, (k, s) in enumerate(zip(full, st)):
                    res_i = (r.crops[i], r.keys[i] if r.keys else None, r.surrogates[i], r.protected_latents[i:i + 1])
                    if self.cfg.verify_distance > 0 and (s.surrogate is None or self.cfg.verify_every):
                        if s.surrogate is not None:  # a later keyframe: this view of the person counts too
                            with self.timings("identity"):
                                s.seen_codes = [*s.seen_codes, self.id_enc(crops128[k:k + 1])[0]][-MAX_LOOKS:]
                        res_i, d = self._verified(crops[k], s, res_i, self._seen(frame, todo[k][1], crops[k]),
                                                  None if kcrops is None else kcrops[k:k + 1])
                        s.weak = d < min(self.cfg.blur_below, self.cfg.verify_distance)
                        if s.surrogate is not None and res_i[2] is not r.surrogates[i]:
                            s.surrogate = res_i[2]  # privacy first: this track's fake person changes from here on
                    if s.surrogate is None:  # one fake person per track, for its whole life
                        s.surrogate = res_i[2]
                    s.key_frame, s.key_latent, s.key_protected = index, r.latents[i:i + 1], res_i[3]
                    out_crops[k], out_keys[k] = res_i[0], res_i[1]
            if carried:
                st = [states[k] for k in carried]
                with self.timings("carry"):
                    r = self.p.carry(crops[carried], torch.cat([s.key_latent for s in st]),
                                     torch.cat([s.key_protected for s in st]), self.cfg.carry_cutoff,
                                     keys=self.cfg.keys, key_crops=None if kcrops is None else kcrops[carried])
                for i, k in enumerate(carried):
                    out_crops[k], out_keys[k] = r.crops[i], r.keys[i] if r.keys else None
        except Exception as e:  # fail closed: nothing passes through unprotected
            self._warn_once(f"protect:{type(e).__name__}", f"protection failed ({type(e).__name__}: {e}); "
                            "faces are covered by a blur instead")
            for _, m in todo:
                align.obscure(out, m, 128)
                self.stats.obscured += 1
            return
        scale = np.array([[res / 128.0], [res / 128.0]], np.float32)
        for k, (t, m128) in enumerate(todo):
            m = m128 * scale
            st = self.states[t.id]
            if st.weak:  # no fake face far enough from this person: fail closed
                align.obscure(out, m128, 128)
                self.stats.obscured += 1
                continue
            with self.timings("blend"):
                align.paste(out, out_crops[k], m, crops[k])
            if st.last_crop is not out_crops[k]:  # a new result (not a similarity skip)
                st.last_crop, st.last_input, st.last_key = out_crops[k], crops[k].astype(np.int16), out_keys[k]
            self.stats.protected += 1
            self.stats.carried += k in carried
            if self.on_key is not None and out_keys[k] is not None:
                exact = None
                if self.cfg.exact:
                    box = align.roi_of(m, res, frame.shape[:2])
                    if box is not None:
                        x0, y0, x1, y1 = box
                        exact = (box, frame[y0:y1, x0:x1].copy())
                self.on_key(FaceRecord(t.id, index, m, out_keys[k], exact))


def _thumb(frame: np.ndarray) -> np.ndarray:
    h, w = frame.shape[:2]
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    return cv2.resize(grey, (max(1, w // 8), max(1, h // 8)), interpolation=cv2.INTER_AREA).astype(np.int16)


def _outside(box: np.ndarray, shape: tuple) -> float:
    """Share of a face box that lies outside the frame."""
    x0, y0, x1, y1 = (float(v) for v in box)
    h, w = shape[:2]
    area = max(x1 - x0, 1e-6) * max(y1 - y0, 1e-6)
    inside = max(0.0, min(x1, w) - max(x0, 0)) * max(0.0, min(y1, h) - max(y0, 0))
    return 1 - inside / area


class FaceRecoverer:
    """Authorized replay: paste recovered faces (from decrypted key records) back into protected frames."""

    def __init__(self, protector: Protector, records):
        """``records``: any iterable of :class:`FaceRecord` (a key file's, in the order it was written); it is read
        as the frames come, so a long recovery holds one frame's records at a time. Records out of frame order are
        sorted first (the whole list is then held)."""
        self.p = protector
        if isinstance(records, list) and any(a.frame_index > b.frame_index for a, b in zip(records, records[1:])):
            records = sorted(records, key=lambda r: r.frame_index)
        self._records = iter(records)
        self._next: FaceRecord | None = None
        self.restored = 0

    def _take(self, index: int) -> list[FaceRecord]:
        """The records of frame ``index`` (earlier ones, for frames that never came, are passed over)."""
        recs = []
        while True:
            if self._next is None:
                self._next = next(self._records, None)
                if self._next is None:
                    return recs
            if self._next.frame_index > index:
                return recs
            if self._next.frame_index == index:
                recs.append(self._next)
            self._next = None

    def process(self, index: int, frame: np.ndarray) -> np.ndarray:
        recs = self._take(index)
        if not recs:
            return frame
        out = frame.copy()
        diffusion = [r for r in recs if r.exact is None]
        if diffusion:
            crops = self.p.recover([r.key for r in diffusion])
            for r, c in zip(diffusion, crops):  # the transform maps to the model's crop; keys may be larger
                align.paste(out, c, r.transform * (c.shape[0] / self.p.resolution))
        for r in recs:
            if r.exact is not None:
                (x0, y0, x1, y1), pixels = r.exact[0], r.exact_pixels()
                if pixels.shape[:2] == (y1 - y0, x1 - x0) and y1 <= out.shape[0] and x1 <= out.shape[1]:
                    out[y0:y1, x0:x1] = pixels
        self.restored += len(recs)
        return out

"""The frame-level API: ``FaceProtector.process(frame_index, rgb) -> rgb``. Every face of a frame goes through
named stages, and anything that fails is covered (fail closed):

    detect / track  ->  triage (profiles, tiny and cut faces are blurred)  ->  crops (aligned)  ->  identities
    ->  expressions (face mesh of each original)  ->  plan (similarity skip | DIFP keyframe | carried)
    ->  keyframes (DIFP + identity check)  ->  carried (expression drive: atlas or render)  ->  checks
    ->  paste (mesh-region mask, + recovery keys)
"""
from __future__ import annotations

import logging

import cv2
import numpy as np
import torch

from ..difp import Protector
from ..faces import align
from ..faces.detect import Detector
from ..faces.mesh import load_mesh
from ..faces.track import Track, Tracker
from ..keys.keyfile import FaceRecord
from .carry import StyleStages
from .config import PipelineConfig, Stats, Timings
from .tracks import Crops, FaceCheck, FaceResult, IdentityCheck, Keyframe, Plan, SimilaritySkip, TrackState

log_ = logging.getLogger(__name__)


class FaceProtector(StyleStages):
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
        self.framing = protector.model.framing  # how the model's crops are cut
        self.skip = SimilaritySkip(self.cfg.skip_below)
        self.check = IdentityCheck(protector, identity_encoder, self.cfg, self.timings, self.stats)
        self.is_face = FaceCheck(load_mesh() if self.cfg.face_check_below > 0 else None, self.cfg.face_check_below,
                                 self.cfg.face_check_min, every=self.cfg.check_every)
        self.on_key = on_key  # callable(FaceRecord)
        self.log = log or log_.warning
        self._warned: set[str] = set()
        self.last_faces: list = []
        self._index = 0  # the frame being processed (cover records name it)
        self._boxes: dict[int, np.ndarray] = {}  # each face's box in this frame (the cover's region)
        self._ref: np.ndarray | None = None  # 1/8-scale grey of the last detected frame (detect_every > 1)
        self.drive = self._make_drive()  # the expression drive (None: a model without expression directions)
        self.steer = self._make_steer()  # --attributes keep (None: random, or a model without attribute directions)

    def warmup(self) -> None:
        """Run every stage once on a blank frame (runtime sessions, lazy model loads) so that the first real frames
        of a live stream do not pay for it; leaves no state behind."""
        self.detector.detect([np.zeros((64, 64, 3), np.uint8)])
        crops = np.zeros((1, self.p.resolution, self.p.resolution, 3), np.uint8)
        code = self.id_enc(np.zeros((1, 128, 128, 3), np.uint8))
        kr = self.p.key_resolution  # keys at a higher resolution: their VAE encode is warmed up too
        self.p.protect(crops, seeds=[0], id_codes=code, keys=self.cfg.keys,
                       key_crops=np.zeros((1, kr, kr, 3), np.uint8))
        if self.drive is not None:  # the face mesh, and the renders at the sizes the drive asks for
            self.drive.mesh(np.zeros((1, 256, 256, 3), np.uint8))
            c = self.p.model.cfg
            size, z = self.p.render_size, torch.zeros(1, c.n_layers, c.style_dim)  # (the mean face)
            for s in sorted({128, max(128, min(self.cfg.expression_render, self.cfg.max_render))}):
                self.p.render_size = s
                self.p._render(z)
            self.p.render_size = size
        if self.steer is not None:
            self.attr_est(np.zeros((1, 128, 128, 3), np.uint8))

    def _warn_once(self, key: str, msg: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.log(msg)

    # ------------------------------------------------------------------------------------------------ detect, track
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
        # a tracked face moving inside its own (predicted) box is no news: it is covered anyway. Only the box itself,
        # rounded out to thumbnail pixels: 1.5x the box hid a small newcomer beside a face for 3 frames
        for t in self.tracker.tracks:
            box, _ = t.shifted(index - t.last_seen)
            x0, y0, x1, y1 = (int(v) for v in (box[0] // 8, box[1] // 8, -(-box[2] // 8), -(-box[3] // 8)))
            diff[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] = False
        return int(diff.sum()) >= 4

    # ------------------------------------------------------------------------------------------------ the frame
    def process(self, index: int, frame: np.ndarray, fast: bool = False) -> np.ndarray:
        """Protect every face of one RGB frame (a copy is returned). ``fast`` (live mode, behind real time): no
        diffusion; each face gets its track's last protected crop warped to its new position, or a blur."""
        out = frame.copy()
        tracks = self.tracks_for(index, frame)
        self.last_faces = []  # (track id, box, landmarks) of this frame, for benchmarks and callers
        self.stats.frames += 1
        self._index, self._boxes = index, {}
        todo = self._triage(index, frame, out, tracks)
        if todo and fast:
            self._reuse(frame, out, todo)
        elif todo:
            self._protect(index, frame, out, todo)
        return out

    def _triage(self, index: int, frame: np.ndarray, out: np.ndarray, tracks: list[Track]) -> list:
        """The faces DIFP can replace, as (track, 2x3 transform to the 128 template); the others are blurred now:
        profiles (the frontal template cannot cover them), faces too small, faces cut by the frame's edge, and
        doubtful detections the face mesh finds no face in (``FaceCheck``)."""
        todo = []
        self.is_face.forget({t.id for t in tracks})
        for t in tracks:
            box, lms = self.tracker.position(t)
            self.last_faces.append((t.id, box, lms))
            self._boxes[t.id] = box
            self.stats.faces += 1
            self.stats.tracks.add(t.id)
            wide = box[2] - box[0] >= self.cfg.turned_min_size
            profile = align.is_profile(lms, self.cfg.max_yaw if wide else self.cfg.small_max_yaw)
            if profile or box[2] - box[0] < self.cfg.min_difp or _outside(box, frame.shape) > self.cfg.max_edge_cut:
                self._cover(frame, out, t.id)
                self.stats.profiles += profile
                self.stats.small += not profile
                continue
            with self.timings("face check"):
                face = self.is_face(index, frame, t.id, t.score, lms, box[2] - box[0])
            if not face:
                self._cover(frame, out, t.id)
                self.stats.not_faces += 1
                continue
            try:
                m128 = align.similarity(lms, 128)
                todo.append((t, m128, align.framing_transform(self.framing, lms, m128)))
            except ValueError:
                self._cover(frame, out, t.id)
        return todo

    def _put(self, out: np.ndarray, frame: np.ndarray, crop: np.ndarray, mm: np.ndarray,
             original: np.ndarray | None = None, tid: int | None = None, points: np.ndarray | None = None):
        """Paste a model output ``crop`` (any size) where the transform at 128 ``mm`` says, colour-matched to the
        original there, through the model's mask (a feathered square, or the face region); with the expression
        drive, the face region of track ``tid``'s original this frame intersected with the fake's own (``points``,
        its mesh in the crop's pixels). Returns the transform and the mask it pasted through."""
        size = crop.shape[0]
        m = mm * np.float32(size / 128.0)
        if original is None or original.shape[0] != size:
            original = align.crop(frame, m, size)
        mask = None
        if self.drive is not None and tid is not None:
            with self.timings("paste mask"):
                te = self.drive.tracks.get(tid) if points is not None else None  # (driven faces only)
                crop, points = self.drive.conform(te, crop, points)
                mask = self.drive.mask(te, points, size, crop)
        if mask is None:
            mask = align.framing_mask(self.framing, size)
        align.paste(out, crop, m, original, mask=mask,
                    detail=self.framing == "ffhq")  # (a pixel model's VAE output is never sharper than the footage)
        return m, mask

    def _reuse(self, frame: np.ndarray, out: np.ndarray, todo: list) -> None:
        for t, _, mm in todo:
            st = self.states.get(t.id)
            with self.timings("reuse"):
                if st is not None and st.last is not None and not st.weak:
                    self._put(out, frame, st.last.crop, mm)
                    self.stats.reused += 1
                else:
                    self._cover(frame, out, t.id)

    def _cover(self, frame: np.ndarray, out: np.ndarray, tid: int) -> None:
        """The fail-closed blur of face ``tid`` of this frame, bounded by the face: a square 1.25x its detector box
        (forehead to chin, cheek to cheek), blurred 1.1x as wide (1.4x the box in all: the template's square, 1.6-2x
        the box, took the whole of a small picture). With keys on, the region's original pixels go into the key file
        as a cover record: ``recover`` brings blurred faces back too (a JPEG at ``cover_quality``, or a PNG with exact
        recovery, whatever the recovery mode)."""
        x0, y0, x1, y1 = (float(v) for v in self._boxes[tid])
        cx, cy, s = (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0, 1.0) * 1.25
        m128 = np.array([[128 / s, 0, 64 - cx * 128 / s], [0, 128 / s, 64 - cy * 128 / s]], np.float32)
        changed = align.obscure(out, m128, 128)
        self.stats.obscured += 1
        if changed is None or not self.cfg.keys or self.on_key is None:
            return
        x0, y0, x1, y1 = changed
        quality = 0 if self.cfg.exact and not self.cfg.pixels_quality else self.cfg.cover_quality
        self.on_key(FaceRecord(tid, self._index, m128, None, (changed, frame[y0:y1, x0:x1].copy()), quality))

    def _protect(self, index: int, frame: np.ndarray, out: np.ndarray, todo: list) -> None:
        try:
            crops = self._crops(frame, todo)
            states = self._identities(index, todo, crops)
            self._expressions(frame, todo)
            results, plan = self._plan(index, states, crops)
            self._keyframes(index, frame, todo, states, crops, results, plan.full)
            self._carried(index, todo, states, crops, results, plan.carried)
            self._checks(index, frame, todo, states, crops, results, plan.carried)
        except Exception as e:  # fail closed: nothing passes through unprotected
            self._warn_once(f"protect:{type(e).__name__}", f"protection failed ({type(e).__name__}: {e}); "
                            "faces are covered by a blur instead")
            for t, m, _ in todo:
                self._cover(frame, out, t.id)
            return
        self._paste(index, frame, out, todo, states, crops, results, plan)

    # ------------------------------------------------------------------------------------------------ stages
    def _crops(self, frame: np.ndarray, todo: list) -> Crops:
        res, kres = self.p.resolution, self.p.key_resolution
        with self.timings("align"):
            c128 = np.stack([align.crop(frame, m, 128) for _, m, _ in todo])
            if self.framing != "template":
                model = np.stack([align.crop(frame, mm * np.float32(res / 128.0), res) for _, _, mm in todo])
            elif res == 128:
                model = c128
            else:
                model = np.stack([cv2.resize(c, (res, res), interpolation=cv2.INTER_AREA) for c in c128])
            key = None  # keys at a higher resolution see the face at that size
            if self.cfg.keys and kres != res:
                key = c128 if kres == 128 else np.stack([align.crop(frame, m * (kres / 128.0), kres)
                                                         for _, m, _ in todo])
        return Crops(c128, model, key)

    def _identities(self, index: int, todo: list, crops: Crops) -> list[TrackState]:
        """Each new track gets its original's identity code (and its seed); refreshed every identity_refresh."""
        for k, (t, *_) in enumerate(todo):
            st = self.states.get(t.id)
            refresh = self.cfg.identity_refresh and st and index - st.id_frame >= self.cfg.identity_refresh
            if st is None or refresh:
                with self.timings("identity"):
                    code = self.id_enc(crops.c128[k:k + 1])[0]
                if st is None:
                    self.states[t.id] = TrackState(seed=self.cfg.seed * 1_000_003 + t.id, id_code=code, id_frame=index)
                else:
                    st.id_code, st.id_frame = code, index
        return [self.states[t.id] for t, *_ in todo]

    def _expressions(self, frame: np.ndarray, todo: list) -> None:
        """The expression drive: each original measured by the face mesh on its FFHQ crop at 256 px."""
        if self.drive is None:
            return
        with self.timings("mesh"):
            for t, _, mm in todo:
                self.drive.observe(t.id, align.crop(frame, mm * np.float32(2.0), 256))
        self.drive.forget({t.id for t in self.tracker.tracks})

    def _plan(self, index: int, states: list[TrackState], crops: Crops) -> tuple[list, Plan]:
        results: list[FaceResult | None] = [None] * len(states)
        plan = Plan()
        if self.skip.level > 0:
            with self.timings("skip check"):
                plan.same = [k for k, s in enumerate(states) if self.skip.same(s, crops.model[k])]
        for k in plan.same:
            results[k] = states[k].last
        self.stats.skipped += len(plan.same)
        every = max(1, self.cfg.protect_every)
        rest = [k for k in range(len(states)) if k not in plan.same]
        rekey = self.p.model.rekey  # a style-space model keeps its first keyframe (see there)
        plan.full = [k for k in rest if states[k].key is None or rekey and index - states[k].key.index >= every]
        plan.carried = [k for k in rest if k not in plan.full]
        return results, plan

    def _size_for(self, todo: list, ks: list) -> None:
        """A style-space model renders at the faces' size in the frame: the smallest of 128-1024 px that the FFHQ
        crop's side there exceeds by at most 15% (the largest face of a batch decides), up to ``cfg.max_render``
        (a 128 px render stretched 1.4x measured soft: mid-band detail 0.54 of the original's)."""
        if self.framing != "ffhq" or not ks:
            return
        side = max(128.0 / align._scale(todo[k][2]) for k in ks)
        size = next((s for s in (128, 256, 512) if 1.15 * s >= side), 1024)
        self.p.render_size = max(128, min(size, self.cfg.max_render))

    def _keyframes(self, index, frame, todo, states, crops: Crops, results: list, full: list) -> None:
        """A full DIFP run for the faces due one, batched; each result checked against the person, then kept."""
        if not full:
            return
        self._size_for(todo, full)
        st = [states[k] for k in full]
        surs = [s.surrogate for s in st]
        with self.timings("difp"):
            r = self.p.protect(crops.model[full], seeds=[s.seed for s in st], id_codes=np.stack([s.id_code for s in st]),
                               keys=self.cfg.keys, surrogates=None if any(v is None for v in surs) else np.stack(surs),
                               key_crops=None if crops.key is None else crops.key[full])
        for i, (k, s) in enumerate(zip(full, st)):
            res = FaceResult(r.crops[i], r.keys[i] if r.keys else None, r.surrogates[i], r.protected_latents[i:i + 1])
            put = (lambda patch, crop, mm=todo[k][2], tid=todo[k][0].id: self._put(patch, frame, crop, mm, tid=tid))
            adjust = self._adjust(s, frame, todo[k], put, crops.c128[k]) if s.surrogate is None else None
            if adjust is not None:  # a track's first fake: its gender and age
                res = adjust(res)
            if self.check.wanted(s):
                res = self.check.check(s, res, frame, todo[k][1], put, crops.model[k], crops.c128[k],
                                       None if crops.key is None else crops.key[k:k + 1], need=self._need(s),
                                       adjust=adjust)
            if s.surrogate is None:  # one fake person per track, for its whole life
                s.surrogate = res.surrogate
            s.key = Keyframe(index, r.latents[i:i + 1], res.latent)
            results[k] = res
            if self.drive is not None:
                with self.timings("mesh"):
                    self.drive.keyframe(self.drive.state(todo[k][0].id), s.key.protected, res.crop, index)
        if self.drive is not None:  # the keyframe's own frame already takes the original's expression
            checked = {k: results[k].crop for k in full}
            self._driven(index, todo, states, crops, results, full, keyframes=True)
            self._recheck(frame, todo, states, results, checked)

    def _carried(self, index: int, todo: list, states: list[TrackState], crops: Crops, results: list,
                 carried: list) -> None:
        """Between keyframes the fake face follows the original's motion (one VAE round trip, or encode and render,
        per face); with ``render_every`` N > 1, frames off the N-grid reuse the track's last face (warped into place
        when pasted) and only their keys are computed."""
        if self.drive is not None:
            carried = self._driven(index, todo, states, crops, results, carried)  # the rest: as without the drive
        every = max(1, self.cfg.render_every) if self.framing == "ffhq" else 1  # (a style-space model's option)
        held = [k for k in carried if every > 1 and (index - states[k].key.index) % every
                and states[k].last is not None]
        for ks, render in (([k for k in carried if k not in held], True), (held, False)):
            if not ks or not (render or self.cfg.keys):
                for k in ks:
                    results[k] = FaceResult(states[k].last.crop)
                continue
            if render:
                self._size_for(todo, ks)
            st = [states[k] for k in ks]
            with self.timings("carry" if render else "carry: keys"):
                r = self.p.carry(crops.model[ks], torch.cat([s.key.latent for s in st]),
                                 torch.cat([s.key.protected for s in st]), self.cfg.carry_cutoff, keys=self.cfg.keys,
                                 key_crops=None if crops.key is None else crops.key[ks], render=render)
            for i, k in enumerate(ks):
                crop = r.crops[i] if render else states[k].last.crop
                results[k] = FaceResult(crop, r.keys[i] if r.keys else None, source=r.latents[i:i + 1])

    def _paste(self, index, frame, out, todo, states, crops: Crops, results: list, plan: Plan) -> None:
        res = self.p.resolution
        for k, (t, _, mm) in enumerate(todo):
            m, st, result = mm * np.float32(res / 128.0), states[k], results[k]  # m: to the model's input crop
            if st.weak:  # no fake face far enough from this person: fail closed
                self._cover(frame, out, t.id)
                continue
            with self.timings("blend"):
                pasted = self._put(out, frame, result.crop, mm, crops.model[k], tid=t.id, points=result.points)
            if st.last is not result:  # a new result (not a similarity skip)
                st.last, st.last_input = result, crops.model[k].astype(np.int16)
            self.stats.protected += 1
            self.stats.carried += k in plan.carried
            if self.on_key is not None and result.key is not None:
                self.on_key(FaceRecord(t.id, index, m, result.key, self._exact(frame, *pasted), self.cfg.pixels_quality))

    def _exact(self, frame: np.ndarray, m: np.ndarray, mask: np.ndarray):
        """Exact / faithful recovery: the original pixels of the region the paste changed (``mask``, aligned by
        ``m``)."""
        if not self.cfg.exact:
            return None
        box = align.mask_roi(m, mask, frame.shape[:2])
        if box is None:
            return None
        x0, y0, x1, y1 = box
        return box, frame[y0:y1, x0:x1].copy()


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

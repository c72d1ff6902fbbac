"""The frame-level API: ``FaceProtector.process(frame_index, rgb) -> rgb``. Every face of a frame goes through
named stages, and anything that fails is covered (fail closed):

    detect / track  ->  triage (profiles, tiny and cut faces are blurred)  ->  crops (aligned)  ->  identities
    ->  expressions (face mesh of each original)  ->  plan (similarity skip | DIFP keyframe | carried)
    ->  keyframes (DIFP + identity check)  ->  carried (expression drive: atlas or render)  ->  checks
    ->  paste (mesh-region mask, + recovery keys)
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

from ..difp import Protector
from ..faces import align
from ..faces.detect import Detector
from ..faces.track import Track, Tracker
from ..keys.keyfile import FaceRecord
from .config import PipelineConfig, Stats, Timings
from .tracks import FaceResult, IdentityCheck, Keyframe, SimilaritySkip, TrackState

log_ = logging.getLogger(__name__)


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
        self.framing = getattr(protector.model.cfg, "framing", "template")  # how the model's crops are cut
        self.skip = SimilaritySkip(self.cfg.skip_below)
        self.check = IdentityCheck(protector, identity_encoder, self.cfg, self.timings, self.stats)
        self.on_key = on_key  # callable(FaceRecord)
        self.log = log or log_.warning
        self._warned: set[str] = set()
        self.last_faces: list = []
        self._index = 0  # the frame being processed (cover records name it)
        self._boxes: dict[int, np.ndarray] = {}  # each face's box in this frame (the cover's region)
        self._ref: np.ndarray | None = None  # 1/8-scale grey of the last detected frame (detect_every > 1)
        self.drive = self._make_drive()  # the expression drive (None: a model without expression directions)
        self.steer = self._make_steer()  # --attributes keep (None: random, or a model without attribute directions)

    def _make_drive(self):
        dirs = getattr(self.p.model, "directions", None)
        if not self.cfg.expression or dirs is None or self.framing != "ffhq":
            return None
        from ..difp.expression import Expression
        from ..faces.mesh import load_mesh
        from .expression import ExpressionDrive

        return ExpressionDrive(Expression(dirs, self.p.model), load_mesh(), self.id_enc,
                               tolerance=self.cfg.expression_tolerance,
                               size=max(128, min(self.cfg.expression_render, self.cfg.max_render)))

    def _make_steer(self):
        dirs = getattr(self.p.model, "attributes", None)
        if self.cfg.attributes != "keep" or dirs is None or self.framing != "ffhq":
            return None
        from ..difp.attributes import AttributeSteer
        from ..faces.attributes import load_estimator

        self.attr_est = load_estimator()
        return AttributeSteer(dirs, self.p.model)

    def _keep_attributes(self, st: TrackState, res: FaceResult, frame: np.ndarray, m128: np.ndarray, put,
                         c128: np.ndarray) -> FaceResult:
        """--attributes keep: the fake face of a keyframe steered to the original's apparent gender and age (read
        on the original's template crop once per track, and on the fake as it will look in the output)."""
        from ..difp.attributes import Goal

        with self.timings("attributes"):
            if st.goal is None:
                a = self.attr_est(c128[None])
                st.goal = Goal(bool(a.male[0] > 0.5), float(a.age[0]))
            look = self.check.look(frame, m128, put)

            def measure(face):
                a = self.attr_est(look(face)[None])
                return float(a.logit[0]), float(a.age[0])

            z, face, n, met = self.steer.steer(res.latent, res.crop, st.goal, measure,
                                               lambda z: self.p._render(z)[0])
        self.stats.steered += n > 0
        return FaceResult(face, res.key, res.surrogate, z, res.source, res.points, kept=met)

    def _adjust(self, st: TrackState, frame: np.ndarray, face: tuple, put, c128: np.ndarray):
        """--attributes keep: the steer applied to a fake drawn for face ``face`` (track, m128, model transform) of
        this frame, or None (random, or a face too small for the attribute nets)."""
        if self.steer is None or 128.0 / align._scale(face[2]) < self.cfg.attributes_min_size:
            return None
        return lambda res: self._keep_attributes(st, res, frame, face[1], put, c128)

    def _keeps(self, st: TrackState):
        """--attributes keep: a test that an expression render still reads the person's gender and about their age
        (on its own template crop; looser than the steer's goal, which is read as pasted)."""
        if self.steer is None or st.goal is None:
            return None

        def keeps(crop128: np.ndarray) -> bool:
            with self.timings("attributes"):
                a = self.attr_est(crop128[None])
            return st.goal.near(float(a.logit[0]), float(a.age[0]))
        return keeps

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
        todo = self._triage(frame, out, tracks)
        if todo and fast:
            self._reuse(frame, out, todo)
        elif todo:
            self._protect(index, frame, out, todo)
        return out

    def _triage(self, frame: np.ndarray, out: np.ndarray, tracks: list[Track]) -> list:
        """The faces DIFP can replace, as (track, 2x3 transform to the 128 template); the others are blurred now:
        profiles (the frontal template cannot cover them), faces too small, and faces cut by the frame's edge."""
        todo = []
        for t in tracks:
            box, lms = self.tracker.position(t)
            self.last_faces.append((t.id, box, lms))
            self._boxes[t.id] = box
            self.stats.faces += 1
            self.stats.tracks.add(t.id)
            profile = align.is_profile(lms, self.cfg.max_yaw)
            if profile or box[2] - box[0] < self.cfg.min_difp or _outside(box, frame.shape) > self.cfg.max_edge_cut:
                self._cover(frame, out, t.id)
                self.stats.profiles += profile
                self.stats.small += not profile
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
        rekey = getattr(self.p.model, "rekey", True)  # a style-space model keeps its first keyframe (see there)
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

    def _recheck(self, frame, todo, states, results: list, checked: dict) -> None:
        """A keyframe's face that the expression drive changed after its identity check is measured again as it
        will be pasted (its own mesh mask): closer than ``verify_distance`` to the person, the checked face is
        shown instead (measured on the eval photos: an unchecked drive edit of a fake steered to the person's age
        came to 0.57 of them)."""
        if not self.check.on:
            return
        for k, crop0 in checked.items():
            res = results[k]
            if res.crop is crop0:
                continue
            put = (lambda patch, crop, mm=todo[k][2], tid=todo[k][0].id, pts=res.points:
                   self._put(patch, frame, crop, mm, tid=tid, points=pts))
            with self.timings("check carried"):
                d = self.check.distance(self.check.look(frame, todo[k][1], put)(res.crop), states[k].looks())
            if d < self.cfg.verify_distance:
                res.crop, res.points = crop0, None

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

    def _driven(self, index: int, todo: list, states: list[TrackState], crops: Crops, results: list, ks: list,
                keyframes: bool = False) -> list:
        """The expression drive for faces ``ks``: each shows the render of its atlas nearest the original's
        expression and pose, or a new render when none is near (at most one per ``render_every`` frames per face):
        the keyframe's fake latent, plus the encoder's change since the keyframe without its part along the
        expression directions, plus the step along them to the original's expression. Returns the faces it could
        not drive (the mesh found no face in the original or in the fake's keyframe, or the face is smaller than
        ``cfg.expression_min_size``), for the plain carry."""
        d, every = self.drive, max(1, self.cfg.render_every)
        plans, rest = {}, []
        for k in ks:
            te = d.state(todo[k][0].id)
            small = 128.0 / align._scale(todo[k][2]) < self.cfg.expression_min_size
            if small or te.fake is None or te.smooth is None or te.key is not states[k].key.protected:
                rest.append(k)
                continue
            look, new = d.pick(te, index, every)
            plans[k] = (te, look, new or look is None)
        if not plans:
            return rest
        z0 = {}  # the original's latent this frame: for keys, new renders and identity checks
        if keyframes:
            z0 = {k: states[k].key.latent for k in plans}
        else:
            enc = [k for k, (_, _, new) in plans.items() if self.cfg.keys or new or self._check_due(index, states[k])]
            if enc:
                st = [states[k] for k in enc]
                with self.timings("carry: encode" + (" + keys" if self.cfg.keys else "")):
                    r = self.p.carry(crops.model[enc], torch.cat([s.key.latent for s in st]),
                                     torch.cat([s.key.protected for s in st]), self.cfg.carry_cutoff,
                                     keys=self.cfg.keys, key_crops=None if crops.key is None else crops.key[enc],
                                     render=False)
                for i, k in enumerate(enc):
                    z0[k] = r.latents[i:i + 1]
                    results[k] = FaceResult(None, r.keys[i] if r.keys else None, source=z0[k])
        new = [k for k, (_, _, n) in plans.items() if n]
        if new:
            self._size_for(todo, new)
            self.p.render_size = min(self.p.render_size or 256, max(128, self.cfg.expression_render))
            x = d.x
            with self.timings("expression render"):
                zs, aims = [], []
                for k in new:
                    te, key_lat = plans[k][0], states[k].key
                    base = key_lat.protected + x.project_off(z0[k] - key_lat.latent)
                    aims.append(d.target(te))
                    zs.append(x.apply(base, d.steps(te, aims[-1])[None]))
                rendered = self.p._render(torch.cat(zs))
            with self.timings("expression check"):
                for i, k in enumerate(new):
                    te, look, _ = plans[k]
                    d.rendered(te, aims[i], rendered[i], index, states[k].looks(),
                               self.cfg.verify_distance if self.check.on else 0.0, keeps=self._keeps(states[k]))
                    plans[k] = (te, d.pick(te, index, every)[0], True)  # closed loop: the nearest, new one or not
        for k, (te, look, _) in plans.items():
            if look is None:  # nothing to show yet (the only render drifted): the plain carry's face
                rest.append(k)
                continue
            look.used = index
            if keyframes or results[k] is not None:
                results[k].crop, results[k].points = look.crop, look.points
            else:
                results[k] = FaceResult(look.crop, source=z0.get(k), points=look.points)
            self.stats.driven += 1
        return rest

    def _check_due(self, index: int, st: TrackState) -> bool:
        return index - max(st.checked, st.key.index) >= max(1, self.cfg.check_every)

    def _need(self, st: TrackState) -> float:
        """The distance a keyframe's fake face must reach without a redraw: ``verify_distance``, plus
        ``cfg.first_margin`` for the first keyframe of a model that keeps it for the whole track (measured on the
        crowd clip: a fake passed at 0.7 on one view came to 0.58 on a later one before its next check)."""
        keeps = not getattr(self.p.model, "rekey", True)
        return self.cfg.verify_distance + (self.cfg.first_margin if keeps and st.surrogate is None else 0.0)

    def _checks(self, index, frame, todo, states, crops: Crops, results: list, carried: list) -> None:
        """A model that keeps its first keyframe: every ``check_every`` frames a carried face is checked against
        the person as a keyframe's would be; a redraw (a new DIFP run) becomes the track's keyframe from here on."""
        if getattr(self.p.model, "rekey", True) or not self.check.on or not self.cfg.verify_every:
            return
        for k in carried:
            st, res = states[k], results[k]
            if not self._check_due(index, st) or res is None or res.source is None:
                continue
            st.checked = index
            same = self._same_person(todo[k][0].id, res)
            points = {id(r.crop): r.points for r in (res, *same)}
            put = (lambda patch, crop, mm=todo[k][2], tid=todo[k][0].id, pts=points:
                   self._put(patch, frame, crop, mm, tid=tid, points=pts.get(id(crop))))
            with self.timings("check carried"):
                best = self.check.check(st, res, frame, todo[k][1], put, crops.model[k], crops.c128[k],
                                        None if crops.key is None else crops.key[k:k + 1],
                                        need=min(self.cfg.blur_below, self.cfg.verify_distance),
                                        adjust=self._adjust(st, frame, todo[k], put, crops.c128[k]), same=same)
            if best is res:
                continue
            results[k] = best
            if best.latent is not None:  # a redrawn fake person: the track's keyframe now
                st.key = Keyframe(index, res.source, best.latent)
                if self.drive is not None:  # its expression measured; its atlas starts afresh
                    self.drive.keyframe(self.drive.state(todo[k][0].id), st.key.protected, best.crop, index)
            elif self.drive is not None:  # the same fake person's unedited face: the edit that came close goes
                self.drive.drop(self.drive.state(todo[k][0].id), res.crop)

    def _same_person(self, tid: int, res: FaceResult) -> list:
        """What a carried face that came too close can fall back on before a new fake person is drawn: its track's
        unedited keyframe face (when ``res`` is an expression edit of it), carried as ``res`` (an edit of a fake
        steered to the person's age and gender came from 0.81 to 0.647 of a talking person, and the redraw was a
        new fake person for the rest of the clip)."""
        te = self.drive.tracks.get(tid) if self.drive is not None else None
        if te is None or not te.atlas or res.points is None or te.atlas[0].crop is res.crop:
            return []
        look = te.atlas[0]
        return [FaceResult(look.crop, res.key, source=res.source, points=look.points)]

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

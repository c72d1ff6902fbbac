"""The frame pipeline's stages for a model that keeps one fake person per track and drives it (a style-space
model: ``rekey`` False, expression and attribute directions): the expression drive (atlas of renders or a new one),
the attribute steer (--attributes keep), and the checks of carried faces against the person. ``FaceProtector``
(``frame.py``) runs them; they read and write its state."""
from __future__ import annotations

import numpy as np
import torch

from ..difp.attributes import AttributeSteer, Goal
from ..difp.expression import Expression
from ..faces import align
from ..faces.attributes import load_estimator
from ..faces.mesh import load_mesh
from .expression import ExpressionDrive
from .tracks import Crops, FaceResult, Keyframe, TrackState


class StyleStages:
    """Mixed into :class:`~difp_stream.pipeline.frame.FaceProtector`."""

    def _make_drive(self):
        dirs = self.p.model.directions
        if not self.cfg.expression or dirs is None or self.framing != "ffhq":
            return None
        return ExpressionDrive(Expression(dirs, self.p.model), load_mesh(), self.id_enc,
                               tolerance=self.cfg.expression_tolerance,
                               size=max(128, min(self.cfg.expression_render, self.cfg.max_render)))

    def _make_steer(self):
        dirs = self.p.model.attributes
        if self.cfg.attributes != "keep" or dirs is None or self.framing != "ffhq":
            return None
        self.attr_est = load_estimator()
        return AttributeSteer(dirs, self.p.model)

    def _keep_attributes(self, st: TrackState, res: FaceResult, frame: np.ndarray, m128: np.ndarray, put,
                         c128: np.ndarray) -> FaceResult:
        """--attributes keep: the fake face of a keyframe steered to the original's apparent gender and age (read
        on the original's template crop once per track, and on the fake as it will look in the output)."""
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
            gender = met or st.goal.near(*measure(face))
        self.stats.steered += n > 0
        return FaceResult(face, res.key, res.surrogate, z, res.source, res.points, kept=met, gender=gender)

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

    def _recheck(self, frame, todo, states, results: list, checked: dict) -> None:
        """A keyframe's face that the expression drive changed after its identity check is measured again as it
        will be pasted (its own mesh mask): closer than ``verify_distance`` to the person, or no longer reading the
        person's gender and age band (``_reads_as``), the checked face is shown instead (measured on the eval
        photos: an unchecked drive edit of a fake steered to the person's age came to 0.57 of them)."""
        if not self.check.on:
            return
        for k, crop0 in checked.items():
            res = results[k]
            if res.crop is crop0:
                continue
            put = (lambda patch, crop, mm=todo[k][2], tid=todo[k][0].id, pts=res.points:
                   self._put(patch, frame, crop, mm, tid=tid, points=pts))
            look = self.check.look(frame, todo[k][1], put)
            with self.timings("check carried"):
                d = self.check.distance(look(res.crop), states[k].looks())
            if d < self.cfg.verify_distance or not self._reads_as(states[k], look(res.crop), res):
                res.crop, res.points = crop0, None

    def _reads_as(self, st: TrackState, seen: np.ndarray, res: FaceResult) -> bool:
        """--attributes keep: a drive edit of a keyframe's fake that read the person's gender and age band still
        does as pasted (``seen``: its template crop in the output). Seen on the eval photos: a talking woman's steered
        fake read female (logit -2 to -6); its edit to her open mouth read male in the output (P 0.89)."""
        if self.steer is None or st.goal is None or res.gender is not True:
            return True
        with self.timings("attributes"):
            a = self.attr_est(seen[None])
        return st.goal.near(float(a.logit[0]), float(a.age[0]))

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
        keeps = not self.p.model.rekey
        return self.cfg.verify_distance + (self.cfg.first_margin if keeps and st.surrogate is None else 0.0)

    def _checks(self, index, frame, todo, states, crops: Crops, results: list, carried: list) -> None:
        """A model that keeps its first keyframe: every ``check_every`` frames a carried face is checked against
        the person as a keyframe's would be; a redraw (a new DIFP run) becomes the track's keyframe from here on."""
        if self.p.model.rekey or not self.check.on or not self.cfg.verify_every:
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

"""Fit the expression directions (``difp/expression.py``) on the face generator itself.

1. render ``count`` random faces (styles pulled toward the mean by a random factor, as for the encoder's pairs) at
   256 px and measure each with the face mesh (``faces/mesh.measures``);
2. ridge regression of every measure on the style (``B``), and of the render's identity code (dlib, ``A``), each
   ridge picked on a held-out fifth; then the decorrelated, identity-sparing directions
   ``V = M^-1 B^T (B M^-1 B^T)^-1`` with ``M = A^T A + mu I``: a unit step along column j changes measure j by one
   unit and the other measures by none (by the linear model) while changing the identity code least (``mu`` large:
   the plain least-norm directions);
3. for each driven measure, try the direction with a few ``mu`` on a few layer ranges on ``probe`` held-out faces:
   keep the one that moves the measure at least ``keep`` as far as the best does with the least identity change
   (dlib distance from the unedited render) per unit moved; the measured response of every measure is saved.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..faces.mesh import MEASURES, load_mesh, measures, template_crop
from ..difp.expression import Directions
from ..difp.identity import DlibIdentityEncoder
from ..gan.mobilestylegan import load_generator
from ..runtime.generator import renderer

DRIVEN = ("mouth", "smile", "eyes", "brows")
# layer ranges tried (23 style layers, three per resolution from 4 px: 0-2 4², 3-5 8², 6-8 16², 9-11 32², 12-14 64²)
CANDIDATES = {"4-64px": range(0, 15), "8-32px": range(3, 12), "16-32px": range(6, 12), "4-32px": range(0, 12)}
MUS = (0.03, 0.3, 1e3)  # identity sparing: strong, mild, none (times the mean eigenvalue of A^T A)
SIZE = 256


class _Renderer:
    def __init__(self, backend: str = "auto"):
        if backend == "auto":
            try:
                import openvino  # noqa: F401

                backend = "openvino"
            except ImportError:
                backend = "torch"
        self.g = load_generator()
        self.render = renderer(self.g, SIZE, backend)
        self.mesh = load_mesh(None)
        self._id = None

    def __call__(self, wplus: np.ndarray) -> np.ndarray:
        """uint8 [256, 256, 3] of one W+ [23, 512]."""
        img = self.render(np.asarray(wplus, np.float32)[None])[0]
        return ((np.clip(img, -1, 1) + 1) * 127.5 + 0.5).astype(np.uint8).transpose(1, 2, 0)

    def measure(self, img: np.ndarray):
        r = self.mesh(img[None])
        return measures(r)[0], r

    def identity(self, img: np.ndarray, r) -> np.ndarray:
        """The dlib descriptor of a render (aligned by its mesh's five points)."""
        if self._id is None:
            self._id = DlibIdentityEncoder()
        return self._id(template_crop(img, r.points[0, :, :2])[None])[0]


def sample(render: _Renderer, count: int, seed: int = 0, psi=(0.5, 1.0), progress: bool = True):
    """Styles [n, 512], their renders' measures [n, 6] and identity codes [n, 128] (faces the mesh did not find
    are dropped)."""
    g, rng = render.g, np.random.default_rng(seed)
    wmean = g.mean_style().numpy()
    ws, ms, codes = [], [], []
    for _ in tqdm(range(count), desc="renders", unit="face", disable=not progress):
        with torch.no_grad():
            w = g.mapping(torch.from_numpy(rng.standard_normal((1, 512)).astype(np.float32)))[0].numpy()
        w = wmean + rng.uniform(*psi) * (w - wmean)
        img = render(np.repeat(w[None], g.n_layers, 0))
        m, r = render.measure(img)
        if r.presence[0] > 0.5:
            ws.append(w)
            ms.append(m)
            codes.append(render.identity(img, r))
    return np.asarray(ws, np.float32), np.asarray(ms, np.float32), np.asarray(codes, np.float32)


def ridge(x: np.ndarray, y: np.ndarray, lams=(1e-2, 1e-1, 1, 10, 100, 1000)):
    """Per column of ``y``: the ridge fit ``y ~ x b + c`` with the penalty chosen on a held-out fifth; returns
    (B [k, d], c [k], held-out correlation [k])."""
    n = len(x)
    idx = np.random.default_rng(0).permutation(n)
    te, tr = idx[: n // 5], idx[n // 5:]
    mu = x[tr].mean(0)

    def fit(rows, lam):
        xc = x[rows] - mu
        a = xc.T @ xc + lam * len(rows) * np.eye(x.shape[1])
        b = np.linalg.solve(a, xc.T @ (y[rows] - y[rows].mean(0)))
        return b.T, y[rows].mean(0) - mu @ b

    best = [None] * y.shape[1]
    for lam in lams:
        b, c = fit(tr, lam)
        pred = (x[te] - 0) @ b.T + c
        for j in range(y.shape[1]):
            r = float(np.corrcoef(pred[:, j], y[te, j])[0, 1])
            if best[j] is None or r > best[j][0]:
                best[j] = (r, lam)
    rows = np.arange(n)
    out_b, out_c = np.zeros((y.shape[1], x.shape[1])), np.zeros(y.shape[1])
    for j, (_, lam) in enumerate(best):
        b, c = fit(rows, lam)
        out_b[j], out_c[j] = b[j], c[j]
    return out_b, out_c, np.array([r for r, _ in best])


def fit_directions(out: str | Path, count: int = 600, probe: int = 8, keep: float = 0.6, seed: int = 0,
                   backend: str = "auto", progress: bool = True) -> Directions:
    t0 = time.time()
    render = _Renderer(backend)
    ws, ms, codes = sample(render, count, seed, progress=progress)
    b, _, corr = ridge(ws.astype(np.float64), ms.astype(np.float64))
    a, _, _ = ridge(ws.astype(np.float64), codes.astype(np.float64))
    ata = a.T @ a
    scale = np.trace(ata) / len(ata)
    vs = {}
    for mu in MUS:  # [512, 6] each: decorrelated, a unit step = one unit of its measure, sparing identity by mu
        minv = np.linalg.inv(ata + mu * scale * np.eye(len(ata)))
        vs[mu] = minv @ b.T @ np.linalg.inv(b @ minv @ b.T)
    std = ms.std(0)
    rng = np.random.default_rng(seed + 1)
    base_ws = ws[rng.choice(len(ws), size=min(probe, len(ws)), replace=False)]
    n_layers = render.g.n_layers
    bases = []
    for w in base_ws:
        wp = np.repeat(w[None], n_layers, 0)
        img = render(wp)
        m, r = render.measure(img)
        bases.append((wp, m, render.identity(img, r)))
    chosen_w, chosen_layers, response, tried = [], [], [], {}
    for name in DRIVEN:
        j = MEASURES.index(name)
        step = 2.0 * std[j]
        results = {}
        trials = [(f"{lab} mu {mu:g}", rl, mu) for lab, rl in CANDIDATES.items() for mu in MUS]
        for label, rng_layers, mu in tqdm(trials, desc=f"layers: {name}", disable=not progress):
            mask = np.zeros(n_layers, bool)
            mask[list(rng_layers)] = True
            moved, dist = [], []
            for wp, m0, id0 in bases:
                edit = wp + mask[:, None] * (step * vs[mu][:, j])[None]
                img = render(edit)
                m1, r = render.measure(img)
                moved.append((m1 - m0) / step)
                dist.append(float(np.linalg.norm(render.identity(img, r) - id0)) if r.presence[0] > 0.5 else 1.0)
            resp = np.mean(moved, 0)
            results[label] = (float(resp[j]), float(np.mean(dist)), resp, mask, vs[mu][:, j])
        best = max(r[0] for r in results.values())
        ok = {k: r for k, r in results.items() if r[0] >= keep * best} if best > 0 else {}
        ok = ok or {max(results, key=lambda k: results[k][0]): None}
        ok = {k: results[k] for k in ok}
        label = min(ok, key=lambda k: ok[k][1] / max(ok[k][0], 1e-6))  # least identity change per unit moved
        chosen_w.append(results[label][4])
        chosen_layers.append(results[label][3])
        response.append(results[label][2])
        tried[name] = {k: {"efficacy": round(r[0], 3), "identity_shift": round(r[1], 3)} for k, r in results.items()}
        tried[name]["chosen"] = label
    report = {"renders": int(count), "faces_measured": int(len(ws)), "seconds": round(time.time() - t0),
              "held_out_correlation": {n: round(float(c), 3) for n, c in zip(MEASURES, corr)},
              "layers": tried, "probe_faces": int(len(bases)), "step_std": 2.0}
    d = Directions(DRIVEN, np.asarray(chosen_w, np.float32), np.asarray(chosen_layers),
                   np.asarray(response, np.float32).T, std.astype(np.float32), json.dumps(report))
    d.save(out)
    return d

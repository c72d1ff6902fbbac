"""Fit the attribute directions (``difp/attributes.py``: apparent gender and age) on the face generator itself.

1. render ``count`` random faces at 256 px (as for the expression directions) and read each with the attribute
   networks (``faces/attributes.py``) on its template crop (from the face mesh's five points);
2. ridge regression of (gender logit, age) on the style, the penalty picked on a held-out fifth; the decorrelated
   least-norm directions ``V = B^T (B B^T)^-1``;
3. for each, try a few layer ranges on ``probe`` held-out faces (a step of one standard deviation) and keep the
   range that moves its measure farthest per unit; the measured response of both measures is saved.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from ..difp.attributes import NAMES, AttributeDirections
from ..faces.attributes import load_estimator
from ..faces.mesh import template_crop
from .directions import _Renderer, ridge

# 23 style layers, three per resolution from 4 px: 0-2 4², 3-5 8², 6-8 16², 9-11 32², 12-14 64²
CANDIDATES = {"4-32px": range(0, 12), "4-64px": range(0, 15), "8-64px": range(3, 15), "4-16px": range(0, 9)}


class _Reader:
    def __init__(self, render: _Renderer):
        self.render, self.est = render, load_estimator()

    def __call__(self, wplus: np.ndarray) -> np.ndarray | None:
        """(gender logit, age) of a W+ render, or None when the mesh finds no face."""
        img = self.render(wplus)
        _, r = self.render.measure(img)
        if r.presence[0] <= 0.5:
            return None
        a = self.est(template_crop(img, r.points[0, :, :2])[None])
        return np.array([a.logit[0], a.age[0]], np.float64)


def fit_attributes(out: str | Path, count: int = 600, probe: int = 10, seed: int = 0, backend: str = "auto",
                   progress: bool = True) -> AttributeDirections:
    t0 = time.time()
    render = _Renderer(backend)
    read = _Reader(render)
    g, rng = render.g, np.random.default_rng(seed)
    wmean, n_layers = g.mean_style().numpy(), g.n_layers
    ws, ys = [], []
    for _ in tqdm(range(count), desc="renders", unit="face", disable=not progress):
        with torch.no_grad():
            w = g.mapping(torch.from_numpy(rng.standard_normal((1, 512)).astype(np.float32)))[0].numpy()
        w = wmean + rng.uniform(0.5, 1.0) * (w - wmean)
        y = read(np.repeat(w[None], n_layers, 0))
        if y is not None:
            ws.append(w)
            ys.append(y)
    ws, ys = np.asarray(ws, np.float64), np.asarray(ys, np.float64)
    b, _, corr = ridge(ws, ys)
    v = b.T @ np.linalg.inv(b @ b.T)  # [512, 2]: a unit step moves its measure by one, the other by none
    std = ys.std(0)
    probes = ws[np.random.default_rng(seed + 1).choice(len(ws), size=min(probe, len(ws)), replace=False)]
    bases = [(np.repeat(w[None], n_layers, 0), read(np.repeat(w[None], n_layers, 0))) for w in probes]
    bases = [(wp, y) for wp, y in bases if y is not None]
    chosen, layers, response, tried = [], [], [], {}
    for j, name in enumerate(NAMES):
        step, results = std[j], {}
        for label, rl in tqdm(CANDIDATES.items(), desc=f"layers: {name}", disable=not progress):
            mask = np.zeros(n_layers, bool)
            mask[list(rl)] = True
            moved = []
            for wp, y0 in bases:
                y1 = read(wp + mask[:, None] * (step * v[:, j])[None])
                if y1 is not None:
                    moved.append((y1 - y0) / step)
            resp = np.mean(moved, 0) if moved else np.zeros(2)
            results[label] = (float(resp[j]), resp, mask)
        label = max(results, key=lambda k: results[k][0])
        chosen.append(v[:, j])
        layers.append(results[label][2])
        response.append(results[label][1])
        tried[name] = {k: round(r[0], 3) for k, r in results.items()}
        tried[name]["chosen"] = label
    report = {"renders": int(count), "faces_measured": int(len(ws)), "seconds": round(time.time() - t0),
              "held_out_correlation": {n: round(float(c), 3) for n, c in zip(NAMES, corr)},
              "efficacy_per_layer_range": tried, "probe_faces": len(bases),
              "male_share": round(float(np.mean(ys[:, 0] > 0)), 3), "age_median": round(float(np.median(ys[:, 1])), 1)}
    d = AttributeDirections(np.asarray(chosen, np.float32), np.asarray(layers), np.asarray(response, np.float32).T,
                            std.astype(np.float32), json.dumps(report))
    d.save(out)
    return d

"""Expression directions in the face generator's style space, and how a fake face is set to an expression.

A direction file (``directions.npz`` beside the model, fitted by ``difp-stream styles directions``) holds, for the
face mesh's measures (``faces/mesh.MEASURES``: mouth opening, smile, eye opening, brows, yaw, pitch):

- ``w`` [k, 512]: one direction in W per driven measure, decorrelated: by the linear model fitted on the generator's
  own faces, a unit step along direction j changes measure j by one unit and leaves the other measures (the pose
  included) where they were;
- ``layers`` bool [k, 23]: the style layers each direction is applied to (those where it leaks least into identity);
- ``response`` [6, k]: what a unit step along each direction, on its layers, measurably did to every measure;
- ``std`` [6]: each measure's spread over the generator's faces (the scale of the limits).

:class:`Expression` turns them into latents of a style-space model and solves for the step that moves a face's
measured expression to a target one.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..faces.mesh import MEASURES

DIRECTIONS_FILE = "directions.npz"


@dataclass
class Directions:
    names: tuple[str, ...]  # the driven measures, each one of MEASURES
    w: np.ndarray  # float32 [k, 512]
    layers: np.ndarray  # bool [k, 23]
    response: np.ndarray  # float32 [len(MEASURES), k]
    std: np.ndarray  # float32 [len(MEASURES)]
    report: str = ""  # how they were fitted (held-out correlations, layer choice), as JSON

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".partial.npz")
        np.savez(tmp, names=np.array(self.names), w=self.w.astype(np.float32), layers=self.layers,
                 response=self.response.astype(np.float32), std=self.std.astype(np.float32),
                 report=np.array(self.report))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "Directions":
        with np.load(path, allow_pickle=False) as d:
            names = tuple(str(n) for n in d["names"])
            bad = [n for n in names if n not in MEASURES]
            if bad:
                raise ValueError(f"{path}: unknown measures {bad}")
            return cls(names, d["w"], d["layers"].astype(bool), d["response"], d["std"], str(d["report"]))

    def index(self, name: str) -> int:
        return MEASURES.index(name)


def find_directions(model_dir: str | Path | None) -> Directions | None:
    """The direction file beside a model, or None when it has none."""
    if model_dir is None:
        return None
    p = Path(model_dir) / DIRECTIONS_FILE
    return Directions.load(p) if p.exists() else None


class Expression:
    """Directions as latents of a style-space model (normalised W+), with the solve and the projection."""

    def __init__(self, directions: Directions, model, limit: float = 4.0):
        self.d = directions
        w_std = model.w_std.detach().float().cpu()  # [23, 512]
        v = torch.from_numpy(directions.w).float()[:, None, :] * torch.from_numpy(directions.layers)[..., None]
        self.v = v / w_std  # [k, 23, 512] in the model's latent space
        flat = self.v.flatten(1)
        self._gram_inv = torch.linalg.inv(flat @ flat.T)  # for the projection off their span
        rows = [MEASURES.index(n) for n in directions.names]
        self.rows = rows
        r = np.asarray(directions.response, np.float64)[rows]  # [k, k]: driven measure i per unit of direction j
        self._solve = np.linalg.inv(r)
        self.limit = limit * np.asarray(directions.std, np.float64)[rows]  # per measure, in its own units

    @property
    def names(self) -> tuple[str, ...]:
        return self.d.names

    def steps(self, current: np.ndarray, target: np.ndarray) -> np.ndarray:
        """float32 [N, k]: how far along each direction to go so that faces measured ``current`` (``[N, 6]``,
        :data:`MEASURES` order) are measured ``target`` (only the driven measures count); changes larger than
        ``limit`` standard deviations of a measure are cut there (the edits stay photoreal)."""
        cur, tgt = np.atleast_2d(current)[:, self.rows], np.atleast_2d(target)[:, self.rows]
        change = np.clip(tgt - cur, -self.limit, self.limit)
        return (change @ self._solve.T).astype(np.float32)

    def apply(self, z: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
        """Latents ``z`` [N, 23, 512] moved by ``steps`` [N, k] along the directions."""
        s = torch.as_tensor(np.asarray(steps, np.float32), device=z.device)
        return z + torch.einsum("nk,kld->nld", s, self.v.to(z.device))

    def project_off(self, delta: torch.Tensor) -> torch.Tensor:
        """``delta`` [N, 23, 512] without its part along the directions (least squares): a latent change from the
        encoder keeps what it says about pose and light, and what it says about expression does not count twice."""
        v = self.v.to(delta.device)
        flat = delta.flatten(1)
        coef = (flat @ v.flatten(1).T) @ self._gram_inv.to(delta.device)
        return delta - torch.einsum("nk,kld->nld", coef, v)

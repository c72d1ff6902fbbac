"""Attribute directions in the face generator's style space: a fake face that keeps the original's apparent gender
and age (``--attributes keep``).

A direction file (``attributes.npz`` beside the model, fitted by ``difp-stream styles attributes``) holds, for the
two measures of ``faces/attributes.py`` (gender as the logit of P(male), age in years):

- ``w`` [2, 512]: one direction in W per measure, decorrelated (by the linear model fitted on the generator's own
  faces, a unit step along one changes its measure by one unit and the other by none);
- ``layers`` bool [2, 23]: the style layers each is applied to;
- ``response`` [2, 2]: what a unit step along each direction measurably did to both measures;
- ``std`` [2]: each measure's spread over the generator's faces.

:class:`AttributeSteer` moves a fake face's latent, in a few measured steps, until the estimator reads the
original's gender on it and an age within ``tolerance`` years of the original's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ATTRIBUTES_FILE = "attributes.npz"
NAMES = ("gender", "age")


@dataclass
class AttributeDirections:
    w: np.ndarray  # float32 [2, 512]
    layers: np.ndarray  # bool [2, 23]
    response: np.ndarray  # float32 [2, 2]: measure i per unit of direction j
    std: np.ndarray  # float32 [2]
    report: str = ""

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.stem + ".partial.npz")
        np.savez(tmp, w=self.w.astype(np.float32), layers=self.layers, response=self.response.astype(np.float32),
                 std=self.std.astype(np.float32), report=np.array(self.report))
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> "AttributeDirections":
        with np.load(path, allow_pickle=False) as d:
            out = cls(d["w"], d["layers"].astype(bool), d["response"], d["std"], str(d["report"]))
        if out.w.shape[0] != 2 or out.response.shape != (2, 2) or out.layers.shape[0] != 2:
            raise ValueError(f"{path}: not an attribute direction file (gender, age)")
        return out


def find_attributes(model_dir: str | Path | None) -> AttributeDirections | None:
    if model_dir is None:
        return None
    p = Path(model_dir) / ATTRIBUTES_FILE
    return AttributeDirections.load(p) if p.exists() else None


@dataclass
class Goal:
    """What the fake face must read: the original's gender (P(male) on its side of 0.5 by ``margin`` in logit) and
    its age within ``tolerance`` years."""

    male: bool
    age: float
    margin: float = 1.0
    tolerance: float = 4.0

    def met(self, logit: float, age: float) -> bool:
        side = logit >= self.margin if self.male else logit <= -self.margin
        return side and abs(age - self.age) <= self.tolerance

    def near(self, logit: float, age: float) -> bool:
        """Looser: the gender on the right side of 0.5, the age within 15 years (an expression edit moves the age
        read: a broad smile reads older; at twice the tolerance, 8 years, 6 of 11 renders of a talking clip were
        turned away)."""
        return (logit > 0) == self.male and abs(age - self.age) <= 15.0

    def change(self, logit: float, age: float) -> np.ndarray:
        """The change of (logit, age) asked: to ``1.5 * margin`` past the gender boundary, to the original's age."""
        want = 1.5 * self.margin if self.male else -1.5 * self.margin
        dl = want - logit if (self.male and logit < want) or (not self.male and logit > want) else 0.0
        da = self.age - age if abs(self.age - age) > 0.5 * self.tolerance else 0.0
        return np.array([dl, da], np.float64)


class AttributeSteer:
    """The directions as latents of a style-space model, and the closed loop that steers a fake face."""

    def __init__(self, directions: AttributeDirections, model, limit: float = 3.0, rounds: int = 3):
        w_std = model.w_std.detach().float().cpu()
        v = torch.from_numpy(directions.w).float()[:, None, :] * torch.from_numpy(directions.layers)[..., None]
        self.v = v / w_std  # [2, 23, 512]
        self._solve = np.linalg.inv(np.asarray(directions.response, np.float64))
        self.limit = limit * np.asarray(directions.std, np.float64)
        self.rounds = rounds

    def step(self, change: np.ndarray) -> np.ndarray:
        """The steps along (gender, age) for a wanted change of (logit, age), each cut at ``limit`` std."""
        return (np.clip(change, -self.limit, self.limit) @ self._solve.T).astype(np.float32)

    def apply(self, z: torch.Tensor, steps: np.ndarray) -> torch.Tensor:
        s = torch.as_tensor(np.asarray(steps, np.float32).reshape(1, -1), device=z.device)
        return z + torch.einsum("nk,kld->nld", s, self.v.to(z.device))

    def steer(self, z: torch.Tensor, face, goal: Goal, measure, render) -> tuple[torch.Tensor, object, int, bool]:
        """Move latent ``z`` [1, 23, 512] (whose render is ``face``) until ``measure(face)`` -> (logit, age) meets
        ``goal``, with at most ``rounds`` new renders (``render(z)`` -> a face). Returns the latent, its face, the
        renders made (0: the goal was met already) and whether the goal is met. A step that moved the face away
        from the goal is undone and the loop stops; otherwise the last latent is kept (the nearest the loop got)."""
        m = measure(face)
        for i in range(self.rounds):
            if goal.met(*m):
                return z, face, i, True
            z2 = self.apply(z, self.step(goal.change(*m)))
            f2 = render(z2)
            m2 = measure(f2)
            if _miss(goal, m2) >= _miss(goal, m):
                return z, face, i + 1, False
            z, face, m = z2, f2, m2
        return z, face, self.rounds, goal.met(*m)


def _miss(goal: Goal, m) -> float:
    """How far a measure (logit, age) is from the goal, in units of its margin and tolerance."""
    c = goal.change(*m)
    return float(abs(c[0]) / goal.margin + abs(c[1]) / goal.tolerance)

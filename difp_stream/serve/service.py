"""The face model as a shared service: one replica (a Ray actor) batches the faces of every camera that sends it
work, and a camera's pipeline talks to it through :class:`ServiceProtector`, which has the ``Protector`` interface
the frame pipeline calls (``protect``, ``carry``).

Batching: requests queue while a batch runs; the next batch takes the oldest request and every queued request that
can run with it (same kind and settings), up to ``batch`` faces, waiting at most ``wait_ms`` for more. Results go back
to the caller that sent them: a track's key material leaves the service only towards the worker that owns the track,
which seals it (the service writes no key file)."""
from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from ..app import build
from ..app.options import ModelOptions, SamplingOptions
from ..difp.protector import ProtectResult


def _group(kind: str, kw: dict, render_size) -> tuple:
    """Requests that can share one model call."""
    if kind == "protect":
        return (kind, kw["keys"], render_size, kw.get("surrogates") is None, kw.get("key_crops") is None)
    return (kind, kw["keys"], render_size, kw["render"], kw["cutoff"], kw.get("key_crops") is None)


def _cat(parts: list):
    if parts[0] is None:
        return None
    if torch.is_tensor(parts[0]):
        return torch.cat(parts)
    if isinstance(parts[0], list):
        return [x for p in parts for x in p]
    return np.concatenate(parts)


def _split(r: ProtectResult, sizes: list[int]) -> list[ProtectResult]:
    out, a = [], 0
    for n in sizes:
        s = slice(a, a + n)
        out.append(ProtectResult(None if r.crops is None else r.crops[s], None if r.keys is None else r.keys[s],
                                 None if r.surrogates is None else r.surrogates[s],
                                 None if r.latents is None else r.latents[s],
                                 None if r.protected_latents is None else r.protected_latents[s]))
        a += n
    return out


class FaceService:
    """One model replica. ``model``: 'default' or a folder; ``backend``: as ``--backend``; ``batch``: most faces per
    model call; ``wait_ms``: how long a batch waits to fill; ``sampling``: overrides of the model's sampling."""

    def __init__(self, model: str = "default", backend: str = "auto", batch: int = 8, wait_ms: float = 10.0,
                 threads: int = 0, sampling: SamplingOptions | None = None, device: str = "cpu"):
        mo = ModelOptions(model, backend, device, threads or None)
        m, _ = build.load_model(mo)
        self.p, self.backend = build.make_protector(mo, sampling or SamplingOptions(), m, device)
        self.batch, self.wait = max(1, int(batch)), max(0.0, wait_ms) / 1000
        self.pending: list = []  # (group, kind, kw, render_size, faces, future)
        self.pool = ThreadPoolExecutor(1)  # one model call at a time; requests queue (and batch) meanwhile
        self.worker = None
        self.counts = {"requests": 0, "faces": 0, "batches": 0, "largest_batch": 0, "busy_s": 0.0}

    async def call(self, kind: str, kw: dict, render_size: int | None = None) -> ProtectResult:
        if kind not in ("protect", "carry"):
            raise ValueError(f"unknown request {kind!r}")
        fut = asyncio.get_running_loop().create_future()
        self.pending.append((_group(kind, kw, render_size), kind, kw, render_size, len(kw["crops"]), fut))
        if self.worker is None or self.worker.done():
            self.worker = asyncio.ensure_future(self._drain())
        return await fut

    def stats(self) -> dict:
        c = self.counts
        return {**c, "faces_per_batch": c["faces"] / max(1, c["batches"]), "backend": self.backend,
                "queued": len(self.pending)}

    async def _drain(self) -> None:
        loop = asyncio.get_running_loop()
        while self.pending:
            first = self.pending[0]
            deadline = time.monotonic() + self.wait
            while time.monotonic() < deadline and self._fill(first[0]) < self.batch:
                await asyncio.sleep(0.001)
            take, n = [], 0
            for item in list(self.pending):
                if item[0] == first[0] and (not take or n + item[4] <= self.batch):
                    take.append(item)
                    n += item[4]
                    self.pending.remove(item)
            t0 = time.monotonic()
            try:
                results = await loop.run_in_executor(self.pool, self._run, take)
            except Exception as e:  # every caller hears of it (its pipeline then covers the faces: fail closed)
                for item in take:
                    if not item[5].done():
                        item[5].set_exception(e)
                continue
            c = self.counts
            c["requests"] += len(take)
            c["faces"] += n
            c["batches"] += 1
            c["largest_batch"] = max(c["largest_batch"], n)
            c["busy_s"] += time.monotonic() - t0
            for item, r in zip(take, results):
                if not item[5].done():
                    item[5].set_result(r)

    def _fill(self, group: tuple) -> int:
        return sum(item[4] for item in self.pending if item[0] == group)

    def _run(self, take: list) -> list[ProtectResult]:
        kind, size = take[0][1], take[0][3]
        kws = [item[2] for item in take]
        merged = {k: _cat([kw.get(k) for kw in kws]) for k in kws[0] if k not in ("keys", "cutoff", "render")}
        self.p.render_size = size
        if kind == "protect":
            r = self.p.protect(merged["crops"], seeds=merged["seeds"], id_codes=merged["id_codes"],
                               keys=kws[0]["keys"], surrogates=merged.get("surrogates"),
                               key_crops=merged.get("key_crops"))
        else:
            r = self.p.carry(merged["crops"], merged["ref_latents"], merged["ref_protected"], kws[0]["cutoff"],
                             keys=kws[0]["keys"], key_crops=merged.get("key_crops"), render=kws[0]["render"])
        return _split(r, [item[4] for item in take])


class ServiceProtector:
    """What a camera's :class:`~difp_stream.pipeline.FaceProtector` calls instead of a local ``Protector``: the
    same ``protect`` / ``carry``, answered by a :class:`FaceService` replica (a Ray actor handle). ``model`` is the
    service's model, loaded here only for its configuration and fingerprint (key file headers)."""

    def __init__(self, service, model, timeout: float = 120.0):
        self.service, self.model, self.timeout = service, model, timeout
        self.resolution = model.cfg.resolution
        self.key_resolution = self.resolution
        self.render_size = None
        self.timings = None

    def _ask(self, kind: str, kw: dict) -> ProtectResult:
        import ray

        return ray.get(self.service.call.remote(kind, kw, self.render_size), timeout=self.timeout)

    def protect(self, crops, seeds=0, id_codes=None, keys: bool = True, surrogates=None, key_crops=None):
        n = len(crops)
        seeds = [int(seeds) + i for i in range(n)] if np.isscalar(seeds) else [int(s) for s in seeds]
        if id_codes is None:
            raise ValueError("the model service needs the originals' identity codes (the camera computes them)")
        return self._ask("protect", {"crops": np.asarray(crops), "seeds": seeds, "id_codes": np.asarray(id_codes),
                                     "keys": keys, "surrogates": surrogates, "key_crops": key_crops})

    def carry(self, crops, ref_latents, ref_protected, cutoff: int, keys: bool = True, key_crops=None,
              render: bool = True):
        return self._ask("carry", {"crops": np.asarray(crops), "ref_latents": ref_latents.cpu(),
                                   "ref_protected": ref_protected.cpu(), "cutoff": cutoff, "keys": keys,
                                   "key_crops": key_crops, "render": render})

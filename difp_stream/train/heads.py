"""Training the generator's early-exit heads (``gan/heads.py``) against its full render averaged down.

A producer thread renders random faces (styles pulled toward the mean, half of them mixing two styles across layers,
as W+ from the encoder and DIFP will) and hands over the 128² and 256² features with the 512 px picture; the trainer
keeps a small replay buffer of them and fits both heads. Resumable (``checkpoint.pt``); the heads are written to
``OUT/model/exit{128,256}.*``, next to which ``difp-stream`` finds them once copied into the generator's folder.

    difp-stream encoder heads RUN --minutes 60
"""
from __future__ import annotations

import queue
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..gan.heads import EXITS, ExitHead
from ..gan.mobilestylegan import STYLE_DIM, _WAVELET, load_generator


def random_styles(g, rng: np.random.Generator, w_mean: torch.Tensor, n: int = 1) -> torch.Tensor:
    """W+ [n, 23, 512]: mapped noise pulled toward the mean by a factor in [0.5, 1]; half mix two styles (coarse
    layers from one, the rest from another, cut at a random layer)."""
    out = []
    for _ in range(n):
        z = torch.from_numpy(rng.standard_normal((2, STYLE_DIM)).astype(np.float32))
        with torch.no_grad():
            w = w_mean + (g.mapping(z) - w_mean) * float(rng.uniform(0.5, 1.0))
        plus = w[:1].expand(g.n_layers, -1).clone()
        if rng.random() < 0.5:
            plus[int(rng.integers(1, g.n_layers)):] = w[1]
        out.append(plus)
    return torch.stack(out)


class _Outputs(torch.nn.Module):
    def __init__(self, g):
        super().__init__()
        self.g = g
        self.names = [EXITS[s][0] for s in sorted(EXITS)] + [_WAVELET]

    def forward(self, w):
        got = self.g.features(w, self.names)
        return tuple(got[n] for n in self.names[:-1]) + (got[_WAVELET][:, :3] * 0.5,)


def _renderer(g, folder: Path, backend: str):
    """w+ [1, 23, 512] -> (features per exit size, 512 px picture), on OpenVINO when asked and installed."""
    module = _Outputs(g)
    if backend == "openvino":
        import openvino as ov

        path = folder / "outputs.onnx"
        if not path.exists():
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, (torch.zeros(1, g.n_layers, STYLE_DIM),), str(path), input_names=["w"],
                                  opset_version=17, dynamo=False)
        core = ov.Core()
        c = core.compile_model(core.read_model(str(path)), "CPU",
                               {"INFERENCE_PRECISION_HINT": "f32", "INFERENCE_NUM_THREADS": 1})
        return lambda w: tuple(torch.from_numpy(np.asarray(v)) for v in c(w.numpy()).values())

    def run(w):
        with torch.no_grad():
            return module(w)
    return run


class HeadTrainer:
    def __init__(self, out: str | Path, generator=None, backend: str = "auto", buffer: int = 48, batch: int = 8,
                 lr: float = 1e-3, width: int = 48, seed: int = 0):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.g = generator or load_generator()
        if backend == "auto":
            try:
                import openvino  # noqa: F401

                backend = "openvino"
            except ImportError:
                backend = "torch"
        self.backend, self.buffer_size, self.batch, self.seed = backend, buffer, batch, seed
        self.w_mean = self.g.mean_style()
        ws = self.g.mapping(torch.randn(4096, STYLE_DIM, generator=torch.Generator().manual_seed(1)))
        self.heads = {s: ExitHead(s, width) for s in EXITS}
        for h in self.heads.values():
            h.w_mean.copy_(self.w_mean)
            h.w_std.copy_(ws.std(0).detach() + 1e-3)
        styled = [p for h in self.heads.values() for m in (h.film, h.colour) for p in m.parameters()]
        rest = [p for h in self.heads.values() for p in h.parameters() if all(p is not q for q in styled)]
        # the style-driven parts see few distinct faces: a tenth of the rate keeps them from running away
        self.opt = torch.optim.Adam([{"params": rest, "lr": lr}, {"params": styled, "lr": lr / 10}])
        self.step, self.seen, self.history = 0, 0, []
        ck = self.out / "checkpoint.pt"
        if ck.exists():
            state = torch.load(ck, weights_only=False)
            grown = False
            for s, h in self.heads.items():
                grown |= bool(h.load_state_dict(state["heads"][str(s)], strict=False).missing_keys)
            if not grown:  # (a head that gained parts since the checkpoint starts a fresh optimiser)
                self.opt.load_state_dict(state["opt"])
            self.step, self.seen, self.history = state["step"], state["seen"], state["history"]
        self.eval_set = self._eval_set()

    def _eval_set(self, n: int = 24):
        path = self.out / "eval.pt"
        if path.exists():
            return torch.load(path)
        render = _renderer(self.g, self.out, self.backend)
        ws = random_styles(self.g, np.random.default_rng(10_000), self.w_mean, n)
        items = [(ws[i:i + 1], *render(ws[i:i + 1])) for i in range(n)]
        data = [torch.cat([it[k] for it in items]) for k in range(len(items[0]))]
        torch.save(data, path)
        return data

    def _produce(self, q: queue.Queue, stop: threading.Event) -> None:
        render = _renderer(self.g, self.out, self.backend)
        rng = np.random.default_rng(self.seed + self.seen)
        while not stop.is_set():
            w = random_styles(self.g, rng, self.w_mean)
            item = (w, *[v.half() for v in render(w)])
            while not stop.is_set():
                try:
                    q.put(item, timeout=1)
                    break
                except queue.Full:
                    pass

    def loss(self, w, feats: list[torch.Tensor], img: torch.Tensor, rng: np.random.Generator,
             patch: int = 64) -> dict[int, torch.Tensor]:
        """L1 to the full render averaged down, on a random ``patch`` x ``patch`` window per face (the heads are
        convolutional: windows teach them as whole pictures do, at a fraction of the cost)."""
        out = {}
        for (s, h), f in zip(sorted(self.heads.items()), feats):
            target = F.avg_pool2d(img.float(), 512 // s)
            ys, xs = rng.integers(0, s - patch + 1, size=(2, len(w)))
            fp = torch.stack([f[i, :, y:y + patch, x:x + patch] for i, (y, x) in enumerate(zip(ys, xs))]).float()
            tp = torch.stack([target[i, :, y:y + patch, x:x + patch] for i, (y, x) in enumerate(zip(ys, xs))])
            out[s] = (h(fp, w) - tp).abs().mean()
        return out

    @torch.no_grad()
    def evaluate(self) -> dict[int, float]:
        w, *feats, img = self.eval_set
        res = {}
        for (s, h), f in zip(sorted(self.heads.items()), feats):
            target = F.avg_pool2d(img, 512 // s)
            mse = ((h(f, w).clamp(-1, 1) - target) ** 2).mean((1, 2, 3))
            res[s] = float((10 * torch.log10(4 / mse)).median())  # PSNR over a [-1, 1] range, median over faces
        return res

    def save(self) -> None:
        for h in self.heads.values():
            h.save(self.out / "model")
        state = {"heads": {str(s): h.state_dict() for s, h in self.heads.items()}, "opt": self.opt.state_dict(),
                 "step": self.step, "seen": self.seen, "history": self.history}
        torch.save(state, self.out / "checkpoint.pt.partial")
        (self.out / "checkpoint.pt.partial").replace(self.out / "checkpoint.pt")

    def run(self, minutes: float, checkpoint_seconds: float = 300, log=print) -> dict[int, float]:
        q: queue.Queue = queue.Queue(maxsize=4)
        stop = threading.Event()
        producer = threading.Thread(target=self._produce, args=(q, stop), daemon=True)
        producer.start()
        buf: list = []
        rng = np.random.default_rng(self.seed + self.step)
        end, last = time.time() + minutes * 60, time.time()
        try:
            while time.time() < end:
                while len(buf) < 2 or not q.empty():
                    buf.append(q.get())
                    self.seen += 1
                    if len(buf) > self.buffer_size:
                        buf.pop(0)
                pick = rng.choice(len(buf), size=min(self.batch, len(buf)), replace=False)
                w, *feats, img = [torch.cat([buf[i][k] for i in pick]) for k in range(len(buf[0]))]
                losses = self.loss(w, feats, img, rng)
                self.opt.zero_grad()
                sum(losses.values()).backward()
                self.opt.step()
                self.step += 1
                if time.time() - last > checkpoint_seconds:
                    ev = self.evaluate()
                    self.history.append({"step": self.step, "seen": self.seen, "psnr": ev})
                    log(f"step {self.step} faces {self.seen} eval PSNR {ev}")
                    self.save()
                    last = time.time()
        finally:
            stop.set()
        ev = self.evaluate()
        self.history.append({"step": self.step, "seen": self.seen, "psnr": ev})
        self.save()
        return ev

"""Per-face protect latency of each runtime backend, and how closely each matches PyTorch.

    python bench/backends.py [--model default --model fast | --model DIR] [--device cpu|cuda] [--threads N]

For every model (default: every shipped one) and every available backend: ms per face for batch 1, 4 and 8 faces, with
and without keys (the key branch), at the default 4 steps; PSNR of its protected crops against the same model on PyTorch.
Writes bench/results/backends.{json,md}."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, SHARED, machine, psnr  # noqa: E402
from difp_stream.difp import Protector, SamplingConfig, load_model  # noqa: E402
from difp_stream.runtime.backends import available, select  # noqa: E402


def sample_crops(res: int, n: int = 8) -> tuple[np.ndarray, np.ndarray]:
    man = SHARED / "faces"
    if (man / "manifest.tsv").is_file():
        from difp_stream.train.data import load_faces

        f = load_faces(man, "eval", 128, limit=n)
        imgs, desc = f.images, f.descriptors
    else:  # no shared data: the astronaut, aligned by the detector
        from skimage import data

        from difp_stream.difp.identity import DlibIdentityEncoder
        from difp_stream.faces import align
        from difp_stream.faces.detect import Detector

        img = data.astronaut()
        face = Detector().detect([img])[0][0]
        c = align.crop(img, align.similarity(face.landmarks, 128), 128)
        imgs = np.stack([c] * n)
        try:
            desc = DlibIdentityEncoder()(imgs)
        except ImportError:  # a GPU machine without dlib: any identity code times the same
            desc = np.zeros((n, 128), np.float32)
    return np.stack([cv2.resize(c, (res, res), interpolation=cv2.INTER_AREA) for c in imgs]), desc


def time_it(fn, reps: int) -> float:
    fn()
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps * 1000


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", default=None, help="repeatable: 'default', 'fast' or a folder")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--name", default="backends")
    ap.add_argument("--inversion-steps", type=int, default=None, help="CLI --inversion-steps (default: the model's)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    from difp_stream.difp import SHIPPED, default_model_dir

    names = args.model or [n for n in SHIPPED if (default_model_dir(n) / "config.json").is_file()]
    rows = []
    for model_name in names:
        model = load_model(model_name, args.device).eval()
        crops, desc = sample_crops(model.cfg.resolution)
        ref = None
        for name, why in available().items():
            if why is not None:
                print(f"{name}: skipped ({why})", file=sys.stderr)
                continue
            backend, used = select(name, model, args.device)
            if used != name:
                continue
            sampling = model.cfg.sampling_config(inversion_steps=args.inversion_steps)
            p = Protector(model, sampling, args.device, backend=backend)
            out = p.protect(crops, seeds=1, id_codes=desc, keys=False).crops
            ref = out if name == "torch" else ref
            r = {"model": model_name, "backend": name, "inversion_steps": sampling.inversion_steps or sampling.steps,
                 "psnr_vs_torch_db": None if name == "torch" else psnr(ref, out)}
            for b in (1, 4, 8):
                for keys in (False, True):
                    ms = time_it(lambda: p.protect(crops[:b], seeds=1, id_codes=desc[:b], keys=keys), args.reps)
                    r[f"ms_per_face_b{b}_{'keys' if keys else 'nokeys'}"] = ms / b
            rows.append(r)
            print(r, file=sys.stderr)
    res = {"machine": machine(), "device": args.device, "torch_threads": torch.get_num_threads(),
           "steps": SamplingConfig().steps, "rows": rows}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(res, indent=2))
    base = {k: v for k, v in rows[0].items()} if rows else {}
    lines = [f"# Backends: per-face protect latency ({args.device}, {res['machine']}, torch threads "
             f"{res['torch_threads']}, {res['steps']} steps)", "",
             f"`python bench/backends.py {' '.join(sys.argv[1:])}`", "",
             "| model | backend | inversion steps | 1 face, no keys | 1 face, keys | 4 faces, no keys (per face) | 4 faces, keys (per face) "
             "| 8 faces, no keys (per face) | 8 faces, keys (per face) | PSNR vs torch |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        cells = []
        for k in ("ms_per_face_b1_nokeys", "ms_per_face_b1_keys", "ms_per_face_b4_nokeys", "ms_per_face_b4_keys",
                  "ms_per_face_b8_nokeys", "ms_per_face_b8_keys"):
            cells.append(f"{r[k]:.0f} ms ({base[k] / r[k]:.2f}×)")
        ps = "—" if r["psnr_vs_torch_db"] is None else f"{r['psnr_vs_torch_db']:.1f} dB"
        lines.append(f"| {r['model']} | {r['backend']} | {r['inversion_steps']} | " + " | ".join(cells) + f" | {ps} |")
    lines += ["", f"(×: speed-up over the first row, {rows[0]['model']} model on {rows[0]['backend']}, same machine and run; "
              "PSNR: protected crops against the same model on PyTorch.)"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

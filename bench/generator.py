"""The face generator and its style encoder on this machine: render time per face at 128/256/512 and encoder time,
per backend (PyTorch, ONNX Runtime, OpenVINO) at batch 1 and 8; and how well the encoder reconstructs real faces it
never saw (the eval split of ../shared/data/faces): PSNR / SSIM of the face region, dlib distance between a crop
and its reconstruction, landmark error; a picture grid (original | reconstruction).

    python bench/generator.py [--encoder DIR] [--limit 100] [--reps 3] [--threads 2]

Writes bench/results/generator.{json,md} and generator_grid.png.
"""
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
from bench.common import RESULTS, SHARED, machine, psnr, ssim  # noqa: E402
from difp_stream.gan.encoder import StyleEncoder, ffhq_crop, ffhq_transform, to_tensor  # noqa: E402
from difp_stream.gan.mobilestylegan import load_generator, to_uint8  # noqa: E402
from difp_stream.runtime.generator import KINDS, encoder_runner, renderer  # noqa: E402

RENDER = 256  # reconstructions are rendered at this size, then warped into the 128 px crop


def timings(gen, enc, kinds, reps: int, threads: int) -> list[dict]:
    rows = []
    w = gen.mean_style(512)[None, None].expand(8, gen.n_layers, 512).numpy().copy()
    w += np.random.default_rng(0).normal(0, 0.3, w.shape).astype(np.float32)
    for kind in kinds:
        for size in (128, 256, 512):
            run = renderer(gen, size, kind, threads)
            for batch in (1, 8):
                run(w[:batch])  # export / warm-up
                t = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    run(w[:batch])
                    t.append((time.perf_counter() - t0) * 1000 / batch)
                rows.append({"what": f"render {size}", "backend": kind, "batch": batch, "ms_per_face": float(np.median(t))})
                print(rows[-1], flush=True)
        if enc is not None:
            run = encoder_runner(enc, kind, threads)
            x = np.zeros((8, 3, enc.cfg.size, enc.cfg.size), np.float32)
            for batch in (1, 8):
                run(x[:batch])
                t = []
                for _ in range(reps):
                    t0 = time.perf_counter()
                    run(x[:batch])
                    t.append((time.perf_counter() - t0) * 1000 / batch)
                rows.append({"what": "encoder", "backend": kind, "batch": batch, "ms_per_face": float(np.median(t))})
                print(rows[-1], flush=True)
    return rows


def eval_crops(limit: int) -> list[tuple[np.ndarray, np.ndarray]]:
    faces = SHARED / "faces"
    rows = [r.split("\t") for r in (faces / "manifest.tsv").read_text().splitlines()[1:]]
    out = []
    for r in rows:
        if r[3] != "eval" or float(r[6]) < 0.999:  # whole crops only (no reflected padding inside)
            continue
        img = cv2.imread(str(faces / r[0]))[:, :, ::-1]
        out.append((img.copy(), np.array(r[7].split(), np.float32).reshape(5, 2)))
        if len(out) >= limit:
            break
    return out


def reconstruct(gen, enc, crop: np.ndarray, lms: np.ndarray) -> np.ndarray:
    """Crop (128, the pipeline's template) -> FFHQ framing -> W+ -> render -> back into the crop's frame."""
    x = to_tensor(ffhq_crop(crop, lms, enc.cfg.size)[None])
    with torch.no_grad():
        img = to_uint8(gen.synthesis(enc(x), RENDER))[0]
    m = ffhq_transform(lms, RENDER)
    return cv2.warpAffine(img, m, (128, 128), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def quality(gen, enc, limit: int) -> tuple[dict, np.ndarray]:
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces.detect import Detector

    data = eval_crops(limit)
    ids, det = DlibIdentityEncoder(), Detector(0.3, max_side=256)
    ps, ss, dists, lm_err, grid = [], [], [], [], []
    y0, y1, x0, x1 = 24, 124, 20, 108  # brows to chin, cheek to cheek in the template
    t0 = time.perf_counter()
    for crop, lms in data:
        rec = reconstruct(gen, enc, crop, lms)
        ps.append(psnr(crop[y0:y1, x0:x1], rec[y0:y1, x0:x1]))
        ss.append(ssim(crop[y0:y1, x0:x1], rec[y0:y1, x0:x1]))
        a, b = ids(crop[None])[0], ids(rec[None])[0]
        dists.append(float(np.linalg.norm(a - b)))
        found = det.detect([cv2.copyMakeBorder(rec, 64, 64, 64, 64, cv2.BORDER_REPLICATE)])[0]
        if found:
            f = max(found, key=lambda f: f.score)
            eye = np.linalg.norm(lms[1] - lms[0])
            lm_err.append(float(np.linalg.norm(f.landmarks - 64 - lms, axis=1).mean() / eye))
        if len(grid) < 12:
            grid.append(np.concatenate([crop, rec], 1))
    sec = (time.perf_counter() - t0) / max(1, len(data))
    res = {"faces": len(data), "psnr_db": float(np.median(ps)), "ssim": float(np.median(ss)),
           "dlib_median": float(np.median(dists)), "dlib_below_0.6": float(np.mean(np.array(dists) < 0.6)),
           "landmark_error_eye_dist": float(np.median(lm_err)) if lm_err else None,
           "landmarks_found": len(lm_err) / max(1, len(data)), "seconds_per_face_all_steps": sec}
    rows = [np.concatenate(grid[i:i + 4], 1) for i in range(0, len(grid) - len(grid) % 4, 4)]
    return res, np.concatenate(rows, 0) if rows else np.zeros((1, 1, 3), np.uint8)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--encoder", default=None, help="encoder folder (default: the shipped one, if any)")
    p.add_argument("--limit", type=int, default=100, help="eval crops (default: 100)")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backends", default=",".join(KINDS))
    p.add_argument("--no-timing", action="store_true")
    p.add_argument("--name", default="generator")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    gen = load_generator()
    enc_dir = Path(args.encoder) if args.encoder else Path(__file__).resolve().parents[1] / "difp_stream" / "weights" / "encoder"
    enc = StyleEncoder.load(enc_dir) if (enc_dir / "encoder.json").exists() else None
    out = {"machine": machine(), "command": "python bench/generator.py " + " ".join(sys.argv[1:]),
           "encoder": str(enc_dir) if enc else None}
    if not args.no_timing:
        out["timings"] = timings(gen, enc, args.backends.split(","), args.reps, args.threads)
    if enc is not None and (SHARED / "faces" / "manifest.tsv").exists():
        out["reconstruction"], grid = quality(gen, enc, args.limit)
        cv2.imwrite(str(RESULTS / f"{args.name}_grid.png"), grid[:, :, ::-1])
        print(out["reconstruction"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1))
    md = [f"# {args.name}", "", f"`{out['command']}` on {out['machine']}", ""]
    if "timings" in out:
        md += ["| what | backend | batch | ms per face |", "| --- | --- | --- | --- |"]
        md += [f"| {r['what']} | {r['backend']} | {r['batch']} | {r['ms_per_face']:.0f} |" for r in out["timings"]]
    if "reconstruction" in out:
        md += ["", "Reconstruction of eval crops: " + json.dumps(out["reconstruction"])]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

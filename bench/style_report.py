"""DIFP in the face generator's style space on real faces it never saw (the eval split of ../shared/data/faces).

Each eval crop (the pipeline's 128 px template) is cut out again in the generator's FFHQ framing, protected by a
style-space DIFP model (two seeds), rendered, and warped back into the crop's frame; then measured as the README's
goals ask: protection (dlib L2 to the original > 0.6), two seeds apart, the protected face still detected as a
face, detail ratios (mid / high FFT band energy, output / original, same box), and the key's recovery (PSNR of the
face region). A picture grid: original | reconstruction (encoder only) | protected, seed 1 | seed 2 (each pasted as
the pipeline pastes: face mask, colour and detail matched) | recovered by the diffusion key alone.

    python bench/style_report.py --model runs/styles1/model [--limit 100] [--steps 4] [--s-id 3] [--g-rea 0.6]

Writes bench/results/NAME.{json,md}, NAME_grid.png and NAME_inframe.png (one frame of each of --clips, original |
protected by the whole pipeline with its identity check off), NAME: --name, default style_model.
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
from bench.common import RESULTS, SHARED, machine, psnr  # noqa: E402
from bench.generator import eval_crops  # noqa: E402
from difp_stream.difp.protector import Protector  # noqa: E402
from difp_stream.difp import load_model  # noqa: E402
from difp_stream.faces.align import crop as align_crop, face_mask, paste  # noqa: E402
from difp_stream.gan.encoder import ffhq_crop, ffhq_transform  # noqa: E402
from difp_stream.metrics import band_ratios  # noqa: E402
from difp_stream.runtime.backends import select  # noqa: E402

BOX = (24, 124, 20, 108)  # y0, y1, x0, x1: brows to chin, cheek to cheek in the 128 px template


def back(img: np.ndarray, lms: np.ndarray, crop: np.ndarray | None = None) -> np.ndarray:
    """A render in the FFHQ framing back into the 128 px template crop's frame: the whole render, or with the
    original ``crop`` given, pasted into it as the pipeline pastes into a frame (face mask, colour and detail
    matched)."""
    m = ffhq_transform(lms, img.shape[0])
    if crop is not None:
        out = crop.copy()
        paste(out, img, m.astype(np.float32), align_crop(crop, m.astype(np.float32), img.shape[0]),
              mask=face_mask(img.shape[0]))
        return out
    return cv2.warpAffine(img, m, (128, 128), flags=cv2.WARP_INVERSE_MAP | cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def in_frame(prot, clips: list[str], frame: int = 10, height: int = 360) -> np.ndarray:
    """One frame of each shared clip, original | protected by the whole pipeline (identity check off: what the
    model makes, not what the check lets through), side by side at ``height`` px."""
    import av

    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.pipeline.config import PipelineConfig
    from difp_stream.pipeline.frame import FaceProtector

    rows = []
    for name in clips:
        with av.open(str(SHARED / "videos" / name)) as c:
            img = next(f.to_ndarray(format="rgb24") for i, f in enumerate(c.decode(video=0)) if i == frame)
        out = FaceProtector(prot, DlibIdentityEncoder(), PipelineConfig(verify_distance=0.0)).process(0, img)
        k = height / img.shape[0]
        rows.append(np.concatenate([cv2.resize(img, None, fx=k, fy=k), cv2.resize(out, None, fx=k, fy=k)], 1))
    w = max(r.shape[1] for r in rows)
    return np.concatenate([np.pad(r, ((0, 0), (0, w - r.shape[1]), (0, 0))) for r in rows], 0)


def eval_names(limit: int) -> list[tuple[str, str]]:
    """(identity, file) of the crops ``eval_crops(limit)`` returns, in its order."""
    rows = [r.split("\t") for r in (SHARED / "faces" / "manifest.tsv").read_text().splitlines()[1:]]
    return [(r[1], r[0]) for r in rows if r[3] == "eval" and float(r[6]) >= 0.999][:limit]


def _other_photos(codes, split, who, manifest, name, code) -> float:
    """The protected face's distance to the nearest other photo of the same person (nan: none)."""
    ident, file = name
    mask = (who == ident) & (np.array([r[0] for r in manifest]) != file)
    return float(np.linalg.norm(codes[mask] - code, axis=1).min()) if mask.any() else float("nan")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="default", help="'default' (the shipped model) or a style model's folder")
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--strength", type=float, default=None)
    p.add_argument("--s-id", type=float, default=None)
    p.add_argument("--s-sty", type=float, default=None)
    p.add_argument("--g-rea", type=float, default=None)
    p.add_argument("--realism-k", type=float, default=None)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--backend", default="auto", help="auto (OpenVINO where installed), onnxruntime, torch")
    p.add_argument("--name", default="style_model")
    p.add_argument("--clips", default="liveportrait_d20.mp4,facenet_pytorch_video.mp4,liveportrait_d12.mp4",
                   help="shared clips for the in-frame picture NAME_inframe.png ('' for none)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces.detect import Detector

    model = load_model(args.model)
    s = model.cfg.sampling_config(steps=args.steps, strength=args.strength, s_id=args.s_id, s_sty=args.s_sty,
                                  g_rea=args.g_rea, realism_k=args.realism_k)
    backend, used = select(args.backend, model)
    prot = Protector(model, s, device="cpu", backend=backend)
    ids, det = DlibIdentityEncoder(), Detector(0.5, max_side=256)
    y0, y1, x0, x1 = BOX
    rows, grid, t_prot = [], [], []
    faces_dir = SHARED / "faces"  # the training photos' dlib codes: is a fake face anybody's we trained on?
    manifest = [r.split("\t") for r in (faces_dir / "manifest.tsv").read_text().splitlines()[1:]]
    split, who = np.array([r[3] for r in manifest]), np.array([r[1] for r in manifest])
    all_codes = np.load(faces_dir / "dlib_descriptors.npy")
    train_codes = all_codes[split == "train"]
    names = eval_names(args.limit)  # the identity of each eval crop, in eval_crops' order
    for n, (crop, lms) in enumerate(eval_crops(args.limit)):
        x = ffhq_crop(crop, lms, model.cfg.resolution)[None]
        code = ids(crop[None])
        t0 = time.perf_counter()
        r1 = prot.protect(x, seeds=[2 * n], id_codes=code)
        t_prot.append(time.perf_counter() - t0)
        r2 = prot.protect(x, seeds=[2 * n + 1], id_codes=code, keys=False)
        with torch.no_grad():
            recon = back(prot.net.decode(r1.latents).mul(127.5).add(127.5).round().clamp(0, 255).byte()
                         .permute(0, 2, 3, 1).numpy()[0], lms)
        f1, f2 = back(r1.crops[0], lms, crop), back(r2.crops[0], lms, crop)
        rec = back(prot.recover(r1.keys)[0], lms)
        e0, e1, e2 = code[0], ids(f1[None])[0], ids(f2[None])[0]
        mid, high = band_ratios(crop[y0:y1, x0:x1], f1[y0:y1, x0:x1])
        found = det.detect([cv2.copyMakeBorder(f1, 64, 64, 64, 64, cv2.BORDER_REPLICATE)])[0]
        rows.append({"dlib_to_original": float(np.linalg.norm(e1 - e0)), "seeds_apart": float(np.linalg.norm(e1 - e2)),
                     "detected": bool(found), "mid": mid, "high": high,
                     "recovered_psnr": psnr(crop[y0:y1, x0:x1], rec[y0:y1, x0:x1]),
                     "recovered_dlib": float(np.linalg.norm(ids(rec[None])[0] - e0)),
                     "nearest_training_photo": float(np.linalg.norm(train_codes - e1, axis=1).min()),
                     "original_nearest_training_photo": float(np.linalg.norm(train_codes - e0, axis=1).min()),
                     # against the person's other photos (as the shared data's codes were computed)
                     "to_other_photos": _other_photos(all_codes, split, who, manifest, names[n], e1)})
        if len(grid) < 8:
            grid.append(np.concatenate([crop, recon, f1, f2, rec], 1))
    d = {k: np.array([r[k] for r in rows], np.float64) for k in rows[0]}
    res = {"faces": len(rows), "protected_beyond_0.6": float(np.mean(d["dlib_to_original"] > 0.6)),
           "dlib_to_original_median": float(np.median(d["dlib_to_original"])),
           "seeds_apart_median": float(np.median(d["seeds_apart"])),
           "seeds_apart_0.55": float(np.mean(d["seeds_apart"] >= 0.55)),
           "protected_vs_other_photos": float(np.mean(d["to_other_photos"][~np.isnan(d["to_other_photos"])] > 0.6)),
           "people_with_other_photos": int((~np.isnan(d["to_other_photos"])).sum()),
           "detected": float(np.mean(d["detected"])), "mid_ratio_median": float(np.median(d["mid"])),
           "high_ratio_median": float(np.median(d["high"])),
           "recovered_psnr_median": float(np.median(d["recovered_psnr"])),
           "recovered_within_0.6": float(np.mean(d["recovered_dlib"] < 0.6)),
           "nearest_training_photo_median": float(np.median(d["nearest_training_photo"])),
           "within_0.6_of_a_training_photo": float(np.mean(d["nearest_training_photo"] < 0.6)),
           # the same for the real (unseen) originals: how close a stranger comes to someone in a 16,707-photo
           # gallery anyway (dlib's 0.6 does not separate at that scale)
           "original_nearest_training_photo_median": float(np.median(d["original_nearest_training_photo"])),
           "original_within_0.6_of_a_training_photo": float(np.mean(d["original_nearest_training_photo"] < 0.6)),
           "seconds_per_face_protect_with_keys": float(np.median(t_prot))}
    out = {"machine": machine(), "command": "python bench/style_report.py " + " ".join(sys.argv[1:]), "backend": used,
           "sampling": s.__dict__, "results": res}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps(out, indent=1, default=str))
    md = [f"# {args.name}", "", f"`{out['command']}` on {out['machine']}", "", "| measure | value |", "| --- | --- |"]
    md += [f"| {k} | {v:.3f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in res.items()]
    md += ["", f"Grid ({args.name}_grid.png): original | encoder reconstruction | protected, seed 1 | seed 2 (pasted) | recovered (diffusion key)"]
    (RESULTS / f"{args.name}.md").write_text("\n".join(md) + "\n")
    cv2.imwrite(str(RESULTS / f"{args.name}_grid.png"), np.concatenate(grid, 0)[:, :, ::-1])
    if args.clips:
        cv2.imwrite(str(RESULTS / f"{args.name}_inframe.png"), in_frame(prot, args.clips.split(","))[:, :, ::-1])
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

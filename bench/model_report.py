"""Model report on the shared eval split (identities never seen in training):
protection success vs dlib, recovery PSNR/SSIM/RMSE/MAE, re-identification of recovered faces, detector utility,
diversity across seeds; a PNG grid original | protected (3 seeds) | recovered.

    python bench/model_report.py [--model DIR] [--limit 300] [--out bench/results]
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
from difp_stream.difp import Protector, load_model  # noqa: E402
from difp_stream.difp.identity import TEMPLATE_BOX, DlibIdentityEncoder  # noqa: E402
from difp_stream.faces.detect import Detector  # noqa: E402
from difp_stream.pipeline import Timings  # noqa: E402
from difp_stream.train.data import load_faces  # noqa: E402


def up128(x: np.ndarray) -> np.ndarray:
    return x if x.shape[0] == 128 else cv2.resize(x, (128, 128), interpolation=cv2.INTER_CUBIC)


def detectable(det: Detector, crops: np.ndarray) -> np.ndarray:
    """A crop counts as a face if RetinaFace finds one in it (the crop set in a 2x canvas of replicated border)."""
    out = []
    for c in crops:
        big = cv2.copyMakeBorder(up128(c), 64, 64, 64, 64, cv2.BORDER_REPLICATE)
        out.append(bool(det.detect([big])[0]))
    return np.array(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None)
    ap.add_argument("--data", default=str(SHARED / "faces"))
    ap.add_argument("--limit", type=int, default=300, help="eval crops to use (spread over the split)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--out", default=str(RESULTS))
    ap.add_argument("--name", default="model")
    ap.add_argument("--key-refine", type=int, default=0, help="keys fitted with N decoder steps (CLI --key-refine)")
    ap.add_argument("--surrogate-spread", type=float, default=None, help="CLI --surrogate-spread (default: the model's)")
    ap.add_argument("--start-noise", type=float, default=None, help="CLI --start-noise (default: the model's)")
    ap.add_argument("--inversion-steps", type=int, default=None, help="CLI --inversion-steps (default: the model's)")
    ap.add_argument("--key-resolution", type=int, default=0, help="CLI --key-resolution, up to 128 (the eval crops' "
                                                                   "size); recovery is then measured at that size")
    args = ap.parse_args()
    if not Path(args.data, "manifest.tsv").is_file():
        sys.exit(f"no eval data at {args.data}")
    t0 = time.time()
    model = load_model(args.model)
    res = model.cfg.resolution
    full = load_faces(args.data, "eval", 128)
    pick = np.linspace(0, len(full.images) - 1, min(args.limit, len(full.images))).round().astype(int)
    crops128 = full.images[pick]
    crops = np.stack([cv2.resize(c, (res, res), interpolation=cv2.INTER_AREA) for c in crops128])
    desc = full.descriptors[pick]
    sampling = model.cfg.sampling_config(steps=args.steps, surrogate_spread=args.surrogate_spread,
                                         start_noise=args.start_noise, inversion_steps=args.inversion_steps)
    p = Protector(model, sampling, device="cpu", key_refine=args.key_refine, key_resolution=args.key_resolution)
    kres = p.key_resolution
    crops_k = crops128 if kres == 128 else np.stack([cv2.resize(c, (kres, kres), interpolation=cv2.INTER_AREA)
                                                     for c in crops128])
    p.timings = Timings()
    # main figures: dlib as the shared descriptors were made (template box); second view: dlib's detector box, the
    # more faithful recognizer the pipeline uses (difp/identity.py)
    enc, enc_d, det = DlibIdentityEncoder(TEMPLATE_BOX), DlibIdentityEncoder(), Detector(threshold=0.5)
    seeds = (1, 2, 3)
    prot = {s: [] for s in seeds}
    rec, vae = [], []
    for i in range(0, len(crops), 16):
        c, d = crops[i:i + 16], desc[i:i + 16]
        r = p.protect(c, seeds=[1000 * seeds[0] + i + k for k in range(len(c))], id_codes=d, keys=True,
                      key_crops=crops_k[i:i + 16])
        prot[seeds[0]].append(r.crops)
        rec.append(p.recover(r.keys))
        for s in seeds[1:]:
            prot[s].append(p.protect(c, seeds=[1000 * s + i + k for k in range(len(c))], id_codes=d, keys=False).crops)
        with torch.no_grad():
            x = torch.from_numpy(c).permute(0, 3, 1, 2).float() / 127.5 - 1
            vae.append(((model.decode(model.encode(x)) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy())
        print(f"\r{i + len(c)}/{len(crops)} crops", end="", file=sys.stderr)
    print(file=sys.stderr)
    prot = {s: np.concatenate(v) for s, v in prot.items()}
    rec, vae = np.concatenate(rec), np.concatenate(vae)

    e_orig = enc(np.stack([up128(c) for c in crops]))  # the original at model resolution, seen the same way
    e_prot = {s: enc(np.stack([up128(c) for c in prot[s]])) for s in seeds}
    e_rec = enc(np.stack([up128(c) for c in rec]))
    d_same = np.linalg.norm(e_prot[1] - desc, axis=1)  # vs the original photo's descriptor (128 px)
    # vs other photos of the same person (eval split, all of them)
    ids = full.identities
    others = []
    for k, j in enumerate(pick):
        mates = np.where((ids == ids[j]) & (np.arange(len(ids)) != j))[0]
        if len(mates):
            others.append(np.linalg.norm(full.descriptors[mates] - e_prot[1][k], axis=1).min())
    others = np.array(others)
    div = np.linalg.norm(e_prot[1] - e_prot[2], axis=1)
    e_orig_d = enc_d(crops128)
    e_prot_d = {s: enc_d(np.stack([up128(c) for c in prot[s]])) for s in seeds[:2]}
    d_same_d = np.linalg.norm(e_prot_d[1] - e_orig_d, axis=1)
    div_d = np.linalg.norm(e_prot_d[1] - e_prot_d[2], axis=1)
    util_prot, util_orig = detectable(det, prot[1]), detectable(det, crops)
    m = {
        "model": str(args.model or "default"),
        "resolution": res,
        "crops": int(len(crops)),
        "sampling": {k: getattr(p.sampling, k) for k in ("steps", "strength", "s_id", "s_sty", "g_rea", "surrogate_spread", "start_noise", "inversion_steps")},
        "protection_success_same_photo": float((d_same > 0.6).mean()),
        "protection_success_other_photos": float((others > 0.6).mean()) if len(others) else None,
        "other_photo_pairs": int(len(others)),
        "mean_dlib_distance_protected_vs_original": float(d_same.mean()),
        "key_refine_steps": args.key_refine,
        "key_resolution": kres,
        "recovery_psnr_db": float(np.mean([psnr(a, b) for a, b in zip(crops_k, rec)])),
        "recovery_ssim": float(np.mean([ssim(a, b) for a, b in zip(crops_k, rec)])),
        "recovery_rmse": float(np.mean([np.sqrt(np.mean(((a / 255.0) - (b / 255.0)) ** 2)) for a, b in zip(crops_k, rec)])),
        "recovery_mae": float(np.mean([np.mean(np.abs((a / 255.0) - (b / 255.0))) for a, b in zip(crops_k, rec)])),
        "vae_only_psnr_db": float(np.mean([psnr(a, b) for a, b in zip(crops, vae)])),
        "recovered_reidentified": float((np.linalg.norm(e_rec - desc, axis=1) < 0.6).mean()),
        "original_at_model_res_reidentified": float((np.linalg.norm(e_orig - desc, axis=1) < 0.6).mean()),
        "utility_detected_protected": float(util_prot.mean()),
        "utility_detected_original": float(util_orig.mean()),
        "diversity_mean_dlib_l2_between_seeds": float(div.mean()),
        "detector_box_protection_success_same_photo": float((d_same_d > 0.6).mean()),
        "detector_box_mean_distance": float(d_same_d.mean()),
        "detector_box_diversity": float(div_d.mean()),
        "key_refine_ms_per_face": (round(float(np.sum(p.timings.ms.get("difp: key refine", [0]))) / len(crops), 1)
                                   if args.key_refine else 0.0),
        "seconds": round(time.time() - t0, 1),
        "machine": machine(),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(m, indent=2))
    # grid: original | seed 1 | seed 2 | seed 3 | recovered, 8 rows, upscaled for viewing
    rows = []
    for k in np.linspace(0, len(crops) - 1, 8).round().astype(int):
        rows.append(np.concatenate([up128(x) for x in (crops[k], prot[1][k], prot[2][k], prot[3][k], rec[k])], 1))
    cv2.imwrite(str(out / f"{args.name}_grid.png"), np.concatenate(rows, 0)[:, :, ::-1])
    goal = lambda v, g, hi=True: "✅" if v is not None and (v >= g if hi else v <= g) else "❌"  # noqa: E731
    sm = m["sampling"]
    md = f"""# Model report ({m['model']}, {res}×{res}; steps {sm['steps']}, S_n {sm['strength']}, s_id {sm['s_id']}, s_sty {sm['s_sty']}, g_rea {sm['g_rea']}, surrogate spread {sm['surrogate_spread']}, start noise {sm['start_noise']}, inversion steps {sm['inversion_steps'] or sm['steps']})

Made by `python bench/model_report.py{' --model ' + args.model if args.model else ''} --limit {args.limit}{f' --key-refine {args.key_refine}' if args.key_refine else ''}{f' --surrogate-spread {args.surrogate_spread}' if args.surrogate_spread else ''}{f' --start-noise {args.start_noise}' if args.start_noise is not None else ''}{f' --inversion-steps {args.inversion_steps}' if args.inversion_steps else ''}{f' --key-resolution {args.key_resolution}' if args.key_resolution else ''}` on
{m['crops']} crops spread over the `eval` split of shared/data/faces (people never seen in training), on
{m['machine']}, in {m['seconds']} s. Identity: dlib ResNet descriptor, match = L2 < 0.6, computed like the
shared descriptors (the template's 112×112 box); the last row uses dlib's detector box (`difp/identity.py`).

| measure | value | goal |
| --- | --- | --- |
| protection success, vs the same photo (L2 > 0.6) | {m['protection_success_same_photo']:.1%} | ≥ 95% {goal(m['protection_success_same_photo'], 0.95)} |
| protection success, vs other photos of the person ({m['other_photo_pairs']} faces) | {(m['protection_success_other_photos'] or 0):.1%} | — |
| mean dlib distance protected ↔ original | {m['mean_dlib_distance_protected_vs_original']:.3f} | > 0.6 |
| recovery PSNR{f" ({kres} px keys, against the original at {kres} px)" if kres != res else ""}{f" (keys refined, {args.key_refine} steps, {m['key_refine_ms_per_face']:.0f} ms per face)" if args.key_refine else ""} | {m['recovery_psnr_db']:.2f} dB | ≥ 30 dB {goal(m['recovery_psnr_db'], 30)} |
| recovery SSIM | {m['recovery_ssim']:.3f} | ≥ 0.93 {goal(m['recovery_ssim'], 0.93)} |
| recovery RMSE / MAE (0–1 scale) | {m['recovery_rmse']:.4f} / {m['recovery_mae']:.4f} | paper 0.046 / 0.027 |
| VAE alone (recovery with unrefined keys) | {m['vae_only_psnr_db']:.2f} dB | — |
| recovered faces re-identified | {m['recovered_reidentified']:.1%} | paper 100% |
| original at model resolution re-identified (ceiling) | {m['original_at_model_res_reidentified']:.1%} | — |
| detector finds a face: protected / original | {m['utility_detected_protected']:.1%} / {m['utility_detected_original']:.1%} | ≥ 95% {goal(m['utility_detected_protected'], 0.95)} |
| diversity: dlib L2 between two seeds | {m['diversity_mean_dlib_l2_between_seeds']:.3f} | > 0.5 {goal(m['diversity_mean_dlib_l2_between_seeds'], 0.5)} |
| with dlib's detector box (the pipeline's recognizer): protection success vs the same photo / mean distance / diversity | {m['detector_box_protection_success_same_photo']:.1%} / {m['detector_box_mean_distance']:.3f} / {m['detector_box_diversity']:.3f} | ≥ 95% / > 0.6 / > 0.5 |

![original | protected seed 1 | seed 2 | seed 3 | recovered]({args.name}_grid.png)

Columns: original | protected (seeds 1, 2, 3) | recovered from the key.
"""
    (out / f"{args.name}.md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()

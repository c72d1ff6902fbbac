"""End-to-end fps on a GPU: synthetic 720p and 1080p frames holding 1, 4 or 8 copies of a face, the full frame
pipeline (detect, track, align, protect with keys, paste), worst case: every face gets a full DIFP run on every
frame (no carry between keyframes, no similarity skip). Backends: plain PyTorch fp32 and torch-cuda (fp16, CUDA
graphs). The recognizer check is off (dlib runs on the CPU; see the README). Part of bench/gpu_check.sh; runs on CPU
too (slowly) with --device cpu --backends torch."""
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
from bench.common import RESULTS, machine  # noqa: E402
from difp_stream.difp import Protector, load_model  # noqa: E402
from difp_stream.pipeline import FaceProtector, PipelineConfig  # noqa: E402
from difp_stream.runtime.backends import select  # noqa: E402


def frame_with_faces(w: int, h: int, n: int) -> np.ndarray:
    from skimage import data

    face = data.astronaut()[20:300, 130:370]
    frame = np.full((h, w, 3), 90, np.uint8)
    cols = int(np.ceil(np.sqrt(n)))
    size = min(w // cols, h // int(np.ceil(n / cols)), 320)
    for i in range(n):
        x, y = (i % cols) * (w // cols), (i // cols) * (h // int(np.ceil(n / cols)))
        frame[y:y + size, x:x + int(size * 240 / 280)] = cv2.resize(face, (int(size * 240 / 280), size))
    return frame


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=None)
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--backends", default="torch,torch-cuda")
    args, _ = ap.parse_known_args()
    model = load_model(args.model, args.device)
    cfg = PipelineConfig(keys=True, protect_every=1, skip_below=0, verify_distance=0)
    out = []
    for name in args.backends.split(","):
        backend, used = select(name, model, args.device)
        if used != name:
            continue
        for (w, h) in ((1280, 720), (1920, 1080)):
            for n in (1, 4, 8):
                frame = frame_with_faces(w, h, n)
                fp = FaceProtector(Protector(model, model.cfg.sampling_config(), args.device, backend=backend),
                                   lambda c: np.tile(model.id_mean.cpu().numpy(), (len(c), 1)), cfg)
                for i in range(2):  # warm-up (CUDA graphs are captured for this batch size)
                    fp.process(i, frame)
                fp.timings.ms.clear()
                if args.device == "cuda":
                    torch.cuda.synchronize()
                t = time.perf_counter()
                for i in range(2, args.frames + 2):
                    fp.process(i, frame)
                if args.device == "cuda":
                    torch.cuda.synchronize()
                fps = args.frames / (time.perf_counter() - t)
                st = {k: round(float(np.median(v)), 2) for k, v in fp.timings.ms.items()}
                row = {"backend": name, "size": f"{w}x{h}", "faces": n, "faces_per_frame": fp.stats.faces / (args.frames + 2),
                       "difp_share": round(fp.stats.protected / max(1, fp.stats.faces), 3),
                       "fps": round(fps, 2), "stage_ms_p50": st}
                out.append(row)
                print(json.dumps(row))
    RESULTS.mkdir(parents=True, exist_ok=True)
    res = {"machine": machine(), "gpu": torch.cuda.get_device_name() if args.device == "cuda" else None, "rows": out}
    (RESULTS / f"gpu_fps_{args.device}.json").write_text(json.dumps(res, indent=2))
    (RESULTS / f"gpu_fps_{args.device}.md").write_text(markdown(res))


def markdown(res: dict) -> str:
    lines = [f"# End-to-end fps, every face protected on every frame ({res.get('gpu') or 'CPU'}; "
             f"host {res['machine']})", "", "`python bench/gpu_fps.py` (part of `bench/gpu_check.sh`): synthetic frames "
             "with 1/4/8 faces, keys on, no carry or skip, recognizer check off.", "",
             "| backend | frame | faces | fps | detect ms | DIFP ms (all faces) | DIFP ms per face |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in res["rows"]:
        st = r["stage_ms_p50"]
        lines.append(f"| {r['backend']} | {r['size']} | {r['faces']} | {r['fps']:.1f} | {st.get('detect', 0):.1f} | "
                     f"{st.get('difp', 0):.1f} | {st.get('difp', 0) / r['faces']:.1f} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()

"""Faces per second through the `serve` model service: one shared replica that batches faces across cameras, against
one model per camera, for 1, 2 and 4 simulated cameras on a local Ray instance.

Each simulated camera sends what a camera worker sends in steady state (one face per frame, carried: encode and
render, with its key) in a closed loop, through the same ``ServiceProtector`` a worker uses; a camera's first
request is its DIFP keyframe.

    python bench/serve.py [--seconds 20] [--cameras 1,2,4] [--batch 8] [--wait-ms 10] [--model default]

Writes bench/results/serve.{json,md}."""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, machine  # noqa: E402


def face():
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces import align
    from difp_stream.faces.detect import Detector
    from difp_stream.gan.encoder import ffhq_crop
    from difp_stream.video.synthetic import astronaut

    img = astronaut()
    lms = Detector().detect([img])[0][0].landmarks
    code = DlibIdentityEncoder()(align.crop(img, align.similarity(lms, 128), 128)[None])
    return img, lms, code, ffhq_crop


def measure(n: int, shared: bool, seconds: float, args, model) -> dict:
    import ray

    from difp_stream.serve.service import FaceService, ServiceProtector

    img, lms, code, ffhq_crop = face()
    crop = ffhq_crop(img, lms, model.cfg.resolution)[None]
    Service = ray.remote(FaceService).options(num_cpus=0, max_concurrency=1000)
    batch = args.batch if shared else 1
    services = [Service.remote(args.model, "auto", batch, args.wait_ms) for _ in range(1 if shared else n)]
    proxies = [ServiceProtector(services[0 if shared else i], model, timeout=300) for i in range(n)]
    for p in proxies:
        p.render_size = 256
    first = [p.protect(crop, seeds=[i], id_codes=code) for i, p in enumerate(proxies)]  # keyframes (and warm-up)
    for p, r in zip(proxies, first):
        p.carry(crop, r.latents, r.protected_latents, 8)
    counts, stop = [0] * n, threading.Event()

    def camera(i: int) -> None:
        p, r = proxies[i], first[i]
        while not stop.is_set():
            p.carry(crop, r.latents, r.protected_latents, 8)
            counts[i] += 1

    threads = [threading.Thread(target=camera, args=(i,), daemon=True) for i in range(n)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in threads:
        t.join(60)
    secs = time.monotonic() - t0
    stats = ray.get([s.stats.remote() for s in services])
    for s in services:
        ray.kill(s)
    return {"cameras": n, "mode": "shared, batched" if shared else "one model per camera",
            "faces_per_s": sum(counts) / secs, "per_camera_fps": [c / secs for c in counts],
            "faces_per_batch": float(np.mean([s["faces_per_batch"] for s in stats]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--cameras", default="1,2,4")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--wait-ms", type=float, default=10)
    ap.add_argument("--model", default="default")
    ap.add_argument("--name", default="serve")
    args = ap.parse_args()
    import ray

    from difp_stream.difp import load_model

    ray.init(include_dashboard=False, log_to_driver=False, configure_logging=False)
    model = load_model(args.model)
    t0, rows = time.time(), []
    for n in (int(x) for x in args.cameras.split(",")):
        for shared in (True, False):
            if n == 1 and not shared:
                continue  # the same thing as the shared service with one camera
            rows.append(measure(n, shared, args.seconds, args, model))
            print(json.dumps(rows[-1]), flush=True)
    ray.shutdown()
    cmd = "python bench/serve.py " + " ".join(sys.argv[1:])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"machine": machine(), "command": cmd, "rows": rows}, indent=1))
    lines = [f"# Model service throughput (`{cmd}`)", "", f"{machine()}, {time.time() - t0:.0f} s. Each camera: one "
             "face per frame, carried (encode + 256 px render + its key), in a closed loop.", "",
             "| cameras | model service | faces / s (all cameras) | per camera | faces per model call |",
             "| --- | --- | --- | --- | --- |"]
    lines += [f"| {r['cameras']} | {r['mode']} | {r['faces_per_s']:.2f} | "
              f"{', '.join(f'{v:.2f}' for v in r['per_camera_fps'])} | {r['faces_per_batch']:.1f} |" for r in rows]
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

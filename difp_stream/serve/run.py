"""The `serve` driver: joins a Ray cluster (``--address``) or starts a local one, starts the model service replicas
and one worker per camera, and watches them: every ``stats_seconds`` it writes the status file (what
`difp-stream serve CONFIG --status` prints) and a line per camera; a worker Ray restarted is counted as a gap. Ctrl-C,
SIGTERM or ``duration`` stop the cameras like Ctrl-C stops one (open segments finalised with their keys)."""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from .config import ServeConfig
from ..errors import stop_on_sigterm
from .cameras import CameraWorker
from .service import FaceService

NAMESPACE = "difp-stream"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def start(cfg: ServeConfig, address: str | None = None):
    """Ray up (joined or local), the service replicas and the camera workers; returns (services, workers)."""
    import ray

    if not ray.is_initialized():  # (from the main thread: Ray's processes die with the thread that starts them)
        ray.init(address=address, namespace=NAMESPACE, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
    m = cfg.model
    Service = ray.remote(num_cpus=m.cpus, num_gpus=m.gpus, max_restarts=-1, max_concurrency=1000)(FaceService)
    services = [Service.options(name=f"difp-model-{i}").remote(m.name, m.backend, m.batch, m.wait_ms, m.threads,
                                                                  m.sampling, "cuda" if m.gpus else "cpu")
                for i in range(m.replicas)]
    workers = {}
    for i, c in enumerate(cfg.cameras):
        Worker = ray.remote(num_cpus=c.cpus, max_restarts=-1, max_concurrency=4)(CameraWorker)
        c.options.model.model = m.name  # the camera's key files name the service's model
        workers[c.name] = Worker.options(name=f"difp-camera-{c.name}").remote(c.name, c.options,
                                                                               services[i % len(services)])
    return services, workers


def poll(services: list, workers: dict, seen: dict, timeout: float = 10.0) -> dict:
    """Every camera's status (a worker being restarted: 'restarting'), restarts counted by ``seen`` (name ->
    start time of the incarnation last seen), and the service replicas' batching figures."""
    import ray

    cams = {}
    for name, w in workers.items():
        try:
            s = ray.get(w.status.remote(), timeout=timeout)
        except Exception as e:  # died, being restarted by Ray, or busy
            cams[name] = {"camera": name, "state": "restarting", "error": type(e).__name__, "stats": {},
                          "restarts": seen.get(name, (None, 0))[1]}
            continue
        started, restarts = seen.get(name, (None, 0))
        if started is not None and s["started"] != started:
            restarts += 1
        seen[name] = (s["started"], restarts)
        cams[name] = {**s, "restarts": restarts}
    svc = []
    for i, sv in enumerate(services):
        try:
            svc.append({"replica": i, **ray.get(sv.stats.remote(), timeout=timeout)})
        except Exception as e:
            svc.append({"replica": i, "state": f"unavailable ({type(e).__name__})"})
    return {"time": time.time(), "cameras": cams, "model": svc}


def write_status(path: Path, status: dict) -> None:
    tmp = path.with_name(path.name + ".partial")
    tmp.write_text(json.dumps(status, indent=1, default=str))
    os.replace(tmp, path)


def read_status(path: Path) -> str:
    """The status file as the lines `serve --status` prints."""
    s = json.loads(Path(path).read_text())
    age = time.time() - s["time"]
    lines = [f"status of {age:.0f} s ago" + (" (the service may not be running)" if age > 60 else "")]
    for name, c in s["cameras"].items():
        st = c.get("stats") or {}
        lines.append(f"{name}: {c['state']}, in {st.get('input_fps', 0):.1f} fps, out {st.get('output_fps', 0):.1f} "
                     f"fps, latency p50 {st.get('latency_p50_ms', 0):.0f} ms p95 {st.get('latency_p95_ms', 0):.0f} ms, "
                     f"fallback {st.get('fallback', 0)} of {st.get('faces', 0)} faces, dropped {st.get('dropped', 0)}, "
                     f"reconnects {st.get('reconnects', 0)}, restarts {c.get('restarts', 0)}"
                     + (f", error {c['error']}" if c.get("error") else ""))
    for r in s["model"]:
        if "faces" in r:
            lines.append(f"model replica {r['replica']} ({r['backend']}): {r['faces']} faces in {r['batches']} "
                         f"batches ({r['faces_per_batch']:.1f} per batch, largest {r['largest_batch']}), "
                         f"busy {r['busy_s']:.0f} s, queued {r['queued']}")
        else:
            lines.append(f"model replica {r['replica']}: {r.get('state')}")
    return "\n".join(lines)


def serve(cfg: ServeConfig, address: str | None = None, duration: float = 0.0, stop=None) -> dict:
    """Run until every camera has stopped, ``duration`` seconds, Ctrl-C / SIGTERM, or ``stop`` (an Event) is set.
    Returns the last status."""
    import signal
    import threading

    import ray  # (Ray: the optional `serve` extra)

    services, workers = start(cfg, address)
    if threading.current_thread() is threading.main_thread():  # after ray.init, which puts in its own handler
        signal.signal(signal.SIGTERM, stop_on_sigterm)  # (whose exit left the open segments unfinalised)
    _log(f"serve: {len(workers)} cameras, {len(services)} model replica(s) ({cfg.model.name}, batch "
         f"{cfg.model.batch}, wait {cfg.model.wait_ms:g} ms) on Ray {ray.__version__}; status: {cfg.status_file}")
    seen: dict = {}
    t0, status = time.monotonic(), {}
    try:
        while True:
            deadline = time.monotonic() + cfg.stats_seconds
            while time.monotonic() < deadline:
                if stop is not None and stop.is_set() or duration and time.monotonic() - t0 >= duration:
                    raise KeyboardInterrupt
                time.sleep(0.2)
            status = poll(services, workers, seen)
            write_status(cfg.status_file, status)
            for line in read_status(cfg.status_file).splitlines()[1:1 + len(workers)]:
                _log(line)
            if all(c["state"].startswith(("stopped", "failed")) for c in status["cameras"].values()):
                break
    except KeyboardInterrupt:
        _log("serve: stopping the cameras (open segments are finalised)")
        finals = ray.get([w.stop.remote() for w in workers.values()], timeout=120)
        status = poll(services, workers, seen)
        for f in finals:
            status["cameras"][f["camera"]].update(state=f["state"], stats=f["stats"])
        write_status(cfg.status_file, status)
    finally:
        for w in [*workers.values(), *services]:
            ray.kill(w, no_restart=True)
    return status

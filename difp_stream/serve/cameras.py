"""A camera worker: one camera's whole live pipeline (decode -> detect -> track -> faces to the model service ->
blend -> encode, with the live mode's reconnects, drop policy, latency budget, fail-closed cover and per-segment key
files), run as a Ray actor. Ray restarts a worker that dies; its ``__init__`` starts the camera again, so the camera
resumes with a new segment (the gap is counted, never unprotected frames: nothing is written while it is down)."""
from __future__ import annotations

import io
import threading
import time
from contextlib import redirect_stderr

from ..app import build
from ..app.live import protect_stream
from .service import ServiceProtector


class CameraWorker:
    def __init__(self, name: str, options, service):
        import ray

        self.name, self.options, self.service = name, options, service
        self.started = time.time()
        self.restarted = bool(ray.get_runtime_context().was_current_actor_reconstructed)
        self.snapshot: dict = {}
        self.state, self.error, self.log = "starting", None, io.StringIO()
        self.stop_event = threading.Event()
        self._metrics = _Metrics(name)
        self.thread = threading.Thread(target=self._run, name=f"camera-{name}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            protector = ServiceProtector(self.service, build.load_model(self.options.model)[0])
            self.state = "running"
            with redirect_stderr(self.log):  # the camera's own messages; `status` returns their tail
                protect_stream(self.options, protector=protector, stop=self.stop_event, on_stats=self._on_stats)
            self.state = "stopped"
        except BaseException as e:  # reported by status(); the driver shows it
            self.state, self.error = "failed", f"{type(e).__name__}: {e}"

    def _on_stats(self, snap: dict) -> None:
        self.snapshot = snap
        self._metrics.update(snap)

    def status(self) -> dict:
        tail = self.log.getvalue().splitlines()[-3:]
        return {"camera": self.name, "state": self.state, "error": self.error, "started": self.started,
                "restarted": self.restarted, "stats": self.snapshot, "log": tail}

    def stop(self, timeout: float = 30.0) -> dict:
        """End the camera like Ctrl-C: its open segment is finalised with its keys."""
        self.stop_event.set()
        self.thread.join(timeout)
        return self.status()


class _Metrics:
    """Per-camera gauges in Ray's metrics (the Ray dashboard and its Prometheus endpoint, where Ray exports them:
    `pip install "ray[default]"`)."""

    def __init__(self, camera: str):
        try:
            from ray.util.metrics import Gauge

            keys = ("camera",)
            self.g = {k: Gauge(f"difp_{k}", description=d, tag_keys=keys) for k, d in (
                ("input_fps", "frames per second read from the camera"),
                ("output_fps", "frames per second written"),
                ("latency_p50_ms", "added latency, median (ms)"), ("latency_p95_ms", "added latency, 95th pct (ms)"),
                ("fallback_share", "share of face-frames covered by the fast path or the blur"),
                ("dropped", "frames dropped (behind real time)"), ("reconnects", "camera reconnects"))}
            self.tags = {"camera": camera}
        except Exception:  # metrics are optional
            self.g = {}

    def update(self, s: dict) -> None:
        vals = {**s, "fallback_share": s.get("fallback", 0) / max(1, s.get("faces", 0))}
        for k, g in self.g.items():
            if k in vals:
                g.set(float(vals[k]), tags=self.tags)

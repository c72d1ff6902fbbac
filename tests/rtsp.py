"""Helpers for RTSP tests and benchmarks: the local GStreamer relay (tests/rtsp_relay.py, run by the system Python)
and a camera simulator that publishes a generated face clip in real time (``python -m tests.rtsp URL``)."""
from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

RELAY = Path(__file__).with_name("rtsp_relay.py")
SYSTEM_PYTHON = "/usr/bin/python3"


def relay_available() -> str | None:
    """None when the relay can run here, else the reason (for pytest.skip)."""
    if not Path(SYSTEM_PYTHON).exists():
        return "no system python3"
    r = subprocess.run([SYSTEM_PYTHON, "-c", "import gi; gi.require_version('GstRtspServer', '1.0'); "
                        "from gi.repository import Gst, GstRtspServer; Gst.init(None); "
                        "assert Gst.ElementFactory.find('rtph264depay') and Gst.ElementFactory.find('h264parse')"],
                       capture_output=True)
    return None if r.returncode == 0 else ("GStreamer RTSP server not installed (apt-get install "
                                           "gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good "
                                           "gstreamer1.0-plugins-bad)")


def _stop(proc) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """The relay on 127.0.0.1:port with the given stream names; ``stop()``/``start()`` to simulate an outage."""

    def __init__(self, streams=("cam", "out"), port: int | None = None):
        self.streams, self.port, self.proc = list(streams), port or free_port(), None

    def url(self, name: str, publish: bool = False) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{'publish/' if publish else ''}{name}"

    def start(self) -> "Relay":
        self.err = tempfile.TemporaryFile("w+")  # a pipe nobody reads could fill up and stall the relay
        self.proc = subprocess.Popen([SYSTEM_PYTHON, str(RELAY), "--port", str(self.port), *self.streams],
                                     stdout=subprocess.PIPE, stderr=self.err, text=True)
        line = self.proc.stdout.readline()
        if not line.startswith("ready"):
            self.proc.kill()
            raise RuntimeError(f"relay did not start: {line} {self.log()}")
        return self

    def log(self) -> str:
        self.err.seek(0)
        return self.err.read()

    def stop(self) -> None:
        _stop(self.proc)

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()


class Publisher:
    """A camera: ``python -m tests.rtsp URL --seconds S`` in a subprocess."""

    def __init__(self, url: str, seconds: float, fps: int = 25, size=(320, 240)):
        self.args = [sys.executable, "-m", "tests.rtsp", url, "--seconds", str(seconds), "--fps", str(fps),
                     "--size", f"{size[0]}x{size[1]}"]
        self.proc = None

    def start(self) -> "Publisher":
        self.proc = subprocess.Popen(self.args, cwd=Path(__file__).parent.parent, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        return self

    def stop(self) -> None:
        _stop(self.proc)


def camera_frames(size=(320, 240)):
    """An endless moving view of the astronaut's face."""
    import cv2
    import numpy as np

    from difp_stream.video.synthetic import astronaut

    img, (w, h), i = astronaut(), size, 0
    while True:
        cx, cy = 250 + 20 * np.sin(i / 12), 170 + 10 * np.cos(i / 14)
        half = 140 / (1.0 + 0.1 * np.sin(i / 30))  # stays inside the photo
        crop = img[int(cy - half):int(cy + half), int(cx - half * w / h):int(cx + half * w / h)]
        yield np.ascontiguousarray(cv2.resize(crop, (w, h), interpolation=cv2.INTER_AREA))
        i += 1


def publish(url: str, seconds: float, fps: int = 25, size=(320, 240)) -> int:
    """Publish ``seconds`` of the camera clip to ``url`` at real-time pace (H.264, 1 s GOP, no B-frames)."""
    import av

    out = av.open(url, "w", format="rtsp", options={"rtsp_transport": "tcp"})
    s = out.add_stream("libx264", rate=fps)
    s.width, s.height, s.pix_fmt = size[0], size[1], "yuv420p"
    s.options = {"preset": "ultrafast", "tune": "zerolatency", "g": str(fps), "bf": "0"}
    t0, n = time.monotonic(), int(seconds * fps)
    for i, img in zip(range(n), camera_frames(size)):
        f = av.VideoFrame.from_ndarray(img, format="rgb24")
        f.pts, f.time_base = i, Fraction(1, fps)
        for p in s.encode(f):
            out.mux(p)
        wait = t0 + (i + 1) / fps - time.monotonic()
        if wait > 0:
            time.sleep(wait)
    for p in s.encode(None):
        out.mux(p)
    out.close()
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description="publish a generated face clip to an RTSP server in real time")
    ap.add_argument("url")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--fps", type=int, default=25)
    ap.add_argument("--size", default="320x240")
    a = ap.parse_args()
    w, h = map(int, a.size.split("x"))
    publish(a.url, a.seconds, a.fps, (w, h))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Live RTSP: a real RTSP server (GStreamer's, started here on 127.0.0.1), a real-time publisher, the filter as a
user runs it. Skipped where the GStreamer RTSP server is not installed (.ci/run installs it)."""
from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from tests.rtsp import Publisher, Relay, camera_frames, free_port, relay_available

ROOT = Path(__file__).parent.parent
pytestmark = [pytest.mark.rtsp, pytest.mark.skipif(relay_available() is not None, reason=str(relay_available()))]


class Filter:
    """``difp-stream`` in a subprocess; its stderr lines are collected as they come."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, "cli.py", *map(str, args)], cwd=ROOT, stderr=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self.live = threading.Event()
        self._t = threading.Thread(target=self._read, daemon=True)
        self._t.start()

    def _read(self):
        for line in self.proc.stderr:
            self.lines.append(line)
            if line.startswith("live:"):
                self.live.set()

    def wait(self, timeout: float) -> int:
        rc = self.proc.wait(timeout)
        self._t.join(5)
        return rc

    @property
    def log(self) -> str:
        return "".join(self.lines)


def read_frames(url: str, seconds: float, out: list) -> None:
    """A viewer: decode ``url`` for ``seconds`` (retrying until the stream is there)."""
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with av.open(url, options={"rtsp_transport": "tcp", "timeout": "2000000"}, timeout=(5, 3)) as c:
                for packet in c.demux(video=0):
                    try:  # joined mid-GOP: packets before the next keyframe's parameter sets do not decode
                        frames = packet.decode()
                    except av.error.InvalidDataError:
                        continue
                    out.extend(f.to_ndarray(format="rgb24") for f in frames)
                    if time.monotonic() > end:
                        return
        except av.error.FFmpegError:
            time.sleep(0.3)


def face_psnr(frames: list, every: int = 5) -> list[tuple[float, float]]:
    """For every ``every``-th output frame: (PSNR of the picture below the face, PSNR of the face box) against the
    camera frame it came from (found by the picture below the face, which the filter leaves alone)."""
    from difp_stream.faces.detect import Detector

    det = Detector(0.5)
    cam = np.stack([f for _, f in zip(range(600), camera_frames())]).astype(np.float32)  # 24 s of the camera
    below = cam[:, 170:, ::2]

    def psnr(mse):
        return 10 * np.log10(255.0 ** 2 / max(float(mse), 1e-6))
    out = []
    for img in frames[::every]:
        err = ((below - img[None, 170:, ::2].astype(np.float32)) ** 2).mean(axis=(1, 2, 3))
        k = int(np.argmin(err))
        faces = det.detect([cam[k].astype(np.uint8)])[0]
        x0, y0, x1, y1 = faces[0].box.astype(int)
        box = (slice(max(y0, 0), y1), slice(max(x0, 0), x1))
        out.append((psnr(err[k]), psnr(np.mean((cam[k][box] - img[box].astype(np.float32)) ** 2))))
    return out


@pytest.fixture(scope="module")
def keypair(tmp_path_factory):
    from difp_stream.keys import generate

    return generate(tmp_path_factory.mktemp("keys") / "auditor")


def test_camera_filtered_to_file_and_rtsp(tmp_path, keypair):
    secret, pub = keypair
    out = tmp_path / "cam.mp4"
    with Relay(["cam", "out"]) as relay:
        camera = Publisher(relay.url("cam", publish=True), seconds=20).start()
        try:
            f = Filter(relay.url("cam"), relay.url("out", publish=True), out, "--duration", 10, "--recipient", pub,
                       "--stats-every", 1, "--stats-json", tmp_path / "stats.jsonl", "--no-progress")
            assert f.live.wait(60), f.log
            viewed: list = []
            read_frames(relay.url("out"), 8, viewed)  # the output appears after the first frame is done
            assert f.wait(60) == 0, f.log
        finally:
            camera.stop()
    # the RTSP viewer got protected video
    assert len(viewed) >= 25, f.log
    assert viewed[0].shape == (240, 320, 3)
    # the file: playable, in real time (timestamps from arrival; frames dropped under load leave gaps), protected,
    # with a key file tagged to it
    with av.open(str(out)) as c:
        frames = [fr.to_ndarray(format="rgb24") for fr in c.decode(video=0)]
        assert 7 < c.duration / 1e6 < 11, f.log
        tag = c.metadata.get("difp_stream_id")
    stats = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    final = stats[-1]
    assert final["final"] and final["frames_out"] == len(frames) >= 50  # 10 s; frames dropped under load vary
    assert final["faces"] >= final["frames_out"] * 0.75  # the face is found (and covered) in most frames
    assert final["protected"] >= 1 and final["latency_p50_ms"] > 0
    # every face was replaced or covered, in the file and for the viewer: matched to the camera frame it came from,
    # the picture below the face is the camera's (up to two H.264 encodes) and the face box is not.
    for imgs in (frames, viewed):
        for rest, face in face_psnr(imgs):
            assert rest > 24 and face < 20, f"face box {face:.1f} dB from the camera's face (rest {rest:.1f} dB)"
    from difp_stream.keys import KeyReader, load_secret

    reader = KeyReader(Path(str(out) + ".difpkeys"), load_secret(secret))
    assert reader.header["stream_id"] == tag
    recs = list(reader.records())
    assert recs and all(0 <= r.frame_index < len(frames) for r in recs)


def test_reconnects_after_server_restart(tmp_path):
    out = tmp_path / "seg_%H%M%S.mp4"
    relay = Relay(["cam"]).start()
    camera = Publisher(relay.url("cam", publish=True), seconds=60).start()
    try:
        f = Filter(relay.url("cam"), out, "--segment-seconds", 4, "--duration", 16, "--no-keys", "--retry-delay",
                   0.3, "--stats-every", 1, "--stats-json", tmp_path / "stats.jsonl", "--no-progress")
        assert f.live.wait(60), f.log
        time.sleep(4)
        relay.stop()  # the server goes away mid-stream, and the camera with it
        camera.stop()
        time.sleep(1.5)
        relay.start()
        camera = Publisher(relay.url("cam", publish=True), seconds=60).start()
        assert f.wait(90) == 0, f.log
    finally:
        camera.stop()
        relay.stop()
    stats = [json.loads(x) for x in (tmp_path / "stats.jsonl").read_text().splitlines()]
    final = stats[-1]
    assert final["reconnects"] >= 1 and final["gap_s"] >= 1.5, final
    before = max(s["frames_out"] for s in stats if s["reconnects"] == 0)
    assert final["frames_out"] > before + 25, (before, final)  # it went on after the outage
    segments = sorted(tmp_path.glob("seg_*.mp4"))
    assert len(segments) >= 2 and not list(tmp_path.glob(".*partial*"))
    total = 0
    for s in segments:
        with av.open(str(s)) as c:
            total += sum(1 for _ in c.decode(video=0))
    assert total == final["frames_out"]


def test_unreachable_url_fails_after_retries(tmp_path):
    url = f"rtsp://127.0.0.1:{free_port()}/cam"
    t = time.monotonic()
    r = subprocess.run([sys.executable, "cli.py", url, tmp_path / "x.mp4", "--retries", "2", "--retry-delay", "0.1",
                        "--no-keys"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert r.returncode == 3, r.stderr
    assert f"cannot open {url} after 3 attempt(s)" in r.stderr
    assert time.monotonic() - t < 60
    assert not list(tmp_path.iterdir())

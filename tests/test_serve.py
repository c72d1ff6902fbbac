"""`difp-stream serve`: many cameras on a local Ray instance. Three simulated cameras (the GStreamer relay of the RTSP
tests) go through one model service into three outputs, faces protected; a camera worker killed mid-stream is
restarted by Ray and its output continues; a bad config fails before anything starts, naming the problem."""
from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import av
import numpy as np
import pytest

from difp_stream.cli import main
from tests.rtsp import Publisher, Relay, relay_available

pytestmark = pytest.mark.ray

ray = pytest.importorskip("ray")


def _config(path: Path, body: str) -> Path:
    path.write_text(body)
    return path


def _rc(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # usage errors leave like argparse's own
        return e.code


def test_bad_configs_fail_before_anything_starts_naming_the_problem(tmp_path, capsys):
    pub = tmp_path / "a.pub"
    pub.write_text("x")
    cam = f'[[camera]]\nname = "a"\ninput = "rtsp://h/s"\noutputs = ["{tmp_path}/a_%H%M%S.mp4"]\nrecipient = "{pub}"\n'
    cases = [
        ("[model]\nbatch = 0\n" + cam, "model.batch: must be between 1 and 256, got 0"),
        ("[model]\nbatchsize = 4\n" + cam, "model.batchsize: unknown key"),
        ("[model]\nwait_ms = \"fast\"\n" + cam, "model.wait_ms: expected an integer or a number"),
        ("[modle]\n" + cam, "modle: unknown section"),
        ("[model]\n", "at least one [[camera]]"),
        ('[[camera]]\nname = "a"\noutputs = ["rtsp://h/o"]\n', "camera[0].input: missing"),
        (cam + cam, "camera[1].name: 'a' must be unique"),
        (cam.replace("_%H%M%S", ""), "must be a time pattern"),
        (cam.replace(f'recipient = "{pub}"', ""), "camera[0].recipient: a camera that writes files needs"),
        (cam + "threshold = 7\n", "camera[0].threshold: 7 is out of range [0.05, 0.99]"),
        (cam + "threshold = \"high\"\n", "camera[0].threshold: expected a number, got 'high'"),
        (cam + "recovery = \"full\"\n", "camera[0].recovery: invalid choice: 'full'"),
        ("[model]\nsampling = {s_id = -1}\n" + cam, "model.sampling.s_id: -1 is out of range [0, 100]"),
        ("[model]\nsampling = {sid = 1}\n" + cam, "model.sampling.sid: unknown key"),
        (cam + "thresold = 0.5\n", "camera[0].thresold: not a camera option"),
        ("not toml [", "not valid TOML"),
        ("[model]\nreplicas = 1e9\n" + cam, "model.replicas: expected an integer"),
        ("[model]\nreplicas = 1000000000\n" + cam, "model.replicas: must be between 1 and 64"),
        ("[model]\ncpus = -1\n" + cam, "model.cpus: must be between 0 and 1024, got -1"),
        ("[model]\nthreads = -2\n" + cam, "model.threads: must be between"),
        ("[model]\nwait_ms = nan\n" + cam, "model.wait_ms: must be between 0 and 10000, got nan"),
        ("[model]\ngpus = inf\n" + cam, "model.gpus: must be between"),
        ("[serve]\nstats_seconds = -1\n" + cam, "serve.stats_seconds: must be between 0.5 and 3600"),
        (cam + "cpus = 0\n", "camera[0].cpus: must be between"),
        (cam + cam.replace('name = "a"', 'name = "b"'), "camera[1].outputs: '" + f"{tmp_path}/a_%H%M%S.mp4"
         + "' is already written by camera 'a'"),
        (cam.replace('.mp4"]', '.mp4", "rtsp://r/x", "rtsp://r/x"]'), "'rtsp://r/x' is already written by this camera"),
        (cam.replace('outputs = [', 'outputs = ["rtsp://h/s", '), "'rtsp://h/s' is the camera's own input"),
    ]
    for i, (body, why) in enumerate(cases):
        assert _rc(["serve", str(_config(tmp_path / f"c{i}.toml", body))]) == 2, body
        err = capsys.readouterr().err
        assert why in err, (why, err)
    assert not ray.is_initialized()  # nothing started
    assert main(["serve", str(_config(tmp_path / "ok.toml", cam)), "--check"]) == 0
    assert main(["serve", str(tmp_path / "ok.toml"), "--status"]) == 1  # not running: says so
    assert "no status yet" in capsys.readouterr().err


def _segments(folder: Path, cam: str) -> list[Path]:
    return sorted(p for p in folder.glob(f"{cam}_*.mp4") if not p.name.startswith("."))


def _frames(paths: list[Path]) -> list:
    out = []
    for p in paths:
        with av.open(str(p)) as c:
            out += [f.to_ndarray(format="rgb24") for f in c.decode(video=0)]
    return out


@pytest.mark.skipif(relay_available() is not None, reason=str(relay_available()))
def test_three_cameras_one_model_service_and_a_worker_restarted(tmp_path, model_dir, capsys):
    from difp_stream.keys import KeyReader, generate, load_secret
    from difp_stream.serve import load, serve

    secret, pub = generate(tmp_path / "auditor")
    out = tmp_path / "out"
    out.mkdir()
    names = ["cam0", "cam1", "cam2"]
    with Relay(names) as relay:
        # the cameras publish until the test stops them: on a loaded machine the first segments can take a minute
        cams = [Publisher(relay.url(n, publish=True), seconds=900).start() for n in names]
        body = (f'[model]\nname = "{model_dir}"\nbatch = 8\nwait_ms = 20\ncpus = 0.5\n'
                f'[serve]\nstats_seconds = 1\n[defaults]\nrecipient = "{pub}"\nsegment_seconds = 3\n'
                f'max_latency_ms = 2000\n')
        for n in names:
            body += f'[[camera]]\nname = "{n}"\ninput = "{relay.url(n)}"\noutputs = ["{out}/{n}_%H%M%S.mp4"]\ncpus = 0.5\n'
        cfg = load(_config(tmp_path / "cams.toml", body))
        # Ray's processes die with the thread that started them: up here, the driver then runs in a thread
        ray.init(namespace="difp-stream", include_dashboard=False, log_to_driver=False)
        stop, result = threading.Event(), {}

        def run():
            try:
                result.update(serve(cfg, stop=stop))
            except BaseException as e:  # the test says what went wrong
                result["error"] = repr(e)
        t = threading.Thread(target=run, daemon=True)
        try:
            t.start()
            deadline = time.monotonic() + 90
            while time.monotonic() < deadline and not all(_segments(out, n) for n in names) and t.is_alive():
                time.sleep(0.5)
            assert all(_segments(out, n) for n in names), (result, list(out.iterdir()))
            before = set(_segments(out, "cam1"))
            ray.kill(ray.get_actor("difp-camera-cam1", namespace="difp-stream"), no_restart=False)
            deadline = time.monotonic() + 180  # waits for the event (a segment begun after the kill), not seconds
            while time.monotonic() < deadline and set(_segments(out, "cam1")) <= before:
                time.sleep(0.5)
            time.sleep(4)
        finally:
            stop.set()
            t.join(150)
            for c in cams:
                c.stop()
            ray.shutdown()
    status = result["cameras"]
    assert status["cam1"]["restarts"] >= 1, status
    assert main(["serve", str(tmp_path / "cams.toml"), "--status"]) == 0  # the status file, as an operator reads it
    printed = capsys.readouterr().out
    assert all(f"{n}: " in printed for n in names) and "model replica 0" in printed
    assert re.search(r"cam1: .*restarts [1-9]", printed), printed
    after = [p for p in _segments(out, "cam1") if p not in before]
    assert after, "cam1's output did not continue after its worker was killed"
    model = result["model"][0]
    assert model["faces"] > 0 and model["largest_batch"] >= 2, model  # faces of several cameras in one batch
    from difp_stream.metrics import Faces
    from difp_stream.video.synthetic import astronaut

    fc = Faces()
    img = astronaut()
    ref = fc.descriptor(img, fc.det.detect([img])[0][0].landmarks)  # the camera shows the astronaut
    for n in names:
        frames = _frames(_segments(out, n))
        assert len(frames) >= 15, n
        seen = 0
        for f in frames[::10]:  # no output face is her (fake faces or the blur)
            for face in fc.det.detect([f])[0]:
                seen += 1
                assert np.linalg.norm(fc.descriptor(f, face.landmarks) - ref) > 0.6, n
        keys = sorted(out.glob(f"{n}_*.difpkeys"))
        assert keys and all(KeyReader(k, load_secret(secret)).header for k in keys)


def test_sigterm_stops_serve_like_ctrl_c(tmp_path, model_dir):
    """SIGTERM (systemd, docker stop, Kubernetes) ends `serve` as Ctrl-C does: a 'stopping' line, exit 0, the open
    segment finalised (playable, no partial left) with its keys complete. Waits for events, not for seconds."""
    import json
    import signal
    import subprocess
    import sys

    from difp_stream.keys import KeyReader, generate, load_secret
    from difp_stream.video.synthetic import make_clip

    secret, pub = generate(tmp_path / "auditor")
    clip = make_clip(tmp_path / "cam.mp4", frames=900, fps=10, audio=False)  # 90 s played as a camera
    out = tmp_path / "out"
    out.mkdir()
    cfg = _config(tmp_path / "one.toml", f'[model]\nname = "{model_dir}"\n[serve]\nstats_seconds = 1\n'
                                         f'[[camera]]\nname = "cam"\ninput = "{clip}"\nlive = true\n'
                                         f'outputs = ["{out}/cam_%H%M%S.mp4"]\nrecipient = "{pub}"\n')
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen([sys.executable, "cli.py", "serve", str(cfg)], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    status = tmp_path / "one.toml.status.json"
    try:
        deadline = time.monotonic() + 300  # (a loaded machine starts Ray and the model slowly)
        written = 0
        while time.monotonic() < deadline and proc.poll() is None and written < 5:
            time.sleep(0.5)
            try:
                cam = json.loads(status.read_text())["cameras"]["cam"]
                written = cam["stats"].get("frames_out", 0)
            except (OSError, ValueError, KeyError):
                pass
        assert written >= 5, (proc.poll(), status.read_text() if status.exists() else None)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=180)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-3000:]
    assert "serve: stopping the cameras" in err
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # no partial segment or key file
    segments = _segments(out, "cam")
    assert segments and len(_frames(segments)) >= 5
    for seg in segments:
        assert KeyReader(str(seg) + ".difpkeys", load_secret(secret)).complete

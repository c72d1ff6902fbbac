"""Benchmark one clip: difp-stream's latency per stage and end-to-end speed, its privacy (identity leaks, stability
of each track's fake face), deface on the same clip in the same run, and figures (``bench_report``: a frame strip
original | deface | difp-stream | recovered, latency bars). ``difp-stream bench CLIP`` and ``bench/`` use it; the
pipeline is built by ``app.build``, as for the command line."""
from __future__ import annotations

import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import fields
from pathlib import Path

import av
import numpy as np

from ..difp import load_default
from ..metrics import Faces as _Faces
from ..metrics import band_ratios
from ..metrics import faces_leaked, flicker, identity_stability  # noqa: F401  (part of this module's interface)
from . import build
from .bench_report import _backend_row, bars_png, markdown, strip_png
from ..pipeline import FaceRecoverer
from ..runtime import available
from .options import FaceOptions, ModelOptions, Options, SamplingOptions


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores"


def pct(v) -> tuple[float, float]:
    return (float(np.percentile(v, 50)), float(np.percentile(v, 95))) if len(v) else (0.0, 0.0)


def read_frames(clip: str | Path, limit: int | None = None) -> tuple[list[np.ndarray], float]:
    with av.open(str(clip)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 25)
        frames = []
        for f in c.decode(s):
            frames.append(f.to_ndarray(format="rgb24"))
            if limit and len(frames) >= limit:
                break
    return frames, fps


def run_difp(frames: list, fps: float, model, backend: str = "auto", steps: int | None = None,
             protect_every: int = 4, detect_every: int = 1, keys: bool = True, every: int = 5,
             strip_index: int | None = None, faces: _Faces | None = None,
             decode_ms: float = 0.0, render_every: int = 2,
             faces_out: list | None = None, **settings) -> tuple[dict, list, np.ndarray | None]:
    """Protect ``frames`` as the CLI does (built by ``app.build``); returns (figures, protected frames, recovered
    frame at strip_index); ``faces_out`` (optional) receives each frame's faces as (track id, box, landmarks);
    ``settings``: other face options or :class:`PipelineConfig` fields (e.g. ``min_difp``)."""
    fc = faces or _Faces()
    face_fields = {f.name for f in fields(FaceOptions)}
    opts = Options("-", ["-"], model=ModelOptions(backend=backend), sampling=SamplingOptions(steps=steps),
                   faces=FaceOptions(protect_every=protect_every, detect_every=detect_every, render_every=render_every,
                                     **{k: v for k, v in settings.items() if k in face_fields}))
    extra = {k: v for k, v in settings.items() if k not in face_fields}
    prepared = build.prepare(opts, "video", model=model, device="cpu")
    p, used = prepared.protector, prepared.backend
    warm = prepared.frame_protector(keys, **extra)  # warm-up (runtime sessions, allocations, every render size)
    warm.warmup()
    warm.process(0, frames[0])
    records: list = []
    fp = prepared.frame_protector(keys, on_key=records.append, **extra)
    per_frame, outs, tracks = [], [], []
    for i, f in enumerate(frames):
        t = time.perf_counter()
        outs.append(fp.process(i, f))
        per_frame.append((time.perf_counter() - t) * 1000)
        tracks.append(list(fp.last_faces))
    if faces_out is not None:
        faces_out.extend(tracks)
    enc_ms = _encode_ms(outs, fps)
    stages = {"decode": [decode_ms], **fp.timings.ms, "encode": [enc_ms]}
    total = decode_ms + float(np.mean(per_frame)) + enc_ms
    leaks, checked = faces_leaked(frames, outs, every, fc)
    recovered = None
    if keys and strip_index is not None:
        rec = [r for r in records if r.frame_index == strip_index]
        recovered = FaceRecoverer(p, rec).process(strip_index, outs[strip_index])
    r = {"frames": len(frames), "clip_fps": fps, "size": f"{frames[0].shape[1]}x{frames[0].shape[0]}",
         "backend": used,
         "stages_ms": {k: {"p50": pct(v)[0], "p95": pct(v)[1], "n": len(v), "total": float(np.sum(v))}
                       for k, v in stages.items()},
         "process_ms": {"p50": pct(per_frame)[0], "p95": pct(per_frame)[1], "mean": float(np.mean(per_frame))},
         "fps": 1000 / total, "realtime_factor": (1000 / total) / fps, "faces": fp.stats.faces,
         "carried": fp.stats.carried, "blurred": fp.stats.obscured, "tracks": len(fp.stats.tracks),
         "blurred_profiles": fp.stats.profiles, "blurred_small_or_cut": fp.stats.small,
         "blurred_not_faces": fp.stats.not_faces,  # (doubtful detections the face mesh found no face in)
         "blurred_share_not_profile": (fp.stats.obscured - fp.stats.profiles - fp.stats.not_faces)
         / max(1, fp.stats.faces - fp.stats.profiles - fp.stats.not_faces),
         "leaks": leaks, "faces_checked": checked,
         "identity_stability": identity_stability(outs, tracks, every, fc), "flicker": flicker(frames, outs, tracks),
         "detail": detail_ratios(frames, outs, tracks, every)}
    return r, outs, recovered


def detail_ratios(frames: list, outs: list, tracks: list, every: int) -> dict:
    """Realism in the frame: mid- and high-band FFT energy of each face box in the output over the original's
    (``metrics.band_ratios``), every ``every``-th frame, medians (blurred faces included)."""
    mids, highs = [], []
    for i in range(0, len(frames), every):
        for _tid, box, _lms in tracks[i]:
            x0, y0, x1, y1 = (int(round(v)) for v in box)
            a, b = (f[max(0, y0):max(0, y1), max(0, x0):max(0, x1)] for f in (frames[i], outs[i]))
            if min(a.shape[:2]) < 16:  # (a box mostly outside the frame)
                continue
            m, h = band_ratios(a, b)
            mids.append(m)
            highs.append(h)
    return {"faces": len(mids), "mid": float(np.median(mids)) if mids else None,
            "high": float(np.median(highs)) if highs else None}


def _encode_ms(outs: list, fps: float) -> float:
    tmp = Path(tempfile.mkdtemp()) / "o.mp4"
    try:
        with av.open(str(tmp), "w") as o:
            v = o.add_stream("libx264", rate=int(round(fps)) or 25)
            v.width, v.height = outs[0].shape[1] - outs[0].shape[1] % 2, outs[0].shape[0] - outs[0].shape[0] % 2
            v.pix_fmt, v.options = "yuv420p", {"crf": "18", "preset": "veryfast"}
            t = time.perf_counter()
            for f in outs:
                for pk in v.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f[:v.height, :v.width]),
                                                              format="rgb24")):
                    o.mux(pk)
            for pk in v.encode(None):
                o.mux(pk)
            return (time.perf_counter() - t) * 1000 / len(outs)
    finally:
        shutil.rmtree(tmp.parent, ignore_errors=True)


def deface_exe() -> str | None:
    return shutil.which("deface") or shutil.which("deface", path=str(Path(sys.executable).parent))


def run_deface(clip: str | Path, frames: list, every: int = 5, faces: _Faces | None = None) -> tuple[dict, list] | None:
    """deface (CenterFace + blur) on the same clip: whole-command fps, leaks, and how often a face is still found."""
    exe = deface_exe()
    if not exe:
        return None
    fc = faces or _Faces()
    out = Path(tempfile.mkdtemp()) / "deface.mp4"
    try:
        with av.open(str(clip)) as c:
            n = sum(1 for _ in c.demux(video=0)) - 1
        t = time.perf_counter()
        subprocess.run([exe, str(clip), "-o", str(out), "--keep-audio"], check=True, capture_output=True)
        secs = time.perf_counter() - t
        fb, _ = read_frames(out, len(frames))
    finally:
        shutil.rmtree(out.parent, ignore_errors=True)
    leaks, checked = faces_leaked(frames, fb, every, fc)
    util = float(np.mean([bool(fc.det.detect([f])[0]) for f in fb[::every]]))
    return {"fps": max(n, 1) / secs, "leaks": leaks, "faces_checked": checked,
            "frames_with_detectable_face": util}, fb


def run(clip: str | Path, out_dir: str | Path, name: str = "bench", model=None, frames: int = 100,
        deface: bool = True, backend: str = "auto", steps: int | None = None, protect_every: int = 4,
        detect_every: int = 1, keys: bool = True, every: int = 5, command: str = "", label: str | None = None,
        render_every: int = 2) -> dict:
    """Everything for one clip; writes NAME.json, NAME.md, NAME_strip.png and NAME_stages.png into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model = model or load_default()
    fc = _Faces()
    t = time.perf_counter()
    fr, fps = read_frames(clip, frames or None)
    decode_ms = (time.perf_counter() - t) * 1000 / max(1, len(fr))
    if not fr:
        raise ValueError(f"{clip}: no frames")
    # the strip shows the frame with the most faces in the middle half of the clip
    mid = range(len(fr) // 4, max(len(fr) // 4 + 1, 3 * len(fr) // 4))
    strip_i = max(mid, key=lambda i: len(fc.det.detect([fr[i]])[0]))
    r = {"clip": label or str(clip), "machine": machine(), "keys": keys,
         "settings": {"backend": backend, "steps": steps, "protect_every": protect_every, "render_every": render_every,
                      "detect_every": detect_every, "frames": len(fr)}}
    avail = {b for b, why in available().items() if why is None}
    if model.kind == "stylespace":  # its runtimes: OpenVINO (the CPU default), ONNX Runtime, torch
        import importlib.util

        avail = ({"openvino"} if importlib.util.find_spec("openvino") else set()) | (avail & {"onnxruntime", "torch"})
        first = "openvino" if "openvino" in avail else "onnxruntime"
    else:
        first = "onnxruntime"
    names = sorted(avail) if backend == "all" else [backend]
    names.sort(key=lambda b: b != first)  # the CPU default first: it makes the figures
    r["difp"], outs, recovered = run_difp(fr, fps, model, names[0], steps, protect_every, detect_every, keys, every,
                                          strip_i, fc, decode_ms, render_every)
    if len(names) > 1:  # the whole pipeline once per runtime backend, same clip, same run
        r["backends"] = {r["difp"]["backend"]: _backend_row(r["difp"])}
        for b in names[1:]:
            other, _, _ = run_difp(fr, fps, model, b, steps, protect_every, detect_every, keys, every, None, fc,
                                   decode_ms, render_every)
            r["backends"][other["backend"]] = _backend_row(other)
    cols = [("original", fr[strip_i])]
    df = run_deface(clip, fr, every, fc) if deface else None
    if df:
        r["deface"], dframes = df
        r["fps_ratio_difp_over_deface"] = r["difp"]["fps"] / r["deface"]["fps"]
        cols.append(("deface (blur)", dframes[min(strip_i, len(dframes) - 1)]))
    cols.append(("difp-stream", outs[strip_i]))
    if recovered is not None:
        cols.append(("recovered (key)", recovered))
    r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    strip_png(out / f"{name}_strip.png", cols)
    r["figures"] = [f"{name}_strip.png"]
    if bars_png(out / f"{name}_stages.png", r["difp"]["stages_ms"], f"difp-stream per stage, {r['difp']['size']}"):
        r["figures"].append(f"{name}_stages.png")
    (out / f"{name}.json").write_text(json.dumps(r, indent=2))
    (out / f"{name}.md").write_text(markdown(r, command or f"difp-stream bench {clip}"))
    return r

"""Benchmark one clip: difp-stream's latency per stage and end-to-end speed, its privacy (identity leaks, stability
of each track's fake face), deface on the same clip in the same run, and figures (a frame strip original | deface |
difp-stream | recovered, latency bars). ``difp-stream bench CLIP`` and ``bench/latency.py`` use it."""
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
from pathlib import Path

import cv2
import numpy as np

from .metrics import Faces as _Faces
from .metrics import faces_leaked, flicker, identity_stability  # noqa: F401  (part of this module's interface)


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
    import av

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
    """Protect ``frames`` as the CLI does; returns (figures, protected frames, recovered frame at strip_index);
    ``faces_out`` (optional) receives each frame's faces as (track id, box, landmarks); ``settings``: other
    :class:`PipelineConfig` fields (e.g. ``min_difp``)."""
    from .difp import Protector
    from .difp.identity import DlibIdentityEncoder
    from .pipeline import FaceProtector, FaceRecoverer, PipelineConfig
    from .runtime import select

    fc = faces or _Faces()
    be, used = select(backend, model, "cpu")
    p = Protector(model, model.cfg.sampling_config(steps=steps), device="cpu", backend=be)
    cfg = PipelineConfig(keys=keys, protect_every=protect_every, detect_every=detect_every, render_every=render_every,
                         exact=keys, pixels_quality=75, **settings)  # the command line's default keys (faithful)
    warm = FaceProtector(p, DlibIdentityEncoder(), cfg)  # warm-up (runtime sessions, allocations, every render size)
    warm.warmup()
    warm.process(0, frames[0])
    records: list = []
    fp = FaceProtector(p, DlibIdentityEncoder(), cfg, on_key=records.append)
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
         "backend": used if isinstance(used, str) else str(used),
         "stages_ms": {k: {"p50": pct(v)[0], "p95": pct(v)[1], "n": len(v), "total": float(np.sum(v))}
                       for k, v in stages.items()},
         "process_ms": {"p50": pct(per_frame)[0], "p95": pct(per_frame)[1], "mean": float(np.mean(per_frame))},
         "fps": 1000 / total, "realtime_factor": (1000 / total) / fps, "faces": fp.stats.faces,
         "carried": fp.stats.carried, "blurred": fp.stats.obscured, "tracks": len(fp.stats.tracks),
         "blurred_profiles": fp.stats.profiles, "blurred_small_or_cut": fp.stats.small,
         "blurred_share_not_profile": (fp.stats.obscured - fp.stats.profiles) / max(1, fp.stats.faces - fp.stats.profiles),
         "leaks": leaks, "faces_checked": checked,
         "identity_stability": identity_stability(outs, tracks, every, fc), "flicker": flicker(frames, outs, tracks),
         "detail": detail_ratios(frames, outs, tracks, every)}
    return r, outs, recovered


def detail_ratios(frames: list, outs: list, tracks: list, every: int) -> dict:
    """Realism in the frame: mid- and high-band FFT energy of each face box in the output over the original's
    (``metrics.band_ratios``), every ``every``-th frame, medians (blurred faces included)."""
    from .metrics import band_ratios

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
    import av

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
    import av

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


def strip_png(path: Path, columns: list[tuple[str, np.ndarray]], height: int = 300) -> None:
    """One row of labelled frames, side by side."""
    tiles = []
    for label, img in columns:
        h, w = img.shape[:2]
        tile = cv2.resize(img, (int(w * height / h), height), interpolation=cv2.INTER_AREA)
        cv2.rectangle(tile, (0, 0), (tile.shape[1], 28), (0, 0, 0), -1)
        cv2.putText(tile, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    cv2.imwrite(str(path), np.concatenate(tiles, 1)[:, :, ::-1])


def bars_png(path: Path, stages: dict, title: str) -> bool:
    """Horizontal bars of p50 per stage with the p95 as a whisker (matplotlib; False when it is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(stages)
    p50 = [stages[k]["p50"] for k in names]
    p95 = [stages[k]["p95"] for k in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, p50, xerr=[np.zeros(len(names)), np.maximum(0, np.subtract(p95, p50))], color="#4a7ab5",
            capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call (bar: p50, whisker: p95)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _backend_row(d: dict) -> dict:
    return {"fps": d["fps"], "frame_p50_ms": d["process_ms"]["p50"], "frame_p95_ms": d["process_ms"]["p95"],
            "difp_p50_ms": d["stages_ms"].get("difp", {}).get("p50"), "leaks": d["leaks"],
            "faces_checked": d["faces_checked"]}


def markdown(r: dict, command: str) -> str:
    d = r["difp"]
    st = d["identity_stability"]
    lines = [f"# Benchmark: {r['clip']} ({d['size']}, {d['frames']} frames)", "",
             f"`{command}` on {r['machine']}; backend {d['backend']}, keys {'on' if r['keys'] else 'off'}.", "",
             "| stage | p50 ms | p95 ms | calls |", "| --- | --- | --- | --- |"]
    for k, v in d["stages_ms"].items():
        lines.append(f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} | {v['n']} |")
    lines += ["", f"- per frame (detect → blend): p50 {d['process_ms']['p50']:.1f} ms, p95 {d['process_ms']['p95']:.1f} ms",
              f"- end to end: **{d['fps']:.2f} fps**, real-time factor {d['realtime_factor']:.2f} at "
              f"{d['clip_fps']:.2f} fps; peak RSS {r['peak_rss_mb']:.0f} MB",
              f"- faces covered {d['faces']} in {d['tracks']} tracks (carried {d['carried']}, blurred {d['blurred']}: "
              f"{d.get('blurred_profiles', 0)} profiles, {d.get('blurred_small_or_cut', 0)} too small or cut, the rest "
              f"failed closed; blurred share of the faces that are not profiles "
              f"**{d.get('blurred_share_not_profile', 0):.1%}**); "
              f"identity leaks **{d['leaks']} of {d['faces_checked']}** checked faces"]
    if st["same_fake_share"] is not None:
        lines.append(f"- identity stability: each track's fake face stays the same person (dlib L2 < 0.6 to its "
                     f"first) in {st['same_fake_share']:.0%} of checked frames; mean L2 to the track's mean "
                     f"{st['mean_l2_to_track_mean']:.2f} ({st['tracks_checked']} tracks)")
    dt = d.get("detail") or {}
    if dt.get("mid") is not None:
        lines.append(f"- detail in the frame (face box, output / original, median of {dt['faces']}): mid band "
                     f"**{dt['mid']:.2f}**, high band **{dt['high']:.2f}** (goals 0.6-1.5 and <= 2.0)")
    fl = d.get("flicker") or {}
    if fl.get("ratio") is not None:
        lines.append(f"- flicker: consecutive face crops differ by {fl['output_mad']:.2f} (0-255) in the output and "
                     f"{fl['original_mad']:.2f} in the original: ratio **{fl['ratio']:.2f}** ({fl['pairs']} pairs)")
    if r.get("backends"):
        lines += ["", "| backend (whole pipeline) | fps | per frame p50 / p95 ms | DIFP keyframe p50 ms | leaks |",
                  "| --- | --- | --- | --- | --- |"]
        for b, v in r["backends"].items():
            lines.append(f"| {b} | {v['fps']:.2f} | {v['frame_p50_ms']:.1f} / {v['frame_p95_ms']:.1f} | "
                         f"{v['difp_p50_ms']:.1f} | {v['leaks']} of {v['faces_checked']} |")
        lines.append("")
    if r.get("deface"):
        df = r["deface"]
        lines.append(f"- deface on the same clip, same run: {df['fps']:.2f} fps (whole command); difp-stream / "
                     f"deface = **{r['fps_ratio_difp_over_deface']:.2f}**; deface leaks {df['leaks']} of "
                     f"{df['faces_checked']}; frames where a face is still detectable after deface "
                     f"{df['frames_with_detectable_face']:.0%} (difp-stream keeps a face in place: utility)")
    else:
        lines.append("- deface: not installed (`pip install deface`), no side-by-side")
    return "\n".join(lines) + "\n"


def run(clip: str | Path, out_dir: str | Path, name: str = "bench", model=None, frames: int = 100,
        deface: bool = True, backend: str = "auto", steps: int | None = None, protect_every: int = 4,
        detect_every: int = 1, keys: bool = True, every: int = 5, command: str = "", label: str | None = None,
        render_every: int = 2) -> dict:
    """Everything for one clip; writes NAME.json, NAME.md, NAME_strip.png and NAME_stages.png into ``out_dir``."""
    from .difp import load_default

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
    from .runtime import available

    avail = {b for b, why in available().items() if why is None}
    if getattr(model.cfg, "kind", "") == "stylespace":  # its runtimes: OpenVINO (the CPU default), ONNX Runtime, torch
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


# ------------------------------------------------------------------------------------------------ recovery round trip
FACE = (16, 112)  # the face part of the 128 template


def face_box(transform: np.ndarray, res: int, shape: tuple[int, int], framing: str = "template"):
    """The face region in frame coordinates (the transform maps the frame to the model's crop): the template's
    face square, or for the FFHQ framing the box of the face mask's core (where the paste replaces the face)."""
    from .faces.align import face_mask, mask_roi, roi_of

    if framing == "ffhq":
        return mask_roi(transform, face_mask(res) > 0.5, shape, pad=0)
    s = res / 128.0
    m = transform.astype(np.float64).copy()
    m[:, 2] -= FACE[0] * s  # shift so that the face square starts at 0 ...
    return roi_of(m.astype(np.float32), int(round((FACE[1] - FACE[0]) * s)), shape, pad=0)  # ... and has that size


def template_transform(transform: np.ndarray, res: int, framing: str) -> np.ndarray:
    """A key record's transform (frame -> the model's crop) as the frame -> 128 px template transform that the
    identity encoder reads (for the FFHQ framing: through where the FFHQ crop puts the template's own points)."""
    from .faces.align import template

    m = np.vstack([transform * (128.0 / res), [0, 0, 1]]).astype(np.float64)
    if framing == "ffhq":
        from .gan.encoder import ffhq_transform

        f0 = np.vstack([ffhq_transform(template(128), 128), [0, 0, 1]])  # template crop -> FFHQ crop
        m = np.linalg.inv(f0) @ m
    return m[:2].astype(np.float32)


MODES = {  # label: protect options
    "diffusion": ["--recovery", "diffusion"],
    "diffusion, 64 px keys": ["--recovery", "diffusion", "--key-resolution", "64"],
    "diffusion, 128 px keys": ["--recovery", "diffusion", "--key-resolution", "128"],
    "diffusion, 256 px keys": ["--recovery", "diffusion", "--key-resolution", "256"],
    "diffusion, 512 px keys": ["--recovery", "diffusion", "--key-resolution", "512"],
    "faithful (default)": ["--recovery", "faithful"],
    "exact": ["--recovery", "exact"],
}


def round_trip(clip: Path, work: Path, mode: str, secret: Path, pub: Path, cli, model: str | None = None) -> dict:
    """The auditor's view: protect ``clip`` with keys sealed to ``pub`` (``MODES[mode]``), `recover` with
    ``secret`` (both through ``cli``, the command line's ``main``), and compare each key record's face region of
    the recovered video with the original decoded frame."""
    out, rec = work / "out.mp4", work / "rec.mp4"
    keys = Path(str(out) + ".difpkeys")
    from .keys import KeyReader, load_secret
    from .metrics import psnr, ssim

    with_model = ["--model", str(model)] if model else []
    assert cli([str(clip), str(out), "--recipient", str(pub), *MODES[mode], *with_model, "--seed", "1",
                "--no-progress", "--overwrite"]) == 0
    assert cli(["recover", str(out), str(rec), "--keys", str(keys), "--identity", str(secret), *with_model,
                "--no-progress", "--overwrite"]) == 0
    (orig, fps), prot, back = read_frames(clip), read_frames(out)[0], read_frames(rec)[0]
    from .difp import load_model

    cfg = load_model(model).cfg
    res, framing = cfg.resolution, getattr(cfg, "framing", "template")
    from .difp.identity import DlibIdentityEncoder
    from .faces import align

    ident = DlibIdentityEncoder()
    p_rec, s_rec, p_prot, same = [], [], [], []
    for r in KeyReader(keys, load_secret(secret)).records():
        box = face_box(r.transform, res, orig[r.frame_index].shape[:2], framing)
        if box is None:
            continue
        x0, y0, x1, y1 = box
        if min(x1 - x0, y1 - y0) < 8:
            continue
        o, b, pr = (f[r.frame_index][y0:y1, x0:x1] for f in (orig, back, prot))
        p_rec.append(psnr(o, b))
        s_rec.append(ssim(o, b))
        p_prot.append(psnr(o, pr))
        m128 = template_transform(r.transform, res, framing)
        a, b = ident(np.stack([align.crop(f[r.frame_index], m128, 128) for f in (orig, back)]))
        same.append(float(np.linalg.norm(a - b)) < 0.6)
    return {"reidentified": float(np.mean(same)) if same else 0.0,"faces": len(p_rec), "recovered_psnr_db": float(np.mean(p_rec)), "recovered_ssim": float(np.mean(s_rec)),
            "protected_psnr_db": float(np.mean(p_prot)), "frames": len(orig),
            "key_kb_per_face_second": keys.stat().st_size / 1024 / max(len(p_rec) / fps, 1e-9)}

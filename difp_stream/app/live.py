"""Protect a stream (``protect_stream(options)``): a camera or stream URL (or a file played as one, ``live``) ->
the frame pipeline -> RTSP outputs and/or a file or time-cut segments, until the source ends, ``duration`` passes,
Ctrl-C / SIGTERM or a ``stop`` event.

Within a latency budget: when the filter falls behind (a frame waited so long that a full DIFP pass would exceed
``max_latency_ms``), it drops *work*, not privacy: that frame's faces get their track's last protected crop warped to
the new position, or a strong blur for a face with no protected crop yet. Detection runs on every frame that is
processed, so a new face is always covered. When even that cannot keep up, the source's bounded queue drops the
oldest frames (counted); no frame ever leaves unprocessed. One key file per output file or segment, signed with its
packets when it closes."""
from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..errors import InputError, OutputError, redact, stop_on_sigterm
from ..keys import KeyWriter, key_path_for
from ..pipeline import FaceProtector
from ..staging import Staged, partial_path, refuse_existing
from ..video.io import STREAM_TAG, video_packets_sha256
from ..video.sinks import FileSink, RtspSink
from ..video.source import LiveSource, SourceOptions, is_rtsp
from . import build
from .files import check_key_path, recipient, signer
from .options import Options

_log = logging.getLogger(__name__)


def protect_stream(opts: Options, protector=None, stop=None, on_stats=None) -> dict:
    """Run the stream until it ends or is stopped; returns the final stats. ``protector`` (optional): what the
    pipeline calls instead of a local model (``serve``: the shared model service, with its ``model``); ``stop``: a
    ``threading.Event`` that ends the run like Ctrl-C; ``on_stats``: gets each stats snapshot."""
    rtsp_out = [o for o in opts.outputs if is_rtsp(o)]
    files = [o for o in opts.outputs if not is_rtsp(o)]
    staged, created = Staged(), []  # the key pair made for this run (removed again if no key file needs it)
    stats_file = router = None
    k = opts.keys
    try:
        _check_outputs(opts, files)
        sign_key = signer(k.sign_key) if files and not k.no_keys else None
        if protector is None:
            prepared = build.prepare(opts, "video")
        else:
            prepared = build.prepare(opts, "video", model=protector.model, protector=protector)
        keys = not k.no_keys and bool(files)
        if not k.no_keys and not files:
            print("note: RTSP output only: no recovery keys are written (add a file output to keep them)",
                  file=sys.stderr)
        if keys:
            router, created = _key_router(opts, files, prepared, staged, sign_key)
        fp, source, sinks = _connect(opts, prepared, rtsp_out, files, router)
        if opts.live.stats_json:
            stats_file = sys.stdout if opts.live.stats_json == "-" else open(opts.live.stats_json, "a")
        return _run(opts, fp, source, sinks, keys, router, stats_file, stop, on_stats)
    except BaseException:
        if router is None or not router.files:  # the secret stays while any key file needs it
            for f in created:
                Path(f).unlink(missing_ok=True)
        raise
    finally:
        staged.discard()
        if stats_file not in (None, sys.stdout):
            stats_file.close()


def _check_outputs(opts: Options, files: list[str]) -> None:
    lv, k = opts.live, opts.keys
    if len(files) > 1:
        raise OutputError("one file (or segment pattern) output at most; add rtsp:// outputs as needed")
    if lv.segment_seconds and not files:
        raise OutputError("--segment-seconds needs a file pattern output")
    if lv.live and not Path(opts.input).exists():
        raise InputError(f"input not found: {opts.input}")
    for f in files:
        fpath = Path(f)
        if not fpath.parent.exists():
            raise OutputError(f"output folder {fpath.parent} does not exist")
        if not lv.segment_seconds:
            refuse_existing(fpath, opts.overwrite)
        if k.keys and not k.no_keys:
            check_key_path(Path(k.keys), fpath, *([Path(opts.input)] if lv.live else []))


def _key_router(opts: Options, files, prepared, staged, sign_key):
    """One key file per output file or segment, each written under a partial name and put in place with it."""
    anchor = Path(files[0])
    segments = opts.live.segment_seconds
    if segments:
        anchor = anchor.parent / "difp-live"
    to = recipient(opts.keys.recipient, anchor, staged)
    created = staged.commit()  # a live run's key files are readable (--partial) while it runs
    info = {**prepared.header, "media": "video"}
    shapes = prepared.key_shapes()

    def writer_for(path: Path):
        kp = Path(opts.keys.keys) if (opts.keys.keys and not segments) else key_path_for(path)
        refuse_existing(kp, opts.overwrite)
        return KeyWriter(partial_path(kp), to, shapes, info, signer=sign_key), kp

    return KeyRouter(writer_for), created


def _connect(opts: Options, prepared, rtsp_out, files, router):
    """The frame-level protector (warmed up), the source (connected) and the sinks (opened)."""
    lv, v = opts.live, opts.video
    fp = prepared.frame_protector(router is not None)
    fp.warmup()
    so = SourceOptions(transport=lv.rtsp_transport, timeout=lv.timeout, retries=lv.retries,
                       retry_delay=lv.retry_delay, realtime=lv.live)
    source = LiveSource(opts.input, so, log=lambda m: print(f"warning: {m}", file=sys.stderr)).start()
    if threading.current_thread() is threading.main_thread():  # (a `serve` camera runs in a worker's thread)
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    while not source.connected.wait(0.2):
        if source.done.is_set():
            raise source.error or InputError(f"{redact(opts.input)}: no video frames")
    size, fps, sinks = source.size, source.fps, []
    try:
        for u in rtsp_out:
            s = RtspSink(u, fps, size, transport=lv.rtsp_transport, log=lambda m: print(m, file=sys.stderr))
            s.open()
            sinks.append(s)
        for f in files:
            sinks.append(FileSink(f, fps, size, lv.segment_seconds, crf=v.crf, preset=v.preset,
                                  overwrite=opts.overwrite, on_open=router.on_open if router else None,
                                  on_close=router.on_close if router else None))
    except BaseException:
        source.stop()
        for s in sinks:
            s.close()
        raise
    return fp, source, sinks


def _run(opts: Options, fp, source, sinks, keys: bool, router, stats_file, stop=None, on_stats=None) -> dict:
    size, fps, lv = source.size, source.fps, opts.live
    print(f"live: {redact(opts.input)} {size[0]}x{size[1]} @ {float(fps):.1f} fps -> "
          f"{', '.join(map(redact, opts.outputs))}" + ("" if keys else "; no keys (irreversible)"), file=sys.stderr)
    final = run_live(source, fp, sinks, LiveConfig(lv.max_latency_ms, lv.stats_every, lv.duration),
                     keys=router, stats_json=stats_file, log=lambda m: print(m, file=sys.stderr), stop=stop,
                     on_stats=on_stats)
    print(format_stats(final), file=sys.stderr)
    written = [str(p) for s in sinks if isinstance(s, FileSink) for p in s.files]
    if written:
        print("wrote " + ", ".join(written) + (f"; keys: {', '.join(map(str, router.files))}" if router else ""),
              file=sys.stderr)
    return final


@dataclass
class LiveConfig:
    max_latency_ms: float = 500.0  # budget from a frame's arrival to its output
    stats_every: float = 5.0  # seconds between stats lines (0: none)
    duration: float = 0.0  # stop after this many seconds (0: run until the source ends or Ctrl-C)


class LiveStats:
    """Counters for the whole run plus a sliding window for rates and latency percentiles."""

    def __init__(self, window: int = 250):
        self.t0 = time.monotonic()
        self.out_frames = 0
        self.fast_frames = 0  # frames processed in fast mode (no diffusion)
        self.latency = deque(maxlen=window)  # ms, arrival -> written
        self.out_times = deque(maxlen=window)
        self.all_latency = deque(maxlen=200_000)  # the run's figures: bounded, a camera feed never ends

    def frame(self, arrival: float, fast: bool) -> None:
        now = time.monotonic()
        ms = (now - arrival) * 1000
        self.latency.append(ms)
        self.all_latency.append(ms)
        self.out_times.append(now)
        self.out_frames += 1
        self.fast_frames += int(fast)

    @staticmethod
    def _rate(times) -> float:
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) > 1 and times[-1] > times[0] else 0.0

    def snapshot(self, source: LiveSource, fp: FaceProtector, sinks: list, in_times: deque, final: bool = False) -> dict:
        lat = np.array(self.all_latency if final else self.latency) if self.latency else np.zeros(1)
        st = fp.stats
        elapsed = time.monotonic() - self.t0
        return {
            "time": round(elapsed, 2),
            "input_fps": round(source.frames / elapsed if final else self._rate(in_times), 2),
            "output_fps": round(self.out_frames / elapsed if final else self._rate(self.out_times), 2),
            "latency_p50_ms": round(float(np.percentile(lat, 50)), 1),
            "latency_p95_ms": round(float(np.percentile(lat, 95)), 1),
            "frames_in": source.frames, "frames_out": self.out_frames, "dropped": source.dropped,
            "fast_frames": self.fast_frames, "faces": st.faces, "tracks": len(st.tracks),
            "protected": st.protected, "fallback": st.reused + st.obscured, "reused": st.reused,
            "blurred": st.obscured, "reconnects": max(0, source.connects - 1), "corrupt_packets": source.corrupt,
            "gap_s": round(sum(source.gaps), 2),
            "sink_dropped": sum(getattr(s, "dropped", 0) for s in sinks),
        }


def format_stats(s: dict) -> str:
    return (f"live {s['time']:.0f}s: in {s['input_fps']:.1f} fps, out {s['output_fps']:.1f} fps, latency p50 "
            f"{s['latency_p50_ms']:.0f} ms p95 {s['latency_p95_ms']:.0f} ms, faces {s['faces']}, tracks {s['tracks']}, "
            f"fallback {s['fallback']} (reused {s['reused']}, blurred {s['blurred']}), dropped {s['dropped']}, "
            f"reconnects {s['reconnects']}")


class KeyRouter:
    """One key file per output file (or segment): records carry the frame's number inside that file."""

    def __init__(self, make_writer):
        self.make_writer = make_writer  # path -> (KeyWriter writing a partial file, the key file's final path)
        self.writer = None
        self.final = None
        self.files: list = []

    def on_open(self, path) -> dict:
        self.writer, self.final = self.make_writer(path)
        self.files.append(self.final)
        return {STREAM_TAG: self.writer.stream_id.hex()}

    def on_close(self, path, frames: int) -> None:
        w, self.writer = self.writer, None
        if w is not None:  # the segment is complete at ``path``: its video packets are signed with its keys
            w.close(media={"packets_sha256": video_packets_sha256(path)} if frames and Path(path).exists() else None)
            if frames == 0:
                w.path.unlink(missing_ok=True)
                self.files.remove(self.final)
            else:  # the key file appears with its segment, complete and signed
                os.replace(w.path, self.final)

    def write(self, records: list, index: int) -> None:
        for r in records:
            self.writer.append(replace(r, frame_index=index))


def run_live(source: LiveSource, fp: FaceProtector, sinks: list, cfg: LiveConfig | None = None,
             keys: KeyRouter | None = None, stats_json=None, log=None, stop=None, on_stats=None) -> dict:
    """Filter ``source`` into ``sinks`` until the source ends, ``duration`` passes, Ctrl-C or ``stop`` (a
    ``threading.Event``) is set. Returns the final stats; ``on_stats`` (optional) gets every stats snapshot.
    Raises the source's error (after closing the outputs) when it gave up reconnecting."""
    cfg = cfg or LiveConfig()
    log = log or _log.info
    stats, in_times = LiveStats(), deque(maxlen=250)
    pending: list = []
    fp.on_key = pending.append if keys is not None else None
    full_ms: deque[float] = deque(maxlen=8)  # recent costs of full (diffusion) passes
    last_full, last_print, seen = time.monotonic(), time.monotonic(), 0
    file_sinks = [s for s in sinks if isinstance(s, FileSink)]
    try:
        while True:
            if cfg.duration and time.monotonic() - stats.t0 >= cfg.duration or stop is not None and stop.is_set():
                break
            lf = source.get(timeout=0.2)
            if lf is None:
                if source.done.is_set() and not source.backlog():
                    if source.error is not None and source.frames == 0:
                        raise source.error
                    break
            else:
                while seen < source.frames:  # arrivals, for the input rate
                    in_times.append(lf.arrival)
                    seen += 1
                t = time.monotonic()
                age = (t - lf.arrival) * 1000
                est = float(np.median(full_ms)) if full_ms else 0.0
                fast = age + est > cfg.max_latency_ms
                if fast and t - last_full > 0.5 and age < cfg.max_latency_ms / 2:
                    fast = False  # an old estimate must not starve new faces of their first protected crop
                out = fp.process(lf.seq, lf.image, fast=fast)
                if not fast:
                    last_full = time.monotonic()
                    full_ms.append((last_full - t) * 1000)
                for s in file_sinks:
                    s.before(lf.arrival)
                index = file_sinks[0].index if file_sinks else 0
                for s in sinks:
                    s.write(out, lf.arrival)
                if keys is not None and pending:
                    keys.write(pending, index)
                pending.clear()
                stats.frame(lf.arrival, fast)
            if cfg.stats_every and time.monotonic() - last_print >= cfg.stats_every:
                snap = stats.snapshot(source, fp, sinks, in_times)
                log(format_stats(snap))
                if on_stats is not None:
                    on_stats(snap)
                if stats_json is not None:
                    stats_json.write(json.dumps(snap) + "\n")
                    stats_json.flush()
                last_print = time.monotonic()
    except KeyboardInterrupt:
        log("stopping")
    finally:
        source.stop()
        for s in sinks:
            s.close()
    final = {**stats.snapshot(source, fp, sinks, in_times, final=True), "final": True}
    if on_stats is not None:
        on_stats(final)
    if stats_json is not None:
        stats_json.write(json.dumps(final) + "\n")
        stats_json.flush()
    if source.error is not None:  # gave up after the retries: the outputs are complete up to here
        raise source.error
    return final

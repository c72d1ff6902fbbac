"""`difp-stream URL OUTPUT...` (or a file with --live): a camera or stream filtered into RTSP outputs and/or a file
or segments, until stopped."""
from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path

from .common import (EXIT_OK, check_key_path, expected, fail, key_shapes, load_model, make_protector, pipeline_cfg,
                     recipient, sampling, signer)
from ..errors import stop_on_sigterm


def cmd_live(args, protector=None, stop=None, on_stats=None) -> int:
    """``protector`` (optional): what the pipeline calls instead of a local model (``serve``: the shared model
    service); ``stop``: a ``threading.Event`` that ends the run like Ctrl-C; ``on_stats``: gets each stats snapshot."""
    from ..files import Staged
    from ..video.source import is_rtsp

    rtsp_out = [o for o in args.output if is_rtsp(o)]
    files = [o for o in args.output if not is_rtsp(o)]
    staged, created = Staged(), []  # the key pair made for this run (removed again if no key file needs it)
    stats_file = router = None
    try:
        _check_outputs(args, files)
        sign_key = signer(args) if files and not args.no_keys else None
        model, device = load_model(args)
        protector = protector or make_protector(args, model, device, sampling(args, model))
        keys = not args.no_keys and bool(files)
        if not args.no_keys and not files:
            print("note: RTSP output only: no recovery keys are written (add a file output to keep them)",
                  file=sys.stderr)
        if keys:
            router, created = _key_router(args, files, model, protector, staged, sign_key)
        fp, source, sinks = _connect(args, protector, rtsp_out, files, router)
        if args.stats_json:
            stats_file = sys.stdout if args.stats_json == "-" else open(args.stats_json, "a")
        _run(args, fp, source, sinks, keys, router, stats_file, stop, on_stats)
        return EXIT_OK
    except expected() as e:
        if router is None or not router.files:  # the secret stays while any key file needs it
            for f in created:
                Path(f).unlink(missing_ok=True)
        return fail(e)
    finally:
        staged.discard()
        if stats_file not in (None, sys.stdout):
            stats_file.close()


def _check_outputs(args, files: list[str]) -> None:
    from ..files import refuse_existing
    from ..video import InputError, OutputError

    if len(files) > 1:
        raise OutputError("one file (or segment pattern) output at most; add rtsp:// outputs as needed")
    if args.segment_seconds and not files:
        raise OutputError("--segment-seconds needs a file pattern output")
    if args.live and not Path(args.input).exists():
        raise InputError(f"input not found: {args.input}")
    for f in files:
        fpath = Path(f)
        if not fpath.parent.exists():
            raise OutputError(f"output folder {fpath.parent} does not exist")
        if not args.segment_seconds:
            refuse_existing(fpath, args.overwrite)
        if args.keys and not args.no_keys:
            check_key_path(Path(args.keys), fpath, *([Path(args.input)] if args.live else []))


def _key_router(args, files, model, protector, staged, sign_key):
    """One key file per output file or segment, each written under a partial name and put in place with it."""
    from ..files import partial_path, refuse_existing
    from ..keys import KeyWriter, key_path_for
    from ..realtime import KeyRouter

    anchor = Path(files[0])
    if args.segment_seconds:
        anchor = anchor.parent / "difp-live"
    to = recipient(args, anchor, staged)
    created = staged.commit()  # a live run's key files are readable (--partial) while it runs
    info = {"model": model.fingerprint(), "resolution": model.cfg.resolution, "media": "video"}

    def writer_for(path: Path):
        kp = Path(args.keys) if (args.keys and not args.segment_seconds) else key_path_for(path)
        refuse_existing(kp, args.overwrite)
        w = KeyWriter(partial_path(kp), to, key_shapes(model, protector.key_resolution), info, signer=sign_key)
        return w, kp

    return KeyRouter(writer_for), created


def _connect(args, protector, rtsp_out, files, router):
    """The frame-level protector (warmed up), the source (connected) and the sinks (opened)."""
    from ..difp.identity import DlibIdentityEncoder
    from ..errors import redact
    from ..pipeline import FaceProtector
    from ..video import InputError
    from ..video.sinks import FileSink, RtspSink
    from ..video.source import LiveSource, SourceOptions

    fp = FaceProtector(protector, DlibIdentityEncoder(), pipeline_cfg(args, router is not None))
    fp.warmup()
    opts = SourceOptions(transport=args.rtsp_transport, timeout=args.timeout, retries=args.retries,
                         retry_delay=args.retry_delay, realtime=args.live)
    source = LiveSource(args.input, opts, log=lambda m: print(f"warning: {m}", file=sys.stderr)).start()
    if threading.current_thread() is threading.main_thread():  # (a `serve` camera runs in a worker's thread)
        signal.signal(signal.SIGTERM, stop_on_sigterm)
    while not source.connected.wait(0.2):
        if source.done.is_set():
            raise source.error or InputError(f"{redact(args.input)}: no video frames")
    size, fps, sinks = source.size, source.fps, []
    try:
        for u in rtsp_out:
            s = RtspSink(u, fps, size, transport=args.rtsp_transport, log=lambda m: print(m, file=sys.stderr))
            s.open()
            sinks.append(s)
        for f in files:
            sinks.append(FileSink(f, fps, size, args.segment_seconds, crf=args.crf, preset=args.preset,
                                  overwrite=args.overwrite, on_open=router.on_open if router else None,
                                  on_close=router.on_close if router else None))
    except BaseException:
        source.stop()
        for s in sinks:
            s.close()
        raise
    return fp, source, sinks


def _run(args, fp, source, sinks, keys: bool, router, stats_file, stop=None, on_stats=None) -> None:
    from ..errors import redact
    from ..realtime import LiveConfig, format_stats, run_live
    from ..video.sinks import FileSink

    size, fps = source.size, source.fps
    print(f"live: {redact(args.input)} {size[0]}x{size[1]} @ {float(fps):.1f} fps -> "
          f"{', '.join(map(redact, args.output))}" + ("" if keys else "; no keys (irreversible)"), file=sys.stderr)
    final = run_live(source, fp, sinks, LiveConfig(args.max_latency_ms, args.stats_every, args.duration),
                     keys=router, stats_json=stats_file, log=lambda m: print(m, file=sys.stderr), stop=stop,
                     on_stats=on_stats)
    print(format_stats(final), file=sys.stderr)
    written = [str(p) for s in sinks if isinstance(s, FileSink) for p in s.files]
    if written:
        print("wrote " + ", ".join(written) + (f"; keys: {', '.join(map(str, router.files))}" if router else ""),
              file=sys.stderr)

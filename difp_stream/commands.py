"""Subcommands (wiring only): protect (the default), keygen, recover, keys list."""
from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

from .errors import DifpError, UsageError

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_KEYS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
EXIT_CODES = ("Exit codes: 0 ok, 1 processing error, 2 usage, 3 bad input, 4 output refused, 5 key problem "
              "(wrong secret, altered/incomplete key file, key file of another video), 130 interrupted.")


def _err(msg: str) -> None:
    print(f"difp-stream: error: {msg}", file=sys.stderr)


def _fail(e: Exception) -> int:
    """One-line message and the documented exit code for an expected failure (each error carries its code)."""
    from .video import Interrupted

    _err(str(e))
    if isinstance(e, DifpError):
        return e.exit_code
    if isinstance(e, FileExistsError):
        return EXIT_OUTPUT
    if isinstance(e, FileNotFoundError):
        return EXIT_INPUT
    return EXIT_INTERRUPTED if isinstance(e, Interrupted) else EXIT_ERROR


def _expected():
    from .video import Interrupted

    return (DifpError, FileExistsError, FileNotFoundError, Interrupted)


def num(kind, lo: float | None = None, hi: float | None = None, open_lo: bool = False):
    """An argparse type: a number of ``kind`` in [lo, hi] (``open_lo``: lo itself excluded); else exit 2."""
    span = f"{'(' if open_lo else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"

    def conv(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole ' if kind is int else ''}number") from None
        if not math.isfinite(v) or (lo is not None and (v <= lo if open_lo else v < lo)) or (hi is not None and v > hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range {span}")
        return v
    return conv


def _model_args(p: argparse.ArgumentParser, more_backends: tuple = ()) -> None:
    p.add_argument("--model", default=None,
                   help="model: 'default' (shipped), 'fast' (shipped, distilled: 2-2.6x faster per face on a CPU) or a folder")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "torch-cuda", "onnxruntime", "tensorrt", *more_backends],
                   help="runtime for the U-Net and VAE (default: auto = on a GPU TensorRT where installed, else "
                        "torch-cuda: PyTorch fp16 with CUDA graphs; on CPU ONNX Runtime, else PyTorch)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=num(int, 1, 1024), default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _video_args(p: argparse.ArgumentParser, crf: int | None = 18, crf_help: str | None = None) -> None:
    v = p.add_argument_group("video output")
    v.add_argument("--codec", default=None, help="video encoder (default: libx264, or the container's own where it "
                                                "takes no H.264, e.g. VP9 for .webm)")
    v.add_argument("--crf", type=num(int, 0, 63), default=crf, help=f"quality, lower is better (default: {crf_help or crf})")
    v.add_argument("--preset", default="veryfast", help="x264/x265 preset (default: veryfast)")


def protect_parser() -> argparse.ArgumentParser:
    from .difp.config import SamplingConfig
    from .pipeline import PipelineConfig

    s, c = SamplingConfig(), PipelineConfig()
    p = argparse.ArgumentParser(
        prog="difp-stream",
        description="Replace every face in a video, image or folder of images with a generated face of nobody.",
        epilog="Other commands: train, distill, keygen, recover, keys, export, bench (run `difp-stream COMMAND -h`). " + EXIT_CODES)
    p.add_argument("input", help="video file, image, folder of images, or a stream URL (rtsp://, rtsps://, ...)")
    p.add_argument("output", nargs="+", help="output video / image / folder (same file names); for a live stream one "
                                             "or more of: an rtsp:// URL to publish to, a file, a segment pattern")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--seed", type=num(int, 0), default=c.seed, help="makes the fake identities reproducible (default: 0)")
    _model_args(p)
    g = p.add_argument_group("DIFP sampling (defaults: the model's recommended values, else the paper's)")
    g.add_argument("--steps", type=num(int, 1, 50), default=None, help=f"DDIM steps (paper default: {s.steps})")
    g.add_argument("--inversion-steps", type=num(int, 1, 50), default=None,
                   help="DDIM inversion steps, the keys' schedule: a divisor of --steps (default: the model's, else "
                        "--steps); fewer is faster, recovery stays exact")
    g.add_argument("--strength", type=num(float, 0, 1, open_lo=True), default=None, help=f"S_n, start at t = S_n*T (paper: {s.strength})")
    g.add_argument("--s-id", type=num(float, 0, 100), default=None, help=f"identity guidance scale (paper-style default: {s.s_id})")
    g.add_argument("--s-sty", type=num(float, 0, 100), default=None, help=f"style guidance scale (default: {s.s_sty})")
    g.add_argument("--g-rea", type=num(float, 0, 1), default=None, help=f"realism scale (paper: {s.g_rea})")
    g.add_argument("--surrogate-spread", type=num(float, 0, 5, open_lo=True), default=None,
                   help="fake identities drawn with this multiple of the training identities' spread (model's)")
    g.add_argument("--start-noise", type=num(float, 0, 1), default=None,
                   help="share of seeded noise in the fake face's start, 0-1: seeds differ more (default: the model's)")
    g.add_argument("--adaptive-realism", action="store_true", help="g_rea per step from SSIM (paper Eq. 14)")
    f = p.add_argument_group("faces")
    f.add_argument("--threshold", type=num(float, 0.05, 0.99), default=c.threshold, help=f"detector score threshold (default: {c.threshold})")
    f.add_argument("--detect-every", type=num(int, 1, 1000), default=c.detect_every, help="detect every N frames, track between (default: 1)")
    f.add_argument("--detect-size", type=num(int, 160, 8192), default=c.detect_size, help=f"longest side for detection (default: {c.detect_size})")
    f.add_argument("--max-misses", type=num(int, 0, 1000), default=c.max_misses, help=f"frames a lost face stays covered (default: {c.max_misses})")
    f.add_argument("--protect-every", type=num(int, 1, 1000), default=c.protect_every,
                   help=f"full DIFP run per face every N frames, motion carried between (default: {c.protect_every}; 1: every frame)")
    f.add_argument("--carry-cutoff", type=num(int, 1, 64), default=c.carry_cutoff,
                   help=f"latent low-pass size of the carried motion (default: {c.carry_cutoff})")
    f.add_argument("--min-difp", type=num(int, 0, 4096), default=c.min_difp,
                   help=f"faces narrower than this many pixels are blurred instead of replaced (default: {c.min_difp})")
    f.add_argument("--verify-distance", type=num(float, 0, 2), default=c.verify_distance,
                   help=f"a new face's first fake face must be this far from the original (dlib L2), else other fake "
                        f"identities are tried (default: {c.verify_distance}; 0: no check)")
    f.add_argument("--verify", choices=["every", "first"], default="every" if c.verify_every else "first",
                   help="check the fake face at every DIFP keyframe against every view of the person seen so far "
                        "(a match is blurred), or only a face's first one (faster); default: every")
    f.add_argument("--skip-below", type=num(float, 0, 255), default=c.skip_below,
                   help=f"reuse a face's last result while its aligned crop changes less than this mean level "
                        f"(0-255; default: {c.skip_below}; 0: off)")
    _video_args(p)
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep the input's descriptive metadata (title, comments, GPS location, camera make and serial, "
                        "creation time); by default only technical metadata is kept")
    lv = p.add_argument_group("live streams (input rtsp://... or any URL; or --live for a file played as a camera)")
    lv.add_argument("--live", action="store_true", help="treat a file input as a camera: read at its frame rate")
    lv.add_argument("--rtsp-transport", choices=["tcp", "udp"], default="tcp", help="RTSP transport (default: tcp)")
    lv.add_argument("--timeout", type=num(float, 0, 3600, open_lo=True), default=5.0, help="seconds without data before a source counts as lost")
    lv.add_argument("--retries", type=num(int, -1), default=10,
                    help="failed connection attempts in a row before giving up (default: 10; -1: never)")
    lv.add_argument("--retry-delay", type=num(float, 0, 60), default=0.5, help="first wait between attempts, doubled up to 8 s")
    lv.add_argument("--max-latency-ms", type=num(float, 0, 1e6, open_lo=True), default=500.0,
                    help="latency budget: a frame later than this gets the fast path (no diffusion; each face gets "
                         "its track's last protected face, or a blur) (default: 500)")
    lv.add_argument("--segment-seconds", type=num(float, 0), default=0.0,
                    help="cut the file output into segments of this length; the file name is a strftime pattern, "
                         "e.g. out_%%Y%%m%%d_%%H%%M%%S.mp4 (one key file per segment)")
    lv.add_argument("--duration", type=num(float, 0), default=0.0, help="stop after this many seconds (default: run on)")
    lv.add_argument("--stats-every", type=num(float, 0), default=5.0, help="seconds between stats lines (0: none)")
    lv.add_argument("--stats-json", default=None, help="append stats as JSON lines to this file (- for stdout)")
    k = p.add_argument_group("recovery keys")
    k.add_argument("--recipient", default=None, help="public key (from `difp-stream keygen`) the keys are sealed to")
    k.add_argument("--keys", default=None, help="key file (default: OUTPUT.difpkeys; per image for folders)")
    k.add_argument("--no-keys", action="store_true", help="irreversible: write no recovery keys")
    k.add_argument("--sign-key", default=None, help="Ed25519 key the key files are signed with (from `difp-stream "
                                                    "keygen --signer`; default: this host's, made on first use)")
    k.add_argument("--recovery", choices=["diffusion", "exact"], default="diffusion",
                   help="diffusion: the DIFP key (compact); exact: also the original face pixels, losslessly")
    k.add_argument("--key-resolution", type=num(int, 32, 1024), default=None, metavar="PX",
                   help="keys restore the face at this size (a multiple of the model's 64): the original is also "
                        "encoded at it, so large faces come back sharper (+3 to +8 dB in frame at 256) for one more "
                        f"VAE encode per face and larger keys (default: {IMAGE_KEY_RESOLUTION} for images and folders, "
                        "the model's for video and live)")
    k.add_argument("--key-refine", type=num(int, 0, 200), default=0, metavar="N",
                   help="fit each key's latent to the original face with N decoder-gradient steps: sharper diffusion "
                        "recovery (29.1 -> 30.8 dB at 12 with 64 px keys) for N more decoder passes per face")
    return p


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
    from .video.images import IMAGE_EXT

    return "image" if path.suffix.lower() in IMAGE_EXT else "video"


def _load_model(args):
    import torch

    from .difp import load_model

    if args.threads:
        torch.set_num_threads(args.threads)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return load_model(args.model, device), device


IMAGE_KEY_RESOLUTION = 256  # keys of still images restore the face at 256 px (~0.2 s per face on a CPU)


def _protector(args, model, device, sampling=None):
    from .difp import Protector
    from .difp.protector import check_sampling
    from .runtime import select

    try:  # settings the model cannot serve (e.g. another --s-id for a distilled model) are a usage error
        check_sampling(model.cfg, sampling or model.cfg.sampling_config())
    except ValueError as e:
        _err(str(e))
        raise SystemExit(EXIT_USAGE) from None
    backend, _ = select(args.backend, model, device)
    try:
        return Protector(model, sampling, device, backend=backend, key_refine=getattr(args, "key_refine", None) or 0,
                         key_resolution=getattr(args, "key_resolution", None) or 0)
    except ValueError as e:  # e.g. a key resolution that is not a multiple of the model's
        _err(str(e))
        raise SystemExit(EXIT_USAGE) from None


def _check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    from .files import check_writable
    from .video import InputError, OutputError

    if not src.exists():
        raise InputError(f"input not found: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError("output is the input; difp-stream never writes over its input")
    if dst.exists() and not overwrite and not (dst.is_dir() and not any(dst.iterdir())):
        raise OutputError(f"{dst} exists (use --overwrite to replace it)")
    if not dst.parent.exists():
        raise OutputError(f"output folder {dst.parent} does not exist")
    check_writable(dst if dst.is_dir() else dst.parent)


def _check_key_path(key_path: Path, *others: Path) -> None:
    """A key file never lands on the input or the output (with --overwrite it would replace them)."""
    from .video import OutputError

    for other in others:
        if key_path.resolve() == other.resolve() or (key_path.exists() and other.exists() and key_path.samefile(other)):
            raise OutputError(f"--keys {key_path} is also the input or the output; give the key file a name of its own")


def _shapes(model, key_resolution: int) -> dict:
    c = model.cfg
    lat = [c.latent_channels, c.latent_size, c.latent_size]
    k = c.latent_size * key_resolution // c.resolution
    return {"z_ts": lat, "correction": [c.latent_channels, k, k], "id_code": [c.id_dim],
            "style": [c.style_tokens, c.token_dim]}


def _auto_pair(dst: Path) -> tuple[Path, Path]:
    """Where the key pair made for an output without --recipient goes."""
    secret = dst.with_name(dst.name + ".difpkeys.secret")
    return secret, _pub_of(secret)


def _pub_of(secret: Path) -> Path:
    return secret.with_name(secret.name + ".pub")


def _recipient(args, dst: Path, staged):
    """The public key to seal to; without --recipient a fresh pair is made beside the output (loudly), staged with
    the run's other outputs (a failed run leaves no secret behind)."""
    from .keys import generate, load_public

    if args.recipient:
        return load_public(args.recipient)
    secret, pub = _auto_pair(dst)
    if secret.exists() or pub.exists():
        raise FileExistsError(f"{secret} exists; pass --recipient or move it away")
    tmp = staged.stage(secret)
    staged.stage(pub, _pub_of(tmp))
    _, tmp_pub = generate(tmp)
    print(f"!!! no --recipient given: a new key pair was made. The SECRET that unlocks the original faces is\n"
          f"!!!   {secret}  (mode 0600)\n"
          f"!!! Move it off this machine and keep it safe; anyone holding it and the key file can undo the protection.",
          file=sys.stderr)
    return load_public(tmp_pub)


def _signer(args):
    from .keys import host_signer, load_signer

    return load_signer(args.sign_key) if args.sign_key else host_signer()


def _pipeline_cfg(args, keys: bool):
    from .pipeline import PipelineConfig

    return PipelineConfig(seed=args.seed, detect_every=args.detect_every, threshold=args.threshold,
                          detect_size=args.detect_size, max_misses=args.max_misses, keys=keys,
                          protect_every=args.protect_every, carry_cutoff=args.carry_cutoff,
                          skip_below=args.skip_below, verify_distance=args.verify_distance, min_difp=args.min_difp,
                          exact=args.recovery == "exact", verify_every=args.verify == "every")


def _sampling(args, model):
    try:  # out-of-range values (e.g. --g-rea 2) are a usage error, not a traceback
        return model.cfg.sampling_config(steps=args.steps, strength=args.strength, s_id=args.s_id, s_sty=args.s_sty,
                                         g_rea=args.g_rea, adaptive_realism=args.adaptive_realism or None,
                                         surrogate_spread=args.surrogate_spread, inversion_steps=args.inversion_steps,
                                         start_noise=args.start_noise)
    except ValueError as e:
        _err(str(e))
        raise SystemExit(EXIT_USAGE) from None


def cmd_protect(argv: list[str]) -> int:
    p = protect_parser()
    args = p.parse_args(argv)
    from .video.live import is_url

    if is_url(args.input) or args.live:
        return cmd_live(args)
    if len(args.output) != 1:
        p.error("one output for a file input (several outputs are for live streams)")
    args.output = args.output[0]
    import signal

    from .files import Staged, check_writable, partial_path, remove_stale
    from .keys import KeyWriter, key_path_for
    from .video import InputError, Interrupted, OutputError, transcode
    from .video.images import IMAGE_EXT
    from .video.io import video_packets_sha256

    src, dst = Path(args.input), Path(args.output)
    writers: list = []
    staged = Staged()  # key files and key pairs of this run: renamed into place on success, else removed
    ok = False
    previous = signal.signal(signal.SIGTERM, _stop_on_sigterm)  # SIGTERM finishes like Ctrl-C: a playable output
    try:
        _check_paths(src, dst, args.overwrite)
        kind = _kind(src)
        keys = not args.no_keys
        if kind != "folder":  # what a killed run on this output left behind goes (key file and key pair)
            tmp_secret = partial_path(_auto_pair(dst)[0])
            remove_stale(partial_path(key_path_for(dst)), tmp_secret, _pub_of(tmp_secret))
        if kind == "video":
            from .video.io import choose_codec, open_input

            open_input(src).close()  # a clear input error before anything is written
            args.codec = choose_codec(dst, args.codec)  # a codec the container cannot hold: exit 2, up front
        if keys and args.keys and kind != "folder":
            _check_key_path(Path(args.keys), src, dst)
        files = []
        if kind == "folder":
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXT)
            if not files:
                raise InputError(f"no images in {src}")
            dst.mkdir(exist_ok=True)
            check_writable(dst)
            for f in files:
                if (dst / f.name).exists() and not args.overwrite:
                    raise OutputError(f"{dst / f.name} exists (use --overwrite to replace it)")
        signer = _signer(args) if keys else None
        from .difp.identity import DlibIdentityEncoder
        from .pipeline import FaceProtector

        model, device = _load_model(args)
        if args.key_resolution is None:
            args.key_resolution = 0 if kind == "video" else IMAGE_KEY_RESOLUTION
        protector, id_enc = _protector(args, model, device, _sampling(args, model)), DlibIdentityEncoder()
        recipient = _recipient(args, dst if kind != "folder" else dst / "images", staged) if keys else None
        info = {"model": model.fingerprint(), "resolution": model.cfg.resolution}  # no file names: they can name people

        def make(key_path: Path | None, **extra):
            cfg = _pipeline_cfg(args, keys)
            writer = None
            if keys:
                if key_path.exists() and not args.overwrite:
                    raise OutputError(f"{key_path} exists (use --overwrite to replace it)")
                writer = KeyWriter(staged.stage(key_path), recipient, _shapes(model, protector.key_resolution),
                                   {**info, **extra}, signer=signer)
                writers.append(writer)
            return FaceProtector(protector, id_enc, cfg, on_key=writer.append if writer else None), writer

        t0 = time.time()
        if kind == "video":
            key_path = Path(args.keys) if args.keys else key_path_for(dst)
            fp, writer = make(key_path if keys else None, media="video")
            meta = {"difp_stream_id": writer.stream_id.hex()} if writer else {}
            stopped = None
            try:
                n = transcode(src, dst, fp.process, codec=args.codec, crf=args.crf, preset=args.preset,
                              progress=not args.no_progress, metadata=meta, keep_metadata=args.keep_metadata)
            except Interrupted as e:  # the frames done so far are a playable output: their keys go with them
                stopped, n = e, e.frames
            if writer:  # the video's encoded packets, as written: they survive a remux that drops the tag
                writer.close(media={"packets_sha256": video_packets_sha256(dst)})
            staged.commit()
            if stopped:
                raise stopped
            st = fp.stats
            print(f"{dst}: {n} frames, {len(st.tracks)} tracks, {st.faces} face-frames covered "
                  f"({st.protected} replaced, {st.carried} of them carried, {st.skipped} reused as unchanged, "
                  f"{st.obscured} blurred), {n / max(time.time() - t0, 1e-9):.1f} fps"
                  + (f"; keys: {key_path}" if keys else "; no keys (irreversible)"), file=sys.stderr)
        else:
            pairs = [(src, dst)] if kind == "image" else [(f, dst / f.name) for f in files]
            faces, failed = 0, []
            for a, b in pairs:
                key_path = Path(args.keys) if (args.keys and kind == "image") else key_path_for(b)
                try:
                    faces += _image(make, a, b, key_path if keys else None, staged)
                except InputError as e:
                    if kind == "image":
                        raise
                    failed.append(a.name)  # one unreadable image does not stop the folder
                    print(f"warning: {e}; skipped", file=sys.stderr)
            print(f"{dst}: {len(pairs) - len(failed)} image(s), {faces} faces covered"
                  + ("" if keys else "; no keys (irreversible)"), file=sys.stderr)
            if failed:
                raise InputError(f"{len(failed)} of {len(pairs)} images could not be read ({', '.join(failed[:5])}"
                                 f"{', ...' if len(failed) > 5 else ''}); the others were protected")
        ok = True
        return EXIT_OK
    except _expected() as e:
        return _fail(e)
    finally:
        signal.signal(signal.SIGTERM, previous)
        for w in writers:
            w.abort()
        if not ok:
            staged.discard()


def _stop_on_sigterm(*_):
    raise KeyboardInterrupt


def cmd_live(args) -> int:
    """A camera or stream: filter into RTSP outputs and/or a file (or segments) until stopped."""
    import signal

    from .difp.identity import DlibIdentityEncoder
    from .errors import redact
    from .files import Staged, partial_path
    from .keys import KeyWriter, key_path_for
    from .live import KeyRouter, LiveConfig, run_live
    from .pipeline import FaceProtector
    from .video import InputError, OutputError
    from .video.live import FileSink, LiveSource, RtspSink, SourceOptions, is_rtsp

    rtsp_out = [o for o in args.output if is_rtsp(o)]
    files = [o for o in args.output if not is_rtsp(o)]
    staged, created = Staged(), []  # the key pair made for this run (removed again if no key file needs it)
    stats_file = router = None
    try:
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
            if not args.segment_seconds and fpath.exists() and not args.overwrite:
                raise OutputError(f"{fpath} exists (use --overwrite to replace it)")
            if args.keys and not args.no_keys:
                _check_key_path(Path(args.keys), fpath, *([Path(args.input)] if args.live else []))
        signer = _signer(args) if files and not args.no_keys else None
        model, device = _load_model(args)
        protector = _protector(args, model, device, _sampling(args, model))
        keys = not args.no_keys and bool(files)
        if not args.no_keys and not files:
            print("note: RTSP output only: no recovery keys are written (add a file output to keep them)",
                  file=sys.stderr)
        router = None
        if keys:
            anchor = Path(files[0])
            if args.segment_seconds:
                anchor = anchor.parent / "difp-live"
            recipient = _recipient(args, anchor, staged)
            created = staged.commit()  # a live run's key files are readable (--partial) while it runs
            info = {"model": model.fingerprint(), "resolution": model.cfg.resolution, "media": "video"}

            def writer_for(path: Path):
                kp = Path(args.keys) if (args.keys and not args.segment_seconds) else key_path_for(path)
                if kp.exists() and not args.overwrite:
                    raise OutputError(f"{kp} exists (use --overwrite to replace it)")
                w = KeyWriter(partial_path(kp), recipient, _shapes(model, protector.key_resolution), info,
                              signer=signer)
                return w, kp

            router = KeyRouter(writer_for)
        cfg = _pipeline_cfg(args, keys)
        fp = FaceProtector(protector, DlibIdentityEncoder(), cfg)
        fp.warmup()
        opts = SourceOptions(transport=args.rtsp_transport, timeout=args.timeout, retries=args.retries,
                             retry_delay=args.retry_delay, realtime=args.live)
        log = (lambda m: print(m, file=sys.stderr))
        source = LiveSource(args.input, opts, log=lambda m: print(f"warning: {m}", file=sys.stderr)).start()
        signal.signal(signal.SIGTERM, _stop_on_sigterm)
        while not source.connected.wait(0.2):
            if source.done.is_set():
                raise source.error or InputError(f"{redact(args.input)}: no video frames")
        size, fps = source.size, source.fps
        sinks = []
        try:
            for u in rtsp_out:
                s = RtspSink(u, fps, size, transport=args.rtsp_transport, log=log)
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
        if args.stats_json:
            stats_file = sys.stdout if args.stats_json == "-" else open(args.stats_json, "a")
        print(f"live: {redact(args.input)} {size[0]}x{size[1]} @ {float(fps):.1f} fps -> "
              f"{', '.join(map(redact, args.output))}"
              + ("" if keys else "; no keys (irreversible)"), file=sys.stderr)
        final = run_live(source, fp, sinks, LiveConfig(args.max_latency_ms, args.stats_every, args.duration),
                         keys=router, stats_json=stats_file, log=log)
        from .live import format_stats

        print(format_stats(final), file=sys.stderr)
        written = [str(p) for s in sinks if isinstance(s, FileSink) for p in s.files]
        if written:
            print("wrote " + ", ".join(written) + (f"; keys: {', '.join(map(str, router.files))}" if router else ""),
                  file=sys.stderr)
        return EXIT_OK
    except _expected() as e:
        if router is None or not router.files:  # the secret stays while any key file needs it
            for f in created:
                Path(f).unlink(missing_ok=True)
        return _fail(e)
    finally:
        staged.discard()
        if stats_file not in (None, sys.stdout):
            stats_file.close()


def _image(make, src: Path, dst: Path, key_path: Path | None, staged) -> int:
    """One image: protected, written whole, its key file signed with the image's hash and put in place."""
    from .keys.audit import sha256_file
    from .video.images import read_image, write_image

    img = read_image(src)
    fp, writer = make(key_path, media="image")
    out = fp.process(0, img)
    write_image(dst, out)
    if writer:
        writer.close(media={"sha256": sha256_file(dst)})  # images carry no tag: the key file names them by hash
    staged.commit()
    return fp.stats.faces


# ---------------------------------------------------------------------------------------------------- keygen
def cmd_keygen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream keygen",
                                description="Make an X25519 key pair for recovery keys (the auditor's), or with "
                                            "--signer an Ed25519 signing key for a filter host.")
    p.add_argument("secret", help="where to write the secret (mode 0600); the public key goes to SECRET.pub")
    p.add_argument("--passphrase-file", default=None, help="encrypt the secret with the passphrase in this file "
                                                          "(or set DIFP_PASSPHRASE)")
    p.add_argument("--signer", action="store_true",
                   help="make a key-file signing key instead (give it to the filter with --sign-key; readers trust "
                        "SECRET.pub with --trust)")
    args = p.parse_args(argv)
    from .keys import generate, generate_signer

    secret = Path(args.secret)
    try:
        if secret.exists() or secret.with_name(secret.name + ".pub").exists():
            raise FileExistsError(f"{secret} or its .pub exists; refusing to replace a key")
        if args.signer:
            s, pub = generate_signer(secret)
            print(f"signing key: {s} (mode 0600, for the filter host: --sign-key)\n"
                  f"public: {pub} (readers trust it: --trust)")
            return EXIT_OK
        s, pub = generate(secret, _passphrase(args))
    except _expected() as e:
        return _fail(e)
    print(f"secret: {s} (mode 0600, keep it off the filtering machine)\npublic: {pub} (give it to --recipient)")
    return EXIT_OK


def _passphrase(args) -> bytes | None:
    if getattr(args, "passphrase_file", None):
        try:
            text = Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
        except OSError as e:
            raise UsageError(f"cannot read passphrase file {args.passphrase_file}: {e.strerror or e}") from None
        if not text:
            raise UsageError(f"passphrase file {args.passphrase_file} is empty (a secret is never left unencrypted "
                             "by mistake: omit --passphrase-file for an unencrypted one)")
        return text
    env = os.environ.get("DIFP_PASSPHRASE")
    return env.encode() if env else None


# ---------------------------------------------------------------------------------------------------- recover
def _key_reading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", required=True, help="the recipient's secret key (from keygen)")
    p.add_argument("--passphrase-file", default=None, help="passphrase of the secret (or DIFP_PASSPHRASE)")
    p.add_argument("--trust", action="append", default=[], metavar="SIGNER.pub",
                   help="accept key files signed by this filter key (repeatable; this host's own signer and the "
                        "config folder's trusted/*.pub are always accepted)")
    p.add_argument("--partial", action="store_true",
                   help="accept a key file cut short (crash, live stream): read up to its last signed record")


def _open_keys(args):
    import stat

    from .keys import KeyReader, default_trusted, load_secret, load_verifier

    try:
        mode = stat.S_IMODE(os.stat(args.identity).st_mode)
    except OSError:
        mode = 0
    if mode & 0o077:
        print(f"warning: {args.identity} can be read by other users (mode {mode:04o}); `chmod 600` it",
              file=sys.stderr)
    trusted = default_trusted() + [load_verifier(t) for t in args.trust]
    return KeyReader(args.keys, load_secret(args.identity, _passphrase(args)), partial=args.partial, trusted=trusted)


def _check_media(src: Path, kind: str, reader, keys: str) -> None:
    """The key file belongs to this video (its stream-id tag, or after a remux that dropped the tag, its encoded
    video packets) or this image (its SHA-256), as the filter signed it."""
    from .keys import KeyError_, audit
    from .video import stream_tag
    from .video.io import video_packets_sha256

    if kind != "video":
        if reader.media.get("sha256") != audit.sha256_file(src):
            raise KeyError_(f"{keys} belongs to another image (the image's hash is not the one the filter signed)")
        return
    tag = stream_tag(src)
    if tag == reader.header["stream_id"]:
        return
    want = reader.media.get("packets_sha256")
    if tag is None and want and video_packets_sha256(src) == want:
        print("note: the video has no stream-id tag (remuxed?), but its video packets are the ones the key file "
              "was signed for", file=sys.stderr)
        return
    raise KeyError_(f"{keys} belongs to another video (stream id {reader.header['stream_id'][:8]}…, "
                    f"the video has {tag[:8] + '…' if tag else 'none'}, and its packets differ)")


def _model_for_keys(args, header: dict):
    """The model that made the key file: --model, or the shipped one whose fingerprint it names."""
    from .keys import KeyError_

    model, device = _load_model(args)
    fp, want = model.fingerprint(), header.get("model")
    if want and want != fp and args.model is None:  # made with another shipped model (e.g. --model fast)?
        from .difp import SHIPPED, default_model_dir, load_model

        for name in SHIPPED[1:]:
            if (default_model_dir(name) / "config.json").is_file():
                other = load_model(name, device)
                if other.fingerprint() == want:
                    model, fp = other, want
                    break
    if want and want != fp:
        raise KeyError_(f"the key file was made with model {want}, not {fp} (pass that model with --model)")
    return model, device


def cmd_recover(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream recover",
                                description="Authorized replay: restore the original faces of all or some tracks.",
                                epilog=EXIT_CODES)
    p.add_argument("protected", help="the protected video or image")
    p.add_argument("output", help="where to write the restored video or image")
    p.add_argument("--keys", required=True, help="the key file written when protecting")
    _key_reading_args(p)
    p.add_argument("--track", type=int, action="append", default=None, help="restore only this track (repeatable)")
    p.add_argument("--overwrite", action="store_true")
    _model_args(p)
    _video_args(p, crf=None, crf_help="4; 0, lossless, when the key file holds exact-mode records")
    args = p.parse_args(argv)
    from .keys import audit
    from .pipeline import FaceRecoverer
    from .video import OutputError, transcode
    from .video.images import read_image, write_image

    src, dst = Path(args.protected), Path(args.output)
    try:
        _check_paths(src, dst, args.overwrite)
        _check_key_path(Path(args.keys), dst)
        reader = _open_keys(args)
        kind = _kind(src)
        _check_media(src, kind, reader, args.keys)
        # every record decrypted once before anything is written (then again as the frames come: a long recovery
        # holds one frame's records at a time, not the whole file's pixels)
        faces = exact = 0
        for r in reader.records(args.track):
            faces, exact = faces + 1, exact + (r.exact is not None)
        model, device = _model_for_keys(args, reader.header)
        rec = FaceRecoverer(_protector(args, model, device), reader.records(args.track))
        tracks = sorted(args.track) if args.track else reader.tracks
        try:  # no disclosure without its audit line: written first, and a log that cannot be written stops it
            log = audit.append(args.keys, "recover", tracks=tracks, input=str(src),
                               input_sha256=audit.sha256_file(src), output=str(dst), faces=faces)
        except OSError as e:
            raise OutputError(f"cannot write the audit log {audit.audit_path(args.keys)}: {e.strerror or e}; "
                              "nothing was restored") from None
        if kind == "video":
            # 4:4:4 so that restored faces are not blurred again by chroma subsampling; exact records: lossless
            crf = args.crf if args.crf is not None else 0 if exact else 4
            transcode(src, dst, rec.process, codec=args.codec, crf=crf, preset=args.preset,
                      progress=not args.no_progress, desc="recovering", pix_fmt="yuv444p", keep_metadata=True)
        else:
            write_image(dst, rec.process(0, read_image(src)))
        print(f"{dst}: {rec.restored} faces of track(s) {tracks} restored; logged in {log}", file=sys.stderr)
        return EXIT_OK
    except _expected() as e:
        return _fail(e)


# ---------------------------------------------------------------------------------------------------- keys
def cmd_keys(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream keys", description="Inspect or share a key file.", epilog=EXIT_CODES)
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="tracks, frame ranges and counts")
    ex = sub.add_parser("export", help="re-seal one track's keys to another recipient (selective disclosure)")
    for q in (ls, ex):
        q.add_argument("keys", help="key file")
        _key_reading_args(q)
    ex.add_argument("--export-track", type=int, required=True, dest="track", help="the track to disclose")
    ex.add_argument("--to", required=True, help="public key of the new recipient")
    ex.add_argument("--out", required=True, help="the new key file")
    args = p.parse_args(argv)
    from .keys import audit, load_public

    try:
        reader = _open_keys(args)
        if args.action == "list":
            h = reader.header
            print(f"key file {args.keys}: format {h['format']}, stream {h['stream_id'][:16]}, created {h['created']}, "
                  f"model {h.get('model', '?')}, signed by filter key {h['signer'][:16]}, "
                  f"{'complete' if reader.complete else 'INCOMPLETE'}"
                  + (f", export of track {reader.export['exported_track']}" if reader.export else ""))
            spans: dict[int, list[int]] = {}
            exact = 0
            for r in reader.records():
                spans.setdefault(r.track_id, []).append(r.frame_index)
                exact += r.exact is not None
            print("track  faces  first  last")
            for t in reader.tracks:
                fr = spans.get(t, [])
                print(f"{t:5d}  {len(fr):5d}  {min(fr) if fr else '-':>5}  {max(fr) if fr else '-':>4}")
            if exact:
                print(f"{exact} face records carry exact-mode pixels")
        else:
            if Path(args.out).exists():
                raise FileExistsError(f"{args.out} exists")
            _check_key_path(Path(args.out), Path(args.keys))
            reader.export_track(args.track, load_public(args.to), args.out)
            audit.append(args.keys, "export", tracks=[args.track], to=args.to, out=args.out)
            print(f"track {args.track} re-sealed to {args.to}: {args.out}")
        return EXIT_OK
    except _expected() as e:
        return _fail(e)


# ---------------------------------------------------------------------------------------------------- export
def cmd_export(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream export",
                                description="Export the model to ONNX (dynamic batch, checked against PyTorch) and, "
                                            "with --tensorrt, build TensorRT engines from it.")
    p.add_argument("--model", default=None, help="'default', 'fast' or a model folder (default: the shipped default)")
    p.add_argument("--out", default=None, help="ONNX folder (default: ~/.cache/difp-stream/onnx/FINGERPRINT)")
    p.add_argument("--tensorrt", action="store_true", help="also build TensorRT engines into engines/ (GPU only)")
    args = p.parse_args(argv)
    from .difp import load_model
    from .runtime.backends import CACHE
    from .runtime.onnx_export import export

    model = load_model(args.model)
    out = Path(args.out) if args.out else CACHE / "onnx" / model.fingerprint()
    export(model, out)
    if args.tensorrt:
        from .runtime.tensorrt import TrtBackend

        TrtBackend(model.to("cuda"))
        print("TensorRT engines built under engines/")
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------- bench
def cmd_bench(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream bench",
                                description="Measure difp-stream on your clip: latency per stage, fps, identity leaks, "
                                            "fake-identity stability, and deface side by side (when installed).")
    p.add_argument("clip", help="a video file")
    p.add_argument("--out", default="difp-bench", help="folder for NAME.json, NAME.md and the PNG figures")
    p.add_argument("--name", default="bench", help="file name stem of the results (default: bench)")
    p.add_argument("--frames", type=int, default=100, help="frames to process (0: all; default: 100)")
    p.add_argument("--no-deface", action="store_true", help="skip the deface side-by-side")
    p.add_argument("--every", type=int, default=5, help="check privacy on every Nth frame (default: 5)")
    p.add_argument("--protect-every", type=int, default=4)
    p.add_argument("--steps", type=int, default=None)
    p.add_argument("--no-keys", action="store_true", help="measure without recovery keys")
    _model_args(p, ("all",))  # all: the whole pipeline once per available backend
    args = p.parse_args(argv)
    from . import benchmark
    from .video import InputError

    try:
        if not Path(args.clip).is_file():
            raise InputError(f"input not found: {args.clip}")
        from .video.io import open_input

        open_input(args.clip).close()
        model, _ = _load_model(args)
        if not args.no_deface and benchmark.deface_exe() is None:
            print("note: deface is not installed (pip install deface); no side-by-side", file=sys.stderr)
        benchmark.run(args.clip, args.out, args.name, model, args.frames, not args.no_deface, args.backend,
                      args.steps, args.protect_every, 1, not args.no_keys, args.every,
                      command="difp-stream bench " + " ".join(argv))
    except _expected() as e:
        return _fail(e)
    print(Path(args.out, f"{args.name}.md").read_text())
    return EXIT_OK

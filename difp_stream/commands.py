"""Subcommands (wiring only): protect (the default), keygen, recover, keys list."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

EXIT_OK, EXIT_ERROR, EXIT_USAGE, EXIT_INPUT, EXIT_OUTPUT, EXIT_KEYS, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 5, 130
IMAGE_EXT = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
EXIT_CODES = ("Exit codes: 0 ok, 1 processing error, 2 usage, 3 bad input, 4 output refused, 5 key problem "
              "(wrong secret, altered/incomplete key file, key file of another video), 130 interrupted.")


def _err(msg: str) -> None:
    print(f"difp-stream: error: {msg}", file=sys.stderr)


def _fail(e: Exception) -> int:
    """One-line message and the documented exit code for an expected failure."""
    from .keys import KeyError_
    from .video import InputError, Interrupted, OutputError

    _err(str(e))
    for kind, code in ((InputError, EXIT_INPUT), (OutputError, EXIT_OUTPUT), (FileExistsError, EXIT_OUTPUT),
                       (KeyError_, EXIT_KEYS), (Interrupted, EXIT_INTERRUPTED)):
        if isinstance(e, kind):
            return code
    return EXIT_ERROR


def _expected():
    from .keys import KeyError_
    from .video import InputError, Interrupted, OutputError

    return (InputError, OutputError, FileExistsError, FileNotFoundError, KeyError_, Interrupted)


def _model_args(p: argparse.ArgumentParser, more_backends: tuple = ()) -> None:
    p.add_argument("--model", default=None,
                   help="model: 'default' (shipped), 'fast' (shipped, distilled: 2-2.6x faster per face on a CPU) or a folder")
    p.add_argument("--backend", default="auto", choices=["auto", "torch", "torch-cuda", "onnxruntime", "tensorrt", *more_backends],
                   help="runtime for the U-Net and VAE (default: auto = on a GPU TensorRT where installed, else "
                        "torch-cuda: PyTorch fp16 with CUDA graphs; on CPU ONNX Runtime, else PyTorch)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _video_args(p: argparse.ArgumentParser, crf: int | None = 18, crf_help: str | None = None) -> None:
    v = p.add_argument_group("video output")
    v.add_argument("--codec", default="libx264", help="video encoder (default: libx264)")
    v.add_argument("--crf", type=int, default=crf, help=f"quality for x264/x265 (default: {crf_help or crf})")
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
    p.add_argument("--seed", type=int, default=c.seed, help="makes the fake identities reproducible (default: 0)")
    _model_args(p)
    g = p.add_argument_group("DIFP sampling (defaults: the model's recommended values, else the paper's)")
    g.add_argument("--steps", type=int, default=None, help=f"DDIM steps (paper default: {s.steps})")
    g.add_argument("--inversion-steps", type=int, default=None,
                   help="DDIM inversion steps, the keys' schedule: a divisor of --steps (default: the model's, else "
                        "--steps); fewer is faster, recovery stays exact")
    g.add_argument("--strength", type=float, default=None, help=f"S_n, start at t = S_n*T (paper: {s.strength})")
    g.add_argument("--s-id", type=float, default=None, help=f"identity guidance scale (paper-style default: {s.s_id})")
    g.add_argument("--s-sty", type=float, default=None, help=f"style guidance scale (default: {s.s_sty})")
    g.add_argument("--g-rea", type=float, default=None, help=f"realism scale (paper: {s.g_rea})")
    g.add_argument("--surrogate-spread", type=float, default=None,
                   help="fake identities drawn with this multiple of the training identities' spread (model's)")
    g.add_argument("--start-noise", type=float, default=None,
                   help="share of seeded noise in the fake face's start, 0-1: seeds differ more (default: the model's)")
    g.add_argument("--adaptive-realism", action="store_true", help="g_rea per step from SSIM (paper Eq. 14)")
    f = p.add_argument_group("faces")
    f.add_argument("--threshold", type=float, default=c.threshold, help=f"detector score threshold (default: {c.threshold})")
    f.add_argument("--detect-every", type=int, default=c.detect_every, help="detect every N frames, track between (default: 1)")
    f.add_argument("--detect-size", type=int, default=c.detect_size, help=f"longest side for detection (default: {c.detect_size})")
    f.add_argument("--max-misses", type=int, default=c.max_misses, help=f"frames a lost face stays covered (default: {c.max_misses})")
    f.add_argument("--protect-every", type=int, default=c.protect_every,
                   help=f"full DIFP run per face every N frames, motion carried between (default: {c.protect_every}; 1: every frame)")
    f.add_argument("--carry-cutoff", type=int, default=c.carry_cutoff,
                   help=f"latent low-pass size of the carried motion (default: {c.carry_cutoff})")
    f.add_argument("--min-difp", type=int, default=c.min_difp,
                   help=f"faces narrower than this many pixels are blurred instead of replaced (default: {c.min_difp})")
    f.add_argument("--verify-distance", type=float, default=c.verify_distance,
                   help=f"a new face's first fake face must be this far from the original (dlib L2), else other fake "
                        f"identities are tried (default: {c.verify_distance}; 0: no check)")
    f.add_argument("--verify", choices=["every", "first"], default="every" if c.verify_every else "first",
                   help="check the fake face at every DIFP keyframe against every view of the person seen so far "
                        "(a match is blurred), or only a face's first one (faster); default: every")
    f.add_argument("--skip-below", type=float, default=c.skip_below,
                   help=f"reuse a face's last result while its aligned crop changes less than this mean level "
                        f"(0-255; default: {c.skip_below}; 0: off)")
    _video_args(p)
    lv = p.add_argument_group("live streams (input rtsp://... or any URL; or --live for a file played as a camera)")
    lv.add_argument("--live", action="store_true", help="treat a file input as a camera: read at its frame rate")
    lv.add_argument("--rtsp-transport", choices=["tcp", "udp"], default="tcp", help="RTSP transport (default: tcp)")
    lv.add_argument("--timeout", type=float, default=5.0, help="seconds without data before a source counts as lost")
    lv.add_argument("--retries", type=int, default=10,
                    help="failed connection attempts in a row before giving up (default: 10; -1: never)")
    lv.add_argument("--retry-delay", type=float, default=0.5, help="first wait between attempts, doubled up to 8 s")
    lv.add_argument("--max-latency-ms", type=float, default=500.0,
                    help="latency budget: a frame later than this gets the fast path (no diffusion; each face gets "
                         "its track's last protected face, or a blur) (default: 500)")
    lv.add_argument("--segment-seconds", type=float, default=0.0,
                    help="cut the file output into segments of this length; the file name is a strftime pattern, "
                         "e.g. out_%%Y%%m%%d_%%H%%M%%S.mp4 (one key file per segment)")
    lv.add_argument("--duration", type=float, default=0.0, help="stop after this many seconds (default: run on)")
    lv.add_argument("--stats-every", type=float, default=5.0, help="seconds between stats lines (0: none)")
    lv.add_argument("--stats-json", default=None, help="append stats as JSON lines to this file (- for stdout)")
    k = p.add_argument_group("recovery keys")
    k.add_argument("--recipient", default=None, help="public key (from `difp-stream keygen`) the keys are sealed to")
    k.add_argument("--keys", default=None, help="key file (default: OUTPUT.difpkeys; per image for folders)")
    k.add_argument("--no-keys", action="store_true", help="irreversible: write no recovery keys")
    k.add_argument("--recovery", choices=["diffusion", "exact"], default="diffusion",
                   help="diffusion: the DIFP key (compact); exact: also the original face pixels, losslessly")
    k.add_argument("--key-resolution", type=int, default=None, metavar="PX",
                   help="keys restore the face at this size (a multiple of the model's 64): the original is also "
                        "encoded at it, so large faces come back sharper (+3 to +8 dB in frame at 256) for one more "
                        f"VAE encode per face and larger keys (default: {IMAGE_KEY_RESOLUTION} for images and folders, "
                        "the model's for video and live)")
    k.add_argument("--key-refine", type=int, default=0, metavar="N",
                   help="fit each key's latent to the original face with N decoder-gradient steps: sharper diffusion "
                        "recovery (29.1 -> 30.8 dB at 12 with 64 px keys) for N more decoder passes per face")
    return p


def _kind(path: Path) -> str:
    if path.is_dir():
        return "folder"
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
    from .video import InputError, OutputError

    if not src.exists():
        raise InputError(f"input not found: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError("output is the input; difp-stream never writes over its input")
    if dst.exists() and not overwrite and not (dst.is_dir() and not any(dst.iterdir())):
        raise OutputError(f"{dst} exists (use --overwrite to replace it)")
    if not dst.parent.exists():
        raise OutputError(f"output folder {dst.parent} does not exist")


def _shapes(model, key_resolution: int) -> dict:
    c = model.cfg
    lat = [c.latent_channels, c.latent_size, c.latent_size]
    k = c.latent_size * key_resolution // c.resolution
    return {"z_ts": lat, "correction": [c.latent_channels, k, k], "id_code": [c.id_dim],
            "style": [c.style_tokens, c.token_dim]}


def _recipient(args, dst: Path, created: list):
    """The public key to seal to; without --recipient a fresh pair is made beside the output (loudly)."""
    from .keys import generate, load_public

    if args.recipient:
        return load_public(args.recipient)
    secret = dst.with_name(dst.name + ".difpkeys.secret")
    if secret.exists():
        raise FileExistsError(f"{secret} exists; pass --recipient or move it away")
    secret, pub = generate(secret)
    created += [secret, pub]
    print(f"!!! no --recipient given: a new key pair was made. The SECRET that unlocks the original faces is\n"
          f"!!!   {secret}  (mode 0600)\n"
          f"!!! Move it off this machine and keep it safe; anyone holding it and the key file can undo the protection.",
          file=sys.stderr)
    return load_public(pub)


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
    from .keys import KeyWriter
    from .video import InputError, Interrupted, OutputError, transcode

    src, dst = Path(args.input), Path(args.output)
    writers: list = []
    created: list[Path] = []  # key files and key pairs of this run: removed again if the run fails
    ok = False
    try:
        _check_paths(src, dst, args.overwrite)
        kind = _kind(src)
        if kind == "video":
            from .video.io import open_input

            open_input(src).close()  # a clear input error before anything is written
        files = []
        if kind == "folder":
            files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXT)
            if not files:
                raise InputError(f"no images in {src}")
            dst.mkdir(exist_ok=True)
            for f in files:
                if (dst / f.name).exists() and not args.overwrite:
                    raise OutputError(f"{dst / f.name} exists (use --overwrite to replace it)")
        from .difp.identity import DlibIdentityEncoder
        from .pipeline import FaceProtector

        model, device = _load_model(args)
        if args.key_resolution is None:
            args.key_resolution = 0 if kind == "video" else IMAGE_KEY_RESOLUTION
        protector, id_enc = _protector(args, model, device, _sampling(args, model)), DlibIdentityEncoder()
        keys = not args.no_keys
        recipient = _recipient(args, dst if kind != "folder" else dst / "images", created) if keys else None
        info = {"model": model.fingerprint(), "resolution": model.cfg.resolution, "input": src.name}

        def make(key_path: Path | None, **extra):
            cfg = _pipeline_cfg(args, keys)
            writer = None
            if keys:
                if key_path.exists() and not args.overwrite:
                    raise OutputError(f"{key_path} exists (use --overwrite to replace it)")
                writer = KeyWriter(key_path, recipient, _shapes(model, protector.key_resolution), {**info, **extra})
                writers.append(writer)
                created.append(key_path)
            return FaceProtector(protector, id_enc, cfg, on_key=writer.append if writer else None), writer

        t0 = time.time()
        if kind == "video":
            key_path = Path(args.keys) if args.keys else dst.with_name(dst.name + ".difpkeys")
            fp, writer = make(key_path if keys else None, media="video")
            meta = {"difp_stream_id": writer.stream_id.hex()} if writer else {}
            try:
                n = transcode(src, dst, fp.process, codec=args.codec, crf=args.crf, preset=args.preset,
                              progress=not args.no_progress, metadata=meta)
            finally:
                if writer:
                    writer.close()
            st = fp.stats
            print(f"{dst}: {n} frames, {len(st.tracks)} tracks, {st.faces} face-frames covered "
                  f"({st.protected} replaced, {st.carried} of them carried, {st.skipped} reused as unchanged, "
                  f"{st.obscured} blurred), {n / max(time.time() - t0, 1e-9):.1f} fps"
                  + (f"; keys: {key_path}" if keys else "; no keys (irreversible)"), file=sys.stderr)
        else:
            pairs = [(src, dst)] if kind == "image" else [(f, dst / f.name) for f in files]
            faces = 0
            for a, b in pairs:
                key_path = Path(args.keys) if (args.keys and kind == "image") else b.with_name(b.name + ".difpkeys")
                faces += _image(make, a, b, key_path if keys else None)
            print(f"{dst}: {len(pairs)} image(s), {faces} faces covered"
                  + ("" if keys else "; no keys (irreversible)"), file=sys.stderr)
        ok = True
        return EXIT_OK
    except _expected() as e:
        ok = isinstance(e, Interrupted)  # on Ctrl-C the frames written so far and their keys are kept
        return _fail(e)
    finally:
        for w in writers:
            w.close()
        if not ok:
            for f in created:
                Path(f).unlink(missing_ok=True)


def _stop_on_sigterm(*_):
    raise KeyboardInterrupt


def cmd_live(args) -> int:
    """A camera or stream: filter into RTSP outputs and/or a file (or segments) until stopped."""
    import signal

    from .difp.identity import DlibIdentityEncoder
    from .keys import KeyWriter
    from .live import KeyRouter, LiveConfig, run_live
    from .pipeline import FaceProtector
    from .video import InputError, OutputError
    from .video.live import FileSink, LiveSource, RtspSink, SourceOptions, is_rtsp

    rtsp_out = [o for o in args.output if is_rtsp(o)]
    files = [o for o in args.output if not is_rtsp(o)]
    created: list[Path] = []
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
            recipient = _recipient(args, anchor, created)
            info = {"model": model.fingerprint(), "resolution": model.cfg.resolution, "input": args.input,
                    "media": "video"}

            def writer_for(path: Path):
                kp = Path(args.keys) if (args.keys and not args.segment_seconds) else path.with_name(
                    path.name + ".difpkeys")
                if kp.exists() and not args.overwrite:
                    raise OutputError(f"{kp} exists (use --overwrite to replace it)")
                return KeyWriter(kp, recipient, _shapes(model, protector.key_resolution), info)

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
                raise source.error or InputError(f"{args.input}: no video frames")
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
        print(f"live: {args.input} {size[0]}x{size[1]} @ {float(fps):.1f} fps -> {', '.join(args.output)}"
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
        if stats_file not in (None, sys.stdout):
            stats_file.close()


def _read_image(path: Path):
    import cv2

    from .video import InputError

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise InputError(f"cannot read image {path}")
    return img[:, :, ::-1].copy()


def _write_image(path: Path, rgb) -> None:
    import cv2

    from .video import OutputError

    tmp = path.with_name(f".{path.stem}.partial{path.suffix}")
    try:
        if not cv2.imwrite(str(tmp), rgb[:, :, ::-1]):
            raise OutputError(f"cannot write image {path} (unknown extension?)")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _image(make, src: Path, dst: Path, key_path: Path | None) -> int:
    img = _read_image(src)
    fp, writer = make(key_path, media="image")
    out = fp.process(0, img)
    _write_image(dst, out)
    if writer:
        writer.close()
        from .keys.audit import sha256_file

        # images carry no tag: the key file names the protected image by its hash
        Path(str(key_path) + ".sha256").write_text(sha256_file(dst) + "\n")
    return fp.stats.faces


# ---------------------------------------------------------------------------------------------------- keygen
def cmd_keygen(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream keygen", description="Make an X25519 key pair for recovery keys.")
    p.add_argument("secret", help="where to write the secret (mode 0600); the public key goes to SECRET.pub")
    p.add_argument("--passphrase-file", default=None, help="encrypt the secret with the passphrase in this file "
                                                          "(or set DIFP_PASSPHRASE)")
    args = p.parse_args(argv)
    from .keys import generate

    secret = Path(args.secret)
    if secret.exists() or secret.with_name(secret.name + ".pub").exists():
        _err(f"{secret} or its .pub exists; refusing to replace a key")
        return EXIT_OUTPUT
    s, pub = generate(secret, _passphrase(args))
    print(f"secret: {s} (mode 0600, keep it off the filtering machine)\npublic: {pub} (give it to --recipient)")
    return EXIT_OK


def _passphrase(args) -> bytes | None:
    if getattr(args, "passphrase_file", None):
        return Path(args.passphrase_file).read_bytes().rstrip(b"\r\n")
    env = os.environ.get("DIFP_PASSPHRASE")
    return env.encode() if env else None


# ---------------------------------------------------------------------------------------------------- recover
def _open_keys(args):
    from .keys import KeyReader, load_secret

    return KeyReader(args.keys, load_secret(args.identity, _passphrase(args)), partial=args.partial)


def cmd_recover(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream recover",
                                description="Authorized replay: restore the original faces of all or some tracks.",
                                epilog=EXIT_CODES)
    p.add_argument("protected", help="the protected video or image")
    p.add_argument("output", help="where to write the restored video or image")
    p.add_argument("--keys", required=True, help="the key file written when protecting")
    p.add_argument("--identity", required=True, help="the recipient's secret key (from keygen)")
    p.add_argument("--passphrase-file", default=None, help="passphrase of the secret (or DIFP_PASSPHRASE)")
    p.add_argument("--track", type=int, action="append", default=None, help="restore only this track (repeatable)")
    p.add_argument("--partial", action="store_true", help="accept a key file cut short (crash, live stream)")
    p.add_argument("--overwrite", action="store_true")
    _model_args(p)
    _video_args(p, crf=None, crf_help="4; 0, lossless, when the key file holds exact-mode records")
    args = p.parse_args(argv)
    from .keys import KeyError_, audit
    from .video import stream_tag, transcode

    src, dst = Path(args.protected), Path(args.output)
    try:
        _check_paths(src, dst, args.overwrite)
        reader = _open_keys(args)
        kind = _kind(src)
        if kind == "video":
            tag = stream_tag(src)
            if tag != reader.header["stream_id"]:
                raise KeyError_(f"{args.keys} belongs to another video (stream id {reader.header['stream_id'][:8]}…, "
                                f"the video has {tag[:8] + '…' if tag else 'none'})")
        else:
            side = Path(str(args.keys) + ".sha256")
            digest = audit.sha256_file(src)
            if side.exists() and side.read_text().strip() != digest:
                raise KeyError_(f"{args.keys} belongs to another image (its hash differs)")
        records = list(reader.records(args.track))
        from .pipeline import FaceRecoverer

        model, device = _load_model(args)
        fp, want = model.fingerprint(), reader.header.get("model")
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
        rec = FaceRecoverer(_protector(args, model, device), records)
        if kind == "video":
            # 4:4:4 so that restored faces are not blurred again by chroma subsampling; exact records: lossless
            crf = args.crf if args.crf is not None else 0 if any(r.exact is not None for r in records) else 4
            transcode(src, dst, rec.process, codec=args.codec, crf=crf, preset=args.preset,
                      progress=not args.no_progress, desc="recovering", pix_fmt="yuv444p")
        else:
            _write_image(dst, rec.process(0, _read_image(src)))
        tracks = sorted(args.track) if args.track else reader.tracks
        log = audit.append(args.keys, "recover", tracks=tracks, input=str(src), input_sha256=audit.sha256_file(src),
                           output=str(dst), faces=rec.restored)
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
        q.add_argument("--identity", required=True, help="the recipient's secret key")
        q.add_argument("--passphrase-file", default=None)
        q.add_argument("--partial", action="store_true", help="accept a key file cut short")
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
                  f"model {h.get('model', '?')}, {'complete' if reader.complete else 'INCOMPLETE'}")
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

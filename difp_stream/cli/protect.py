"""`difp-stream INPUT OUTPUT`: protect a video, an image or a folder of images (a stream URL goes to live)."""
from __future__ import annotations

import argparse
import signal
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import stop_on_sigterm
from .common import (EXIT_CODES, EXIT_OK, IMAGE_KEY_RESOLUTION, auto_pair, check_key_path, check_paths, expected, fail, kind_of,
                     key_shapes, load_model, make_protector, model_args, num, pipeline_cfg, pub_of, recipient,
                     sampling, signer, video_args)


def protect_parser() -> argparse.ArgumentParser:
    from ..difp.config import SamplingConfig
    from ..pipeline import PipelineConfig

    s, c = SamplingConfig(), PipelineConfig()
    p = argparse.ArgumentParser(
        prog="difp-stream",
        description="Replace every face in a video, image or folder of images with a generated face of nobody.",
        epilog="Other commands: train, distill, encoder, keygen, recover, keys, export, bench (run `difp-stream COMMAND -h`). " + EXIT_CODES)
    p.add_argument("input", help="video file, image, folder of images, or a stream URL (rtsp://, rtsps://, ...)")
    p.add_argument("output", nargs="+", help="output video / image / folder (same file names); for a live stream one "
                                             "or more of: an rtsp:// URL to publish to, a file, a segment pattern")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output")
    p.add_argument("--seed", type=num(int, 0), default=c.seed, help="makes the fake identities reproducible (default: 0)")
    model_args(p)
    _sampling_args(p, s)
    _face_args(p, c)
    video_args(p)
    p.add_argument("--keep-metadata", action="store_true",
                   help="keep the input's descriptive metadata (title, comments, GPS location, camera make and serial, "
                        "creation time); by default only technical metadata is kept")
    p.add_argument("--keep-subtitles", action="store_true",
                   help="copy the input's subtitle tracks (by default dropped: drones and dashcams write GPS, "
                        "speed and serials as subtitles)")
    _live_args(p)
    _key_args(p)
    return p


def _sampling_args(p: argparse.ArgumentParser, s) -> None:
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


def _face_args(p: argparse.ArgumentParser, c) -> None:
    f = p.add_argument_group("faces")
    f.add_argument("--threshold", type=num(float, 0.05, 0.99), default=c.threshold, help=f"detector score threshold (default: {c.threshold})")
    f.add_argument("--detect-every", type=num(int, 1, 1000), default=c.detect_every, help="detect every N frames, track between (default: 1)")
    f.add_argument("--detect-size", type=num(int, 160, 8192), default=c.detect_size, help=f"longest side for detection (default: {c.detect_size})")
    f.add_argument("--max-misses", type=num(int, 0, 1000), default=c.max_misses, help=f"frames a lost face stays covered (default: {c.max_misses})")
    f.add_argument("--protect-every", type=num(int, 1, 1000), default=c.protect_every,
                   help=f"full DIFP run per face every N frames, motion carried between (default: {c.protect_every}; 1: every frame)")
    f.add_argument("--carry-cutoff", type=num(int, 1, 64), default=c.carry_cutoff,
                   help=f"latent low-pass size of the carried motion (default: {c.carry_cutoff})")
    f.add_argument("--render-every", type=num(int, 1, 100), default=c.render_every, metavar="N",
                   help="photoreal model: at most one new render per face every N frames (the span grows by N with "
                        "every 6 renders of the face's expression atlas); between, the nearest "
                        f"render of the face's expression atlas (or the last face) is warped into place "
                        f"(default: {c.render_every})")
    f.add_argument("--expression", choices=["on", "off"], default="on" if c.expression else "off",
                   help="photoreal model: the fake face takes the person's expression each frame (mouth, smile, "
                        "eyes, brows: face mesh + the model's expression directions); off: pose only (default: on)")
    f.add_argument("--attributes", choices=["keep", "random"], default=c.attributes,
                   help="photoreal model: the fake face keeps the person's apparent gender and age band (keep), or "
                        f"is whoever the draw gives (random: more change); default: {c.attributes}")
    f.add_argument("--expression-tolerance", type=num(float, 0.05, 5), default=c.expression_tolerance, metavar="SD",
                   help="a new render when no render of the face's atlas is this near the person's expression and "
                        f"pose, in standard deviations (smaller: closer, slower; default: {c.expression_tolerance})")
    f.add_argument("--check-every", type=num(int, 1, 1000), default=c.check_every, metavar="N",
                   help="photoreal model (one DIFP run per track, then carried): check the carried fake face against "
                        f"the person every N frames (default: {c.check_every})")
    f.add_argument("--max-render", type=int, choices=[128, 256, 512, 1024], default=c.max_render,
                   help="photoreal model: faces are rendered at their size in the frame, up to this many pixels "
                        f"(default: {c.max_render})")
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


def _live_args(p: argparse.ArgumentParser) -> None:
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


def _key_args(p: argparse.ArgumentParser) -> None:
    k = p.add_argument_group("recovery keys")
    k.add_argument("--recipient", default=None, help="public key (from `difp-stream keygen`) the keys are sealed to")
    k.add_argument("--keys", default=None, help="key file (default: OUTPUT.difpkeys; per image for folders)")
    k.add_argument("--no-keys", action="store_true", help="irreversible: write no recovery keys")
    k.add_argument("--sign-key", default=None, help="Ed25519 key the key files are signed with (from `difp-stream "
                                                    "keygen --signer`; default: this host's, made on first use)")
    k.add_argument("--recovery", choices=["faithful", "diffusion", "exact"], default="faithful",
                   help="faithful (default): the DIFP key plus the original face region as a JPEG (>= 35 dB in the "
                        "frame); diffusion: the DIFP key alone (compact; restores the model's reconstruction); exact: "
                        "the DIFP key plus the original face pixels, losslessly")
    k.add_argument("--faithful-quality", type=num(int, 50, 100), default=75, metavar="Q",
                   help="JPEG quality (4:4:4) of faithful recovery's face pixels (default: 75; 38-44 dB in the face "
                        "region on the shared clips, 90: 42-46 dB and 1.7x the size)")
    k.add_argument("--key-resolution", type=num(int, 32, 1024), default=None, metavar="PX",
                   help="keys restore the face at this size (a multiple of the model's 64): the original is also "
                        "encoded at it, so large faces come back sharper (+3 to +8 dB in frame at 256) for one more "
                        f"VAE encode per face and larger keys (default: {IMAGE_KEY_RESOLUTION} for images and folders, "
                        "the model's for video and live)")
    k.add_argument("--key-refine", type=num(int, 0, 200), default=0, metavar="N",
                   help="fit each key's latent to the original face with N decoder-gradient steps: sharper diffusion "
                        "recovery (29.1 -> 30.8 dB at 12 with 64 px keys) for N more decoder passes per face")


def cmd_protect(argv: list[str]) -> int:
    p = protect_parser()
    args = p.parse_args(argv)
    from ..video.source import is_url

    if is_url(args.input) or args.live:
        from .live import cmd_live

        return cmd_live(args)
    if len(args.output) != 1:
        p.error("one output for a file input (several outputs are for live streams)")
    args.output = args.output[0]
    run = Run(args)
    previous = signal.signal(signal.SIGTERM, stop_on_sigterm)  # SIGTERM finishes like Ctrl-C: a playable output
    try:
        run.check()
        run.set_up()
        if run.kind == "video":
            run.video()
        else:
            run.images()
        run.ok = True
        return EXIT_OK
    except expected() as e:
        return fail(e)
    finally:
        signal.signal(signal.SIGTERM, previous)
        run.close()


@dataclass
class Run:
    """One protect run over files: its checks, its set-up (model, backend, Protector, keys) and its outputs, which
    are staged: renamed into place on success (or Ctrl-C / SIGTERM), removed on failure."""

    args: argparse.Namespace
    kind: str = ""
    files: list = field(default_factory=list)
    writers: list = field(default_factory=list)
    ok: bool = False

    def __post_init__(self):
        from ..files import Staged

        self.src, self.dst = Path(self.args.input), Path(self.args.output)
        self.staged = Staged()
        self.keys = not self.args.no_keys

    def check(self) -> None:
        """Everything that can be refused is refused before the model loads and before anything is written."""
        from ..files import check_writable, partial_path, refuse_existing, remove_stale
        from ..keys import key_path_for
        from ..video import InputError
        from ..video.images import IMAGE_EXT

        a, src, dst = self.args, self.src, self.dst
        check_paths(src, dst, a.overwrite)
        self.kind = kind_of(src)
        if self.kind != "folder":  # what a killed run on this output left behind goes (key file and key pair)
            tmp_secret = partial_path(auto_pair(dst)[0])
            remove_stale(partial_path(key_path_for(dst)), tmp_secret, pub_of(tmp_secret))
        if self.kind == "video":
            from ..video.io import choose_codec, open_input

            open_input(src).close()  # a clear input error before anything is written
            a.codec = choose_codec(dst, a.codec)  # a codec the container cannot hold: exit 2, up front
        if self.keys and self.kind != "folder":  # (the default names too: an input called o.mp4.difpkeys)
            check_key_path(Path(a.keys) if a.keys else key_path_for(dst), src, dst)
            if not a.recipient:
                for made in auto_pair(dst):
                    check_key_path(made, src, dst)
        if self.kind == "folder":
            self.files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXT)
            if not self.files:
                raise InputError(f"no images in {src}")
            dst.mkdir(exist_ok=True)
            check_writable(dst)
            for f in self.files:
                refuse_existing(dst / f.name, a.overwrite)

    def set_up(self) -> None:
        from ..difp.identity import DlibIdentityEncoder

        a = self.args
        self.signer = signer(a) if self.keys else None
        self.model, device = load_model(a)
        if a.key_resolution is None:  # (a style-space model's keys are its latents: no key resolution)
            stylespace = getattr(self.model.cfg, "kind", "") == "stylespace"
            a.key_resolution = 0 if self.kind == "video" or stylespace else IMAGE_KEY_RESOLUTION
        self.protector = make_protector(a, self.model, device, sampling(a, self.model))
        self.id_enc = DlibIdentityEncoder()
        anchor = self.dst if self.kind != "folder" else self.dst / "images"
        self.recipient = recipient(a, anchor, self.staged) if self.keys else None
        # the header names the model, never the input: file names can name people
        self.info = {"model": self.model.fingerprint(), "resolution": self.model.cfg.resolution}

    def make(self, key_path: Path | None, **extra):
        """A frame-level protector for one output, with its key writer (staged) when keys are kept."""
        from ..files import refuse_existing
        from ..keys import KeyWriter
        from ..pipeline import FaceProtector

        writer = None
        if self.keys:
            refuse_existing(key_path, self.args.overwrite)
            writer = KeyWriter(self.staged.stage(key_path), self.recipient,
                               key_shapes(self.model, self.protector.key_resolution), {**self.info, **extra},
                               signer=self.signer)
            self.writers.append(writer)
        fp = FaceProtector(self.protector, self.id_enc, pipeline_cfg(self.args, self.keys),
                           on_key=writer.append if writer else None)
        return fp, writer

    def video(self) -> None:
        from ..keys import key_path_for
        from ..video import Interrupted, transcode
        from ..video.io import STREAM_TAG, video_packets_sha256

        a, t0 = self.args, time.time()
        key_path = Path(a.keys) if a.keys else key_path_for(self.dst)
        fp, writer = self.make(key_path if self.keys else None, media="video")
        meta = {STREAM_TAG: writer.stream_id.hex()} if writer else {}
        stopped = None
        try:
            n = transcode(self.src, self.dst, fp.process, codec=a.codec, crf=a.crf, preset=a.preset,
                          progress=not a.no_progress, metadata=meta, keep_metadata=a.keep_metadata,
                          keep_subtitles=a.keep_subtitles)
        except Interrupted as e:  # the frames done so far are a playable output: their keys go with them
            stopped, n = e, e.frames
        if writer:  # the video's encoded packets, as written: they survive a remux that drops the tag
            writer.close(media={"packets_sha256": video_packets_sha256(self.dst)})
        self.staged.commit()
        if stopped:
            raise stopped
        st = fp.stats
        print(f"{self.dst}: {n} frames, {len(st.tracks)} tracks, {st.faces} face-frames covered "
              f"({st.protected} replaced, {st.carried} of them carried, {st.skipped} reused as unchanged, "
              f"{st.obscured} blurred), {n / max(time.time() - t0, 1e-9):.1f} fps"
              + (f"; keys: {key_path}" if self.keys else "; no keys (irreversible)"), file=sys.stderr)

    def images(self) -> None:
        from ..keys import key_path_for
        from ..video import InputError

        a = self.args
        pairs = [(self.src, self.dst)] if self.kind == "image" else [(f, self.dst / f.name) for f in self.files]
        faces, failed = 0, []
        for src, dst in pairs:
            key_path = Path(a.keys) if (a.keys and self.kind == "image") else key_path_for(dst)
            try:
                faces += self.image(src, dst, key_path if self.keys else None)
            except InputError as e:
                if self.kind == "image":
                    raise
                failed.append(src.name)  # one unreadable image does not stop the folder
                print(f"warning: {e}; skipped", file=sys.stderr)
        print(f"{self.dst}: {len(pairs) - len(failed)} image(s), {faces} faces covered"
              + ("" if self.keys else "; no keys (irreversible)"), file=sys.stderr)
        if failed:
            raise InputError(f"{len(failed)} of {len(pairs)} images could not be read ({', '.join(failed[:5])}"
                             f"{', ...' if len(failed) > 5 else ''}); the others were protected")

    def image(self, src: Path, dst: Path, key_path: Path | None) -> int:
        """One image: protected, written whole, its key file signed with the image's hash and put in place."""
        from ..keys.audit import sha256_file
        from ..video.images import read_image, write_image

        img = read_image(src)
        fp, writer = self.make(key_path, media="image")
        write_image(dst, fp.process(0, img))
        if writer:
            writer.close(media={"sha256": sha256_file(dst)})  # images carry no tag: the key file names them by hash
        self.staged.commit()
        return fp.stats.faces

    def close(self) -> None:
        for w in self.writers:
            w.abort()
        if not self.ok:
            self.staged.discard()

"""Protect files: a video, an image or a folder of images (``protect_files(options)``). Everything that can be
refused is refused before the model loads; outputs are staged (renamed into place on success, or on Ctrl-C /
SIGTERM for a video, whose frames so far are playable; removed on failure); key files are signed with the output's
content (the video's packets, the image's bytes)."""
from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError, OutputError
from ..keys import KeyWriter, generate, host_signer, key_path_for, load_public, load_signer
from ..keys.audit import sha256_file
from ..staging import Staged, check_writable, partial_path, refuse_existing, remove_stale
from ..video import Interrupted, transcode
from ..video.images import IMAGE_EXT, read_image, write_image
from ..video.io import STREAM_TAG, choose_codec, open_input, video_packets_sha256
from . import build
from .options import Options


def media_of(path: Path) -> str:
    """'folder', 'image' or 'video'."""
    if path.is_dir():
        return "folder"
    return "image" if path.suffix.lower() in IMAGE_EXT else "video"


def check_paths(src: Path, dst: Path, overwrite: bool) -> None:
    if not src.exists():
        raise InputError(f"input not found: {src}")
    if dst.exists() and dst.resolve() == src.resolve():
        raise OutputError("output is the input; difp-stream never writes over its input")
    if not (dst.is_dir() and not any(dst.iterdir())):  # an empty folder may be filled
        refuse_existing(dst, overwrite)
    if not dst.parent.exists():
        raise OutputError(f"output folder {dst.parent} does not exist")
    check_writable(dst if dst.is_dir() else dst.parent)


def check_key_path(key_path: Path, *others: Path) -> None:
    """A key file never lands on the input or the output (with --overwrite it would replace them)."""
    for other in others:
        if key_path.resolve() == other.resolve() or (key_path.exists() and other.exists() and key_path.samefile(other)):
            raise OutputError(f"the key file {key_path} would be the input or the output ({other}): give the key "
                              "file a name of its own (--keys), or the output another name")


def auto_pair(dst: Path) -> tuple[Path, Path]:
    """Where the key pair made for an output without --recipient goes."""
    secret = dst.with_name(dst.name + ".difpkeys.secret")
    return secret, pub_of(secret)


def pub_of(secret: Path) -> Path:
    return secret.with_name(secret.name + ".pub")


def recipient(recipient_file: str | None, dst: Path, staged: Staged):
    """The public key to seal to; without one a fresh pair is made beside the output (loudly), staged with the run's
    other outputs (a failed run leaves no secret behind)."""
    if recipient_file:
        return load_public(recipient_file)
    secret, pub = auto_pair(dst)
    if secret.exists() or pub.exists():
        raise FileExistsError(f"{secret} exists; pass --recipient or move it away")
    tmp = staged.stage(secret)
    staged.stage(pub, pub_of(tmp))
    _, tmp_pub = generate(tmp)
    print(f"!!! no --recipient given: a new key pair was made. The SECRET that unlocks the original faces is\n"
          f"!!!   {secret}  (mode 0600)\n"
          f"!!! Move it off this machine and keep it safe; anyone holding it and the key file can undo the protection.",
          file=sys.stderr)
    return load_public(tmp_pub)


def signer(sign_key: str | None):
    return load_signer(sign_key) if sign_key else host_signer()


def protect_files(opts: Options) -> None:
    """Protect ``opts.input`` (a video, an image or a folder) into ``opts.output``; raises the documented errors."""
    run = FileRun(opts)
    try:
        run.check()
        run.set_up()
        if run.media == "video":
            run.video()
        else:
            run.images()
        run.ok = True
    finally:
        run.close()


@dataclass
class FileRun:
    """One protect run over files: its checks, its set-up (``build.prepare``, recipient, signer) and its staged
    outputs."""

    opts: Options
    media: str = ""
    files: list = field(default_factory=list)
    writers: list = field(default_factory=list)
    ok: bool = False

    def __post_init__(self):
        self.src, self.dst = Path(self.opts.input), Path(self.opts.output)
        self.staged = Staged()
        self.keys = not self.opts.keys.no_keys

    def check(self) -> None:
        """Everything that can be refused is refused before the model loads and before anything is written."""
        o, src, dst = self.opts, self.src, self.dst
        check_paths(src, dst, o.overwrite)
        self.media = media_of(src)
        if self.media != "folder":  # what a killed run on this output left behind goes (key file and key pair)
            tmp_secret = partial_path(auto_pair(dst)[0])
            remove_stale(partial_path(key_path_for(dst)), tmp_secret, pub_of(tmp_secret))
        if self.media == "video":
            open_input(src).close()  # a clear input error before anything is written
            o.video.codec = choose_codec(dst, o.video.codec)  # a codec the container cannot hold: exit 2, up front
        if self.keys and self.media != "folder":  # (the default names too: an input called o.mp4.difpkeys)
            check_key_path(Path(o.keys.keys) if o.keys.keys else key_path_for(dst), src, dst)
            if not o.keys.recipient:
                for made in auto_pair(dst):
                    check_key_path(made, src, dst)
        if self.media == "folder":
            self.files = sorted(p for p in src.iterdir() if p.suffix.lower() in IMAGE_EXT)
            if not self.files:
                raise InputError(f"no images in {src}")
            dst.mkdir(exist_ok=True)
            check_writable(dst)
            for f in self.files:
                refuse_existing(dst / f.name, o.overwrite)

    def set_up(self) -> None:
        self.signer = signer(self.opts.keys.sign_key) if self.keys else None
        self.prepared = build.prepare(self.opts, "video" if self.media == "video" else "image")
        anchor = self.dst if self.media != "folder" else self.dst / "images"
        self.recipient = recipient(self.opts.keys.recipient, anchor, self.staged) if self.keys else None

    def make(self, key_path: Path | None, **extra):
        """A frame-level protector for one output, with its key writer (staged) when keys are kept."""
        writer = None
        if self.keys:
            refuse_existing(key_path, self.opts.overwrite)
            writer = KeyWriter(self.staged.stage(key_path), self.recipient, self.prepared.key_shapes(),
                               {**self.prepared.header, **extra}, signer=self.signer)
            self.writers.append(writer)
        return self.prepared.frame_protector(self.keys, on_key=writer.append if writer else None), writer

    def video(self) -> None:
        o, t0 = self.opts, time.time()
        key_path = Path(o.keys.keys) if o.keys.keys else key_path_for(self.dst)
        fp, writer = self.make(key_path if self.keys else None, media="video")
        meta = {STREAM_TAG: writer.stream_id.hex()} if writer else {}
        stopped = None
        v = o.video
        try:
            n = transcode(self.src, self.dst, fp.process, codec=v.codec, crf=v.crf, preset=v.preset,
                          progress=not o.model.no_progress, metadata=meta, keep_metadata=v.keep_metadata,
                          keep_subtitles=v.keep_subtitles)
        except Interrupted as e:  # the frames done so far are a playable output: their keys go with them
            stopped, n = e, e.frames
        if writer:  # the video's encoded packets, as written: they survive a remux that drops the tag
            writer.close(media={"packets_sha256": video_packets_sha256(self.dst)}, frames=n)
        self.staged.commit()
        if stopped:
            raise stopped
        st = fp.stats
        print(f"{self.dst}: {n} frames, {len(st.tracks)} tracks, {st.faces} face-frames covered "
              f"({st.protected} replaced, {st.carried} of them carried, {st.skipped} reused as unchanged, "
              f"{st.obscured} blurred), {n / max(time.time() - t0, 1e-9):.1f} fps"
              + (f"; keys: {key_path}" if self.keys else "; no keys (irreversible)"), file=sys.stderr)

    def images(self) -> None:
        o = self.opts
        pairs = [(self.src, self.dst)] if self.media == "image" else [(f, self.dst / f.name) for f in self.files]
        faces, failed = 0, []
        for src, dst in pairs:
            key_path = Path(o.keys.keys) if (o.keys.keys and self.media == "image") else key_path_for(dst)
            try:
                faces += self.image(src, dst, key_path if self.keys else None)
            except InputError as e:
                if self.media == "image":
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

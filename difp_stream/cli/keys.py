"""Keys and authorized replay: `keygen`, `recover`, `keys list|export`."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..app.files import check_key_path, check_paths, media_of
from ..difp import find_shipped
from ..keys import (KeyError_, KeyReader, audit, default_trusted, generate, generate_signer, load_public, load_secret,
                    load_verifier)
from ..pipeline import FaceRecoverer
from ..video import OutputError, stream_tag, transcode
from ..video.images import read_image, write_image
from ..video.io import video_packets_sha256
from ..errors import UsageError
from .common import (EXIT_CODES, EXIT_OK, expected, fail, load_model, make_protector, model_args, num, passphrase,
                     video_args)


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
    secret = Path(args.secret)
    try:
        if secret.exists() or secret.with_name(secret.name + ".pub").exists():
            raise FileExistsError(f"{secret} or its .pub exists; refusing to replace a key")
        if args.signer:
            s, pub = generate_signer(secret)
            print(f"signing key: {s} (mode 0600, for the filter host: --sign-key)\n"
                  f"public: {pub} (readers trust it: --trust)")
            return EXIT_OK
        s, pub = generate(secret, passphrase(args))
    except expected() as e:
        return fail(e)
    print(f"secret: {s} (mode 0600, keep it off the filtering machine)\npublic: {pub} (give it to --recipient)")
    return EXIT_OK


def key_reading_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--identity", required=True, help="the recipient's secret key (from keygen)")
    p.add_argument("--passphrase-file", default=None, help="passphrase of the secret (or DIFP_PASSPHRASE)")
    p.add_argument("--trust", action="append", default=[], metavar="SIGNER.pub",
                   help="accept key files signed by this filter key (repeatable; this host's own signer and the "
                        "config folder's trusted/*.pub are always accepted)")
    p.add_argument("--partial", action="store_true",
                   help="accept a key file cut short (crash, live stream): read up to its last signed record")


def open_keys(args):
    trusted = default_trusted() + [load_verifier(t) for t in args.trust]
    return KeyReader(args.keys, load_secret(args.identity, passphrase(args)), partial=args.partial, trusted=trusted)


def check_media(src: Path, kind: str, reader, keys: str, force: bool = False) -> None:
    """The key file belongs to what it restores into, by content, every time: an image by its SHA-256, a video by
    its encoded video packets (the same after a remux that copies them), as the filter signed them; the stream-id
    tag alone is not trusted (anyone can write one). A re-encoded or edited picture is refused, unless ``force``:
    then a warning names the risk and recovery goes on. A key file that carries no signed content hash (cut short:
    --partial) falls back on the tag, with a warning."""
    def refuse(why: str) -> None:
        if not force:
            raise KeyError_(f"{keys} was not signed for {src}: {why} (--force restores anyway, onto whatever the "
                            "picture now shows)")
        print(f"warning: --force: {why}; the original faces are pasted where the key file says, whatever is "
              "there now", file=sys.stderr)

    if kind != "video":
        if reader.media.get("sha256") != audit.sha256_file(src):
            refuse("the image's hash is not the one the filter signed (another image, or this one edited)")
        return
    tag, want = stream_tag(src), reader.media.get("packets_sha256")
    if want is None:  # no signed content hash: a key file cut short
        if tag != reader.header["stream_id"]:
            refuse(f"another video (stream id {reader.header['stream_id'][:8]}…, the video has "
                   f"{tag[:8] + '…' if tag else 'none'})")
            return
        print("warning: the key file holds no signed hash of the video's content (cut short?): it is matched by "
              "its stream-id tag only", file=sys.stderr)
        return
    if video_packets_sha256(src) != want:
        refuse("its video packets are not the ones the key file was signed for (another video, or this one "
               "re-encoded or edited)" + (", though its stream-id tag matches" if tag == reader.header["stream_id"]
                                          else ""))
        return
    if tag != reader.header["stream_id"]:
        print("note: the video has no matching stream-id tag (remuxed?), but its video packets are the ones the "
              "key file was signed for", file=sys.stderr)


def model_for_keys(args, header: dict):
    """The model that made the key file: --model, or the shipped one whose fingerprint it names."""
    model, device = load_model(args)
    fp, want = model.fingerprint(), header.get("model")
    if want and want != fp and args.model is None:  # made with another shipped model (e.g. --model fast)?
        model = find_shipped(want, device) or model
        fp = model.fingerprint()
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
    key_reading_args(p)
    p.add_argument("--track", type=int, action="append", default=None, help="restore only this track (repeatable)")
    p.add_argument("--overwrite", action="store_true")
    p.add_argument("--force", action="store_true",
                   help="restore into a video or image whose content is not what the key file was signed for "
                        "(re-encoded, edited): the faces land where the key file says, whatever is there now")
    model_args(p)
    video_args(p, crf=None, crf_help="4; 0, lossless, when the key file holds exact-mode records")
    args = p.parse_args(argv)
    src, dst = Path(args.protected), Path(args.output)
    try:
        check_paths(src, dst, args.overwrite)
        check_key_path(Path(args.keys), dst)
        reader = open_keys(args)
        kind = media_of(src)
        check_media(src, kind, reader, args.keys, force=args.force)
        # every record decrypted once before anything is written (then again as the frames come: a long recovery
        # holds one frame's records at a time, not the whole file's pixels)
        faces = lossless = 0
        for r in reader.records(args.track):
            faces, lossless = faces + 1, lossless + r.lossless
        model, device = model_for_keys(args, reader.header)
        rec = FaceRecoverer(make_protector(args, model, device), reader.records(args.track))
        tracks = sorted(args.track) if args.track else reader.tracks
        log = audited(args.keys, "recover", "nothing was restored", tracks=tracks, input=str(src),
                      input_sha256=audit.sha256_file(src), output=str(dst), faces=faces)
        if kind == "video":
            # 4:4:4 so that restored faces are not blurred again by chroma subsampling; exact records: lossless
            crf = args.crf if args.crf is not None else 0 if lossless else 4
            transcode(src, dst, rec.process, codec=args.codec, crf=crf, preset=args.preset,
                      progress=not args.no_progress, desc="recovering", pix_fmt="yuv444p", keep_metadata=True)
        else:
            write_image(dst, rec.process(0, read_image(src)))
        print(f"{dst}: {rec.restored} faces of track(s) {tracks} restored; logged in {log}", file=sys.stderr)
        return EXIT_OK
    except expected() as e:
        return fail(e)


def audited(keys: str, action: str, otherwise: str, **fields) -> Path:
    """The audit line of a disclosure, written before it: a log that cannot be written stops it (exit 4)."""
    try:
        return audit.append(keys, action, **fields)
    except OSError as e:
        raise OutputError(f"cannot write the audit log {audit.audit_path(keys)}: {e.strerror or e}; {otherwise}") \
            from None


def cmd_keys(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="difp-stream keys", description="Inspect or share a key file.", epilog=EXIT_CODES)
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="tracks, frame ranges and counts")
    ex = sub.add_parser("export", help="re-seal one track's keys to another recipient (selective disclosure)")
    for q in (ls, ex):
        q.add_argument("keys", help="key file")
        key_reading_args(q)
    ex.add_argument("--export-track", type=int, required=True, dest="track", help="the track to disclose")
    ex.add_argument("--to", required=True, help="public key of the new recipient")
    ex.add_argument("--out", required=True, help="the new key file")
    ex.add_argument("--from-frame", type=num(int, 0), default=None, metavar="N",
                    help="only the track's frames from N on (frame = seconds x fps; rounded down to its group of 30, "
                         "where the filter signed)")
    ex.add_argument("--to-frame", type=num(int, 1), default=None, metavar="M",
                    help="... up to frame M (exclusive; rounded up to the next group of 30)")
    args = p.parse_args(argv)
    try:
        reader = open_keys(args)
        if args.action == "list":
            _list(reader, args.keys)
        else:
            if Path(args.out).exists():
                raise FileExistsError(f"{args.out} exists")
            check_key_path(Path(args.out), Path(args.keys))
            to = load_public(args.to)
            span = None
            if args.from_frame is not None or args.to_frame is not None:
                span = (args.from_frame or 0, args.to_frame if args.to_frame is not None else 2 ** 31)
                if span[1] <= span[0]:
                    raise UsageError("--to-frame must be after --from-frame")
            audited(args.keys, "export", "nothing was exported", tracks=[args.track], to=args.to, out=args.out,
                    **({"frames": list(span)} if span else {}))
            lo, hi = reader.export_track(args.track, to, args.out, span)
            what = "" if span is None else f" (frames {lo} to {'its end' if hi is None else hi})"
            print(f"track {args.track}{what} re-sealed to {args.to}: {args.out}")
        return EXIT_OK
    except expected() as e:
        return fail(e)


def _list(reader, path: str) -> None:
    h = reader.header
    print(f"key file {path}: format {h['format']}, stream {h['stream_id'][:16]}, created {h['created']}, "
          f"model {h.get('model', '?')}, signed by filter key {h['signer'][:16]}, "
          f"{'complete' if reader.complete else 'INCOMPLETE'}"
          + (f", export of track {reader.export['exported_track']}" if reader.export else ""))
    spans: dict[int, list[int]] = {}
    blurred: dict[int, int] = {}
    exact = 0
    for r in reader.records():
        spans.setdefault(r.track_id, []).append(r.frame_index)
        blurred[r.track_id] = blurred.get(r.track_id, 0) + r.covered
        exact += r.exact is not None and not r.covered
    print("track  faces  blurred  first  last")
    for t in reader.tracks:
        fr = spans.get(t, [])
        print(f"{t:5d}  {len(fr):5d}  {blurred.get(t, 0):7d}  {min(fr) if fr else '-':>5}  {max(fr) if fr else '-':>4}")
    if exact:
        print(f"{exact} face records carry the original's pixels (exact or faithful recovery)")
    if sum(blurred.values()):
        print(f"{sum(blurred.values())} face records are faces the filter blurred (their original pixels; recover "
              "restores them too)")

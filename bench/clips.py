"""The whole pipeline on every shared clip (its first --frames frames), default settings, keys on: how many face-frames
still need the fail-closed blur (profiles apart), whether each track keeps one fake person, flicker, identity leaks,
and speed beside deface's on the same clip in the same run (when deface is installed), with where the time goes per
stage; plus a strip per clip (original | protected, a few frames apart, at the face's size in the frame).

    python bench/clips.py [--frames 50] [--model default] [--name clips] [--no-deface] [--clips a,b] [--min-difp PX]

Writes bench/results/NAME.{json,md} and NAME_strip_CLIP.png."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, SHARED, machine  # noqa: E402
from difp_stream.app.benchmark import read_frames, run_deface, run_difp  # noqa: E402
from difp_stream.difp import load_model  # noqa: E402


def strip(frames: list, outs: list, faces: list, n: int = 4) -> np.ndarray | None:
    """Rows original | protected for ``n`` frames spread over the clip, cut around the first track's face (twice
    its box) and shown at its size in the frame (up to 256 px high)."""
    idx = [i for i, f in enumerate(faces) if f]
    if not idx:
        return None
    tiles = []
    for i in idx[:: max(1, len(idx) // n)][:n]:
        _, box, _ = faces[i][0]
        cx, cy, s = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 1.0 * max(box[2] - box[0], box[3] - box[1])
        h, w = frames[i].shape[:2]
        x0, y0 = int(max(0, cx - s)), int(max(0, cy - s))
        x1, y1 = int(min(w, cx + s)), int(min(h, cy + s))
        pair = [cv2.resize(f[y0:y1, x0:x1], (min(256, y1 - y0) * (x1 - x0) // max(1, y1 - y0), min(256, y1 - y0)))
                for f in (frames[i], outs[i])]
        tiles.append(np.concatenate(pair, 0))
    hh = max(t.shape[0] for t in tiles)
    return np.concatenate([np.pad(t, ((0, hh - t.shape[0]), (0, 4), (0, 0))) for t in tiles], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--model", default=None)
    ap.add_argument("--render-every", type=int, default=2)
    ap.add_argument("--name", default="clips")
    ap.add_argument("--no-deface", action="store_true", help="skip deface's run beside each clip")
    ap.add_argument("--clips", default="", help="only the clips whose names contain one of these (comma-separated)")
    ap.add_argument("--min-difp", type=int, default=None, help="faces narrower than this are blurred (default: "
                                                               "the pipeline's)")
    args = ap.parse_args()
    clips = sorted((SHARED / "videos").glob("*.mp4"))
    if args.clips:
        clips = [c for c in clips if any(k and k in c.name for k in args.clips.split(","))]
    if not clips:
        print(f"no clips in {SHARED / 'videos'}; nothing measured")
        return
    model = load_model(args.model)
    t0, rows = time.time(), []
    for clip in clips:
        frames, fps = read_frames(clip, args.frames)
        faces: list = []
        more = {} if args.min_difp is None else {"min_difp": args.min_difp}
        r, outs, _ = run_difp(frames, fps, model, every=5, render_every=args.render_every, faces_out=faces, **more)
        stages = r.pop("stages_ms")
        r["stage_ms_per_frame"] = {k: v["p50"] if k in ("decode", "encode") else v["total"] / len(frames)
                                   for k, v in stages.items()}
        d = None if args.no_deface else run_deface(clip, frames)
        r["deface_fps"] = d[0]["fps"] if d else None
        r["vs_deface"] = r["fps"] / d[0]["fps"] if d else None
        rows.append({"clip": clip.name, **r})
        print(json.dumps(rows[-1]), flush=True)
        pic = strip(frames, outs, faces)
        if pic is not None:
            cv2.imwrite(str(RESULTS / f"{args.name}_strip_{clip.stem}.png"), pic[:, :, ::-1])
    not_faces = sum(r["blurred_not_faces"] for r in rows)
    faces = sum(r["faces"] for r in rows) - not_faces
    prof = sum(r["blurred_profiles"] for r in rows)
    blurred = sum(r["blurred"] for r in rows) - prof - not_faces
    total = {"face_frames": faces, "profiles": prof, "blurred_not_profile": blurred, "not_faces": not_faces,
             "blurred_share_not_profile": blurred / max(1, faces - prof)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    cmd = "python bench/clips.py " + " ".join(sys.argv[1:])
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"machine": machine(), "command": cmd, "rows": rows,
                                                           "total": total}, indent=1, default=str))
    lines = [f"# The pipeline on every shared clip (first {args.frames} frames)", "",
             f"`{cmd}` on {machine()}, {time.time() - t0:.0f} s; default settings, keys on.", "",
             "| clip | size | face-frames | blurred: profiles / small or cut / not a face (mesh) / failed closed | "
             "blurred, not profiles | "
             "same fake person | flicker (output / original) | detail mid / high | leaks | fps | deface fps | "
             "x deface |", "| --- " * 12 + "|"]
    for r in rows:
        st, fl = r["identity_stability"], r["flicker"]
        failed = r["blurred"] - r["blurred_profiles"] - r["blurred_small_or_cut"] - r["blurred_not_faces"]
        lines.append(
            f"| {r['clip']} | {r['size']} | {r['faces']} | {r['blurred_profiles']} / {r['blurred_small_or_cut']} / "
            f"{r['blurred_not_faces']} / {failed} | {r['blurred_share_not_profile']:.1%} | "
            + (f"{st['same_fake_share']:.0%}" if st["same_fake_share"] is not None else "–") + " | "
            + (f"{fl['ratio']:.2f}" if fl["ratio"] is not None else "–") + " | "
            + (f"{r['detail']['mid']:.2f} / {r['detail']['high']:.2f}" if r["detail"]["mid"] is not None else "–")
            + f" | {r['leaks']} of {r['faces_checked']} | {r['fps']:.2f} | "
            + (f"{r['deface_fps']:.1f} | {r['vs_deface']:.2f} |" if r["deface_fps"] else "– | – |"))
    lines += ["", f"All clips: {faces} face-frames ({not_faces} detections more were not faces), {prof} profiles; "
              f"blurred among the others: {blurred} "
              f"(**{total['blurred_share_not_profile']:.1%}**).", "",
              "Where the time goes: ms per frame by stage (all faces of a frame; nested stages are inside their "
              "parents: `difp: *` inside `difp`; decode and encode are whole-clip averages).", ""]
    names = sorted({k for r in rows for k in r["stage_ms_per_frame"]},
                   key=lambda k: -max(r["stage_ms_per_frame"].get(k, 0) for r in rows))
    lines += ["| stage | " + " | ".join(r["clip"].removesuffix(".mp4") for r in rows) + " |",
              "| --- " * (len(rows) + 1) + "|"]
    for k in names:
        lines.append(f"| {k} | " + " | ".join(f"{r['stage_ms_per_frame'].get(k, 0):.1f}" for r in rows) + " |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

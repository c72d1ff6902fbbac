"""Does the fake face move with the person? Per shared clip, default settings, keys on: the original's and the
output's mouth opening, smile and eye opening, measured with dlib's 68 landmarks at the same place in both (an
independent measure: not the face mesh that drives the fake), frame by frame; their correlation and the spread ratio
(output / original); with identity leaks, the same-fake-person share and flicker from the same run.

    python bench/expression.py [--frames 100] [--clips a.mp4,b.mp4] [--name expression]

Measures (68-point indices): mouth opening = inner-lip gap (61-67, 62-66, 63-65) / mouth width (48-54); smile =
mouth width / outer eye-corner distance (36-45); eye opening = lid gaps / eye width, both eyes. A clip counts as
talking or smiling when the original's mouth opening spreads by >= 0.03 (std) or its smile by >= 0.02.
Writes bench/results/NAME.{json,md} and NAME_strip_CLIP.png (original above, output below, 8 frames)."""
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
from difp_stream.app.benchmark import read_frames, run_difp  # noqa: E402
from difp_stream.difp import load_model  # noqa: E402

TALKING_MOUTH, TALKING_SMILE = 0.03, 0.02
GOALS = {"mouth_corr": 0.8, "mouth_spread": (0.7, 1.3), "smile_corr": 0.8, "eyes_corr": 0.6}


class Dlib68:
    def __init__(self):
        import dlib
        import face_recognition_models as frm

        self.pred = dlib.shape_predictor(frm.pose_predictor_model_location())
        self.dlib = dlib

    def __call__(self, rgb: np.ndarray, box) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        s = self.pred(np.ascontiguousarray(rgb), self.dlib.rectangle(x0, y0, x1, y1))
        return np.array([[s.part(i).x, s.part(i).y] for i in range(68)], np.float32)


def measures(p: np.ndarray) -> np.ndarray:
    """[mouth opening, smile, eye opening] of 68 points."""
    d = lambda i, j: float(np.linalg.norm(p[i] - p[j]))  # noqa: E731
    width = max(d(48, 54), 1e-6)
    mouth = (d(61, 67) + d(62, 66) + d(63, 65)) / 3 / width
    smile = width / max(d(36, 45), 1e-6)
    eyes = ((d(37, 41) + d(38, 40)) / (2 * max(d(36, 39), 1e-6)) + (d(43, 47) + d(44, 46)) / (2 * max(d(42, 45), 1e-6))) / 2
    return np.array([mouth, smile, eyes], np.float32)


def corr(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or a.std() < 1e-6 or b.std() < 1e-6:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def series(frames: list, outs: list, faces: list, lm: Dlib68):
    """Per frame with a face: the first track's measures in the original and in the output (same box)."""
    tid0 = next((f[0][0] for f in faces if f), None)
    orig, out = [], []
    for i, fs in enumerate(faces):
        hit = [f for f in fs if f[0] == tid0]
        if not hit:
            continue
        box = hit[0][1]
        orig.append(measures(lm(frames[i], box)))
        out.append(measures(lm(outs[i], box)))
    return np.array(orig).reshape(-1, 3), np.array(out).reshape(-1, 3)


def strip(frames: list, outs: list, faces: list, n: int = 8) -> np.ndarray | None:
    idx = [i for i, f in enumerate(faces) if f]
    if not idx:
        return None
    tiles = []
    for i in idx[:: max(1, len(idx) // n)][:n]:
        box = faces[i][0][1]
        cx, cy, s = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, 0.75 * max(box[2] - box[0], box[3] - box[1])
        h, w = frames[i].shape[:2]
        x0, y0, x1, y1 = int(max(0, cx - s)), int(max(0, cy - s)), int(min(w, cx + s)), int(min(h, cy + s))
        pair = [cv2.resize(f[y0:y1, x0:x1], (160, 160), interpolation=cv2.INTER_AREA) for f in (frames[i], outs[i])]
        tiles.append(np.concatenate(pair, 0))
    return np.concatenate([np.pad(t, ((0, 0), (0, 3), (0, 0))) for t in tiles], 1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--clips", default=None, help="comma-separated clip names in shared/videos (default: all)")
    ap.add_argument("--model", default=None)
    ap.add_argument("--render-every", type=int, default=2)
    ap.add_argument("--no-expression", action="store_true", help="without the expression drive (for comparison)")
    ap.add_argument("--name", default="expression")
    args = ap.parse_args()
    clips = sorted((SHARED / "videos").glob("*.mp4"))
    if args.clips:
        want = set(args.clips.split(","))
        clips = [c for c in clips if c.name in want]
    if not clips:
        print(f"no clips in {SHARED / 'videos'}; nothing measured")
        return
    model = load_model(args.model)
    if args.no_expression:
        model.directions = None
    lm = Dlib68()
    t0, rows = time.time(), []
    RESULTS.mkdir(parents=True, exist_ok=True)
    for clip in clips:
        frames, fps = read_frames(clip, args.frames)
        faces: list = []
        r, outs, _ = run_difp(frames, fps, model, every=5, render_every=args.render_every, faces_out=faces)
        o, p = series(frames, outs, faces, lm)
        row = {"clip": clip.name, "frames": len(frames), "measured": len(o), "fps": r["fps"],
               "leaks": r["leaks"], "same_fake": r["identity_stability"].get("same_fake_share"),
               "flicker": r["flicker"].get("ratio"), "blurred": r["blurred"], "faces": r["faces"]}
        if len(o) >= 3:
            row["talking"] = bool(o[:, 0].std() >= TALKING_MOUTH or o[:, 1].std() >= TALKING_SMILE)
            for j, name in enumerate(("mouth", "smile", "eyes")):
                row[f"{name}_corr"] = corr(o[:, j], p[:, j])
                row[f"{name}_spread"] = float(p[:, j].std() / max(o[:, j].std(), 1e-6))
            row["orig_mouth_std"], row["orig_smile_std"] = float(o[:, 0].std()), float(o[:, 1].std())
        rows.append(row)
        print(json.dumps(row), flush=True)
        pic = strip(frames, outs, faces)
        if pic is not None:
            cv2.imwrite(str(RESULTS / f"{args.name}_strip_{clip.stem}.png"), pic[:, :, ::-1])
    cmd = "python bench/expression.py " + " ".join(sys.argv[1:])
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"machine": machine(), "command": cmd, "goals": GOALS,
                                                           "rows": rows}, indent=1, default=str))
    f = lambda v: "–" if v is None else f"{v:.2f}"  # noqa: E731
    lines = [f"# Expression: does the fake move with the person? (first {args.frames} frames)", "",
             f"`{cmd}` on {machine()}, {time.time() - t0:.0f} s; default settings, keys on; dlib 68 points on the "
             "original and on the output at the same box.", "",
             "Goals on talking/smiling clips: mouth corr >= 0.8 with spread 0.7-1.3, smile corr >= 0.8, eyes corr "
             ">= 0.6; 0 leaks; same fake >= 95%; flicker <= 1.5.", "",
             "| clip | talking | mouth corr | mouth spread | smile corr | smile spread | eyes corr | leaks | same fake "
             "| flicker | fps |", "| --- " * 11 + "|"]
    for r in rows:
        lines.append(f"| {r['clip']} | {'yes' if r.get('talking') else 'no'} | {f(r.get('mouth_corr'))} | "
                     f"{f(r.get('mouth_spread'))} | {f(r.get('smile_corr'))} | {f(r.get('smile_spread'))} | "
                     f"{f(r.get('eyes_corr'))} | {r['leaks']} | {f(r['same_fake'])} | {f(r['flicker'])} | "
                     f"{r['fps']:.1f} |")
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

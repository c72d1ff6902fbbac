"""How many faces cut by the frame's edge, or turned away, the detector still finds.

1. Cut: eval crops of ../shared/data/faces (unseen people), scaled to a 160 px face, are placed on a 640x360 grey
   frame so that a share of the face (0, 25, 50, 65%) lies beyond the left edge, with and without the padded frame
   the detector now gets; recall = a detection overlapping the face's visible part (IoU > 0.3 with the visible box).
2. Turned (``--yaw N``; the eval crops are nearly all frontal): N faces of the generator, each rendered turned
   along a yaw direction fitted on the generator's own renders (ridge regression of the mesh's yaw on the style,
   as ``styles directions`` fits the expression ones), at 256 px (the face ~120 px wide) and cut by the left edge
   (0, 25, 50%). Each render's yaw in degrees is read from the face mesh's 3D points (cheek to cheek); renders whose
   mesh is not found are not counted. Recall by yaw and cut, and the share of the found faces the pipeline blurs
   as profiles (``faces.align.is_profile``).

    python bench/edge_recall.py [--limit 200] [--yaw 60]

Writes bench/results/edge_recall.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, SHARED, machine  # noqa: E402
from difp_stream.faces.detect import Detector  # noqa: E402
from difp_stream.faces.track import iou_matrix  # noqa: E402

CUTS = (0.0, 0.25, 0.5, 0.65)
FACE = 160
YAW_CUTS = (0.0, 0.25, 0.5)
YAW_BINS = ((0, 15), (15, 30), (30, 45), (45, 60), (60, 75), (75, 90))
YAW_STEPS = (-5, -4, -3, -2, 0, 2, 3, 4, 5)  # along the yaw direction, in standard deviations of the styles on it


def frames(limit: int):
    faces = SHARED / "faces"
    rows = [r.split("\t") for r in (faces / "manifest.tsv").read_text().splitlines()[1:]]
    n = 0
    for r in rows:
        if r[3] != "eval" or float(r[6]) < 0.999:
            continue
        crop = cv2.resize(cv2.imread(str(faces / r[0]))[:, :, ::-1], (FACE, FACE), interpolation=cv2.INTER_CUBIC)
        for cut in CUTS:
            frame = np.full((360, 640, 3), 110, np.uint8)
            x0 = -int(round(cut * FACE))
            frame[100:100 + FACE, max(0, x0):x0 + FACE] = crop[:, -x0:] if x0 < 0 else crop
            visible = np.array([[max(0, x0), 100, x0 + FACE, 100 + FACE]], np.float32)
            yield cut, frame, visible
        n += 1
        if n >= limit:
            return


def degrees(points: np.ndarray) -> float:
    """A face's yaw in degrees from its mesh's 3D points [478, 3] (the cheek-to-cheek line against the image plane)."""
    d = points[454] - points[234]
    return float(np.degrees(np.arctan2(abs(d[2]), abs(d[0]))))


def turned(count: int, fit: int = 200, seed: int = 7):
    """Renders of ``count`` generator faces turned along a fitted yaw direction: yields (face index, render,
    yaw in degrees, the face's box in the render) for each render whose mesh is found."""
    from difp_stream.train.directions import _Renderer, ridge, sample

    render = _Renderer()
    ws, ms, _ = sample(render, fit, seed=seed, progress=False)
    b, _, corr = ridge(ws.astype(np.float64), ms[:, 4:5].astype(np.float64))
    u = (b[0] / np.linalg.norm(b[0])).astype(np.float32)
    v = u * float(((ws - ws.mean(0)) @ u).std())  # one step: one standard deviation of the styles along it
    print(f"yaw direction: held-out correlation {corr[0]:.2f} on {len(ws)} renders", file=sys.stderr)
    g, rng = render.g, np.random.default_rng(seed + 1)
    wmean = g.mean_style().numpy()
    for i in range(count):
        w = g.mapping(torch.from_numpy(rng.standard_normal((1, 512)).astype(np.float32)))[0].detach().numpy()
        w = wmean + 0.7 * (w - wmean)
        for t in YAW_STEPS:
            img = render(np.repeat((w + t * v)[None], g.n_layers, 0))
            r = render.mesh(img[None])
            if r.presence[0] < 0.5:
                continue
            pts = r.points[0]
            box = np.array([*pts[:, :2].min(0), *pts[:, :2].max(0)], np.float32)
            yield i, img, degrees(pts), box


def yaw_recall(count: int, det) -> dict:
    """Recall by yaw bin and cut (and the share of found faces blurred as profiles) on turned renders."""
    from difp_stream.faces import align

    hits = {(b, c): [] for b in YAW_BINS for c in YAW_CUTS}
    profile = {b: [] for b in YAW_BINS}
    for _, img, yaw, box in turned(count):
        b = next((b for b in YAW_BINS if b[0] <= yaw < b[1]), YAW_BINS[-1])
        for cut in YAW_CUTS:
            frame = np.full((360, 640, 3), 110, np.uint8)
            x0 = 100 - int(round(box[0] + cut * (box[2] - box[0])))  # the render's left edge in the frame
            left = max(0, x0)
            frame[50:306, left:x0 + 256] = img[:, left - x0:]
            vis = np.array([[max(0.0, box[0] + x0), box[1] + 50, box[2] + x0, box[3] + 50]], np.float32)
            faces = det.detect([frame])[0]
            hit = bool(faces) and iou_matrix(vis, np.stack([f.box for f in faces])).max() > 0.3
            hits[(b, cut)].append(hit)
            if hit and cut == 0.0:
                f = max(faces, key=lambda f: iou_matrix(vis, f.box[None]).max())
                profile[b].append(align.is_profile(f.landmarks, 0.5))
    name = lambda b: f"{b[0]}-{b[1]} deg"  # noqa: E731
    return {"renders": count, "recall": {name(b): {f"{int(c * 100)}% cut": (float(np.mean(hits[(b, c)])) if hits[(b, c)]
                                                                        else None) for c in YAW_CUTS}
                                         for b in YAW_BINS},
            "faces": {name(b): len(hits[(b, 0.0)]) for b in YAW_BINS},
            "blurred_as_profile": {name(b): (float(np.mean(v)) if v else None) for b, v in profile.items()}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=200)
    p.add_argument("--yaw", type=int, default=0, help="also this many turned generator faces (recall by yaw)")
    args = p.parse_args()
    dets = {"padded (15%)": Detector(0.5, max_side=1280), "not padded": Detector(0.5, max_side=1280, pad=0.0)}
    found = {name: {c: [] for c in CUTS} for name in dets}
    for cut, frame, visible in frames(args.limit):
        for name, det in dets.items():
            faces = det.detect([frame])[0]
            hit = bool(faces) and iou_matrix(visible, np.stack([f.box for f in faces])).max() > 0.3
            found[name][cut].append(hit)
    table = {name: {f"{int(c * 100)}% cut": float(np.mean(v)) for c, v in d.items()} for name, d in found.items()}
    out = {"machine": machine(), "command": "python bench/edge_recall.py " + " ".join(sys.argv[1:]),
           "faces": len(found["not padded"][0.0]), "recall": table}
    if args.yaw:
        out["yaw"] = yaw_recall(args.yaw, dets["padded (15%)"])
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "edge_recall.json").write_text(json.dumps(out, indent=1))
    md = [f"`{out['command']}` on {out['machine']}; {out['faces']} eval faces, 160 px, threshold 0.5", "",
          "| detector input | " + " | ".join(f"{int(c * 100)}% cut" for c in CUTS) + " |",
          "| --- |" + " --- |" * len(CUTS)]
    md += [f"| {name} | " + " | ".join(f"{v:.1%}" for v in row.values()) + " |" for name, row in table.items()]
    if args.yaw:
        y = out["yaw"]
        pct = lambda v: "-" if v is None else f"{v:.1%}"  # noqa: E731
        md += ["", f"Turned: {y['renders']} generator faces, each rendered at {len(YAW_STEPS)} turns (256 px, the face "
               "~120 px wide), yaw read from the face mesh; padded detector input", "",
               "| yaw | renders | " + " | ".join(f"{int(c * 100)}% cut" for c in YAW_CUTS) + " | found, blurred as "
               "profile |", "| --- | --- |" + " --- |" * (len(YAW_CUTS) + 1)]
        md += [f"| {b} | {y['faces'][b]} | " + " | ".join(pct(v) for v in row.values()) +
               f" | {pct(y['blurred_as_profile'][b])} |" for b, row in y["recall"].items()]
    (RESULTS / "edge_recall.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

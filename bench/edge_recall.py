"""How many faces cut by the frame's edge the detector still finds, with and without the padded frame it now gets.
Eval crops of ../shared/data/faces (unseen people), scaled to a 160 px face, are placed on a 640x360 grey frame so
that a share of the face (0, 25, 50, 65%) lies beyond the left edge; recall = a detection overlapping the face's
visible part (IoU > 0.3 with the visible box).

    python bench/edge_recall.py [--limit 200]

Writes bench/results/edge_recall.{json,md}.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, SHARED, machine  # noqa: E402
from difp_stream.faces.detect import Detector  # noqa: E402
from difp_stream.faces.track import iou_matrix  # noqa: E402

CUTS = (0.0, 0.25, 0.5, 0.65)
FACE = 160


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


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--limit", type=int, default=200)
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "edge_recall.json").write_text(json.dumps(out, indent=1))
    md = [f"`{out['command']}` on {out['machine']}; {out['faces']} eval faces, 160 px, threshold 0.5", "",
          "| detector input | " + " | ".join(f"{int(c * 100)}% cut" for c in CUTS) + " |",
          "| --- |" + " --- |" * len(CUTS)]
    md += [f"| {name} | " + " | ".join(f"{v:.1%}" for v in row.values()) + " |" for name, row in table.items()]
    (RESULTS / "edge_recall.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))
    return 0


if __name__ == "__main__":
    sys.exit(main())

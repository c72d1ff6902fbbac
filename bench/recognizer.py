"""Which face box to run dlib's recognizer with, on template-aligned crops: the template's inner 112x112 box (how
the shared descriptors were made) or the box dlib's own detector puts on such crops (difp/identity.py). Measured on
crops spread over the shared eval split: share of same-person pairs within 0.6, share of different-person pairs
within 0.6 (false matches), mean distances.

    python bench/recognizer.py [--limit 500] [--out bench/results]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, SHARED, machine  # noqa: E402
from difp_stream.difp.identity import DETECTOR_BOX, TEMPLATE_BOX, DlibIdentityEncoder  # noqa: E402
from difp_stream.train.data import load_faces  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--limit", type=int, default=500)
    ap.add_argument("--out", default=str(RESULTS))
    args = ap.parse_args()
    if not (SHARED / "faces" / "manifest.tsv").is_file():
        sys.exit("no eval data in ../shared/data/faces")
    t0 = time.time()
    full = load_faces(SHARED / "faces", "eval", 128)
    pick = np.linspace(0, len(full.images) - 1, min(args.limit, len(full.images))).round().astype(int)
    crops, ids = full.images[pick], full.identities[pick]
    iu = np.triu_indices(len(ids), 1)
    same = (ids[:, None] == ids[None])[iu]
    rows = {}
    for name, box in (("template box (8,8)-(120,120)", TEMPLATE_BOX), ("detector box (16,36)-(106,126)", DETECTOR_BOX)):
        d = DlibIdentityEncoder(box)(crops)
        dist = np.linalg.norm(d[:, None] - d[None], axis=2)[iu]
        rows[name] = {"same_person_matched": float((dist[same] < 0.6).mean()),
                      "different_people_matched": float((dist[~same] < 0.6).mean()),
                      "mean_same": float(dist[same].mean()), "mean_different": float(dist[~same].mean())}
    res = {"crops": int(len(crops)), "same_pairs": int(same.sum()), "different_pairs": int((~same).sum()),
           "machine": machine(), "seconds": round(time.time() - t0, 1), "boxes": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "recognizer.json").write_text(json.dumps(res, indent=2))
    lines = [f"# dlib recognizer: face box on aligned crops (`python bench/recognizer.py --limit {args.limit}`)", "",
             f"{res['crops']} eval crops ({res['same_pairs']} same-person pairs, {res['different_pairs']} others), "
             f"{res['machine']}, {res['seconds']} s.", "",
             "| box | same person within 0.6 | different people within 0.6 | mean L2 same / different |",
             "| --- | --- | --- | --- |"]
    lines += [f"| {k} | {v['same_person_matched']:.1%} | {v['different_people_matched']:.2%} | "
              f"{v['mean_same']:.3f} / {v['mean_different']:.3f} |" for k, v in rows.items()]
    (out / "recognizer.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()

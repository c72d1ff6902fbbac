"""The right cover for every face, on photos of people the model never saw (the eval split of ../shared/data/faces).

Each eval crop is put back into a picture (scaled 2x, its border replicated: a 384 px picture, the face ~140 px
wide) and protected by the whole pipeline (`FaceProtector`, faithful keys) as `difp-stream photo.png out.png` does,
once per --attributes mode. Per photo:

- covered how: replaced, or blurred and why (profile, cut / small, no fake far enough, failed);
- protection: dlib L2 from the output face to the original photo's (same photo) and to the person's other eval
  photos (nearest), protected when > 0.6 (replaced faces; a blurred one has no face left to match);
- attributes: the CC0 gender and age networks (faces/attributes.py) on the original and on the output face
  (replaced faces); gender kept, age within 10 years; beside them the same measure between two photos of the same
  person (the baseline);
- recovery: the whole picture restored from its key records (through the key file's encoding: faithful JPEGs and
  cover records), PSNR against the original picture.

    python bench/cover.py [--limit 100] [--modes keep,random]

Writes bench/results/cover.{json,md}.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import RESULTS, SHARED, machine, psnr  # noqa: E402

FACES = SHARED / "faces"


def photos(limit: int) -> tuple[list[dict], dict[str, list[str]]]:
    """Up to ``limit`` eval photos, one per person first (then a second each, and so on), and every person's files."""
    rows = [r for r in csv.DictReader(open(FACES / "manifest.tsv"), delimiter="\t") if r["split"] == "eval"]
    by_id: dict[str, list[dict]] = {}
    for r in rows:
        by_id.setdefault(r["identity"], []).append(r)
    picked, k = [], 0
    while len(picked) < limit and any(len(v) > k for v in by_id.values()):
        picked += [v[k] for v in by_id.values() if len(v) > k][: limit - len(picked)]
        k += 1
    return picked, {i: [r["file"] for r in v] for i, v in by_id.items()}


def read(file: str) -> np.ndarray:
    return cv2.imread(str(FACES / file))[:, :, ::-1].copy()


def picture(crop: np.ndarray) -> np.ndarray:
    big = cv2.resize(crop, (256, 256), interpolation=cv2.INTER_CUBIC)
    return cv2.copyMakeBorder(big, 64, 64, 64, 64, cv2.BORDER_REPLICATE)


def run(mode: str, picked: list[dict], files: dict, limit_other: int = 4, only: tuple[str, ...] = (),
        save: Path | None = None, **settings) -> dict:
    """``only``: protect just the photos whose file names hold one of these (each keeps its seed in the full list);
    ``save``: a folder for each photo's original | output | recovered picture; ``settings``: other
    :class:`PipelineConfig` fields."""
    from difp_stream.difp import Protector, load_model
    from difp_stream.difp.identity import DlibIdentityEncoder
    from difp_stream.faces import align
    from difp_stream.faces.attributes import load_estimator
    from difp_stream.faces.detect import Detector
    from difp_stream.keys.keyfile import decode_payload, encode_payload
    from difp_stream.pipeline import FaceProtector, FaceRecoverer, PipelineConfig
    from difp_stream.runtime.backends import select

    model = load_model()
    backend, _ = select("auto", model, "cpu")
    p = Protector(model, backend=backend)
    enc, est, det = DlibIdentityEncoder(), load_estimator(), Detector(0.5)
    shapes = model.key_shapes()
    rows, t0 = [], time.time()
    for i, r in enumerate(picked):
        if only and not any(o in r["file"] for o in only):
            continue
        img = picture(read(r["file"]))
        recs: list = []
        cfg = PipelineConfig(seed=i, keys=True, exact=True, pixels_quality=75, attributes=mode,
                             **settings)
        fp = FaceProtector(p, enc, cfg, on_key=recs.append)
        out = fp.process(0, img)
        st = fp.stats
        row = {"file": r["file"], "faces": st.faces, "replaced": st.protected, "blurred": st.obscured,
               "profile": st.profiles, "small_or_cut": st.small, "redrawn": st.redrawn, "steered": st.steered}
        row["not_face"] = st.not_faces  # a doubtful detection the face mesh found no face in
        row["weak_or_failed"] = st.obscured - st.profiles - st.small - st.not_faces
        faces = det.detect([img])[0]
        if faces and st.protected and not st.obscured:  # (a blurred face has no gender or age to keep)
            f = max(faces, key=lambda f: f.box[2] - f.box[0])
            m = align.similarity(f.landmarks, 128)
            a, b = align.crop(img, m, 128), align.crop(out, m, 128)
            ca, cb = enc(np.stack([a, b]))
            row["d_same"] = float(np.linalg.norm(ca - cb))
            others = [x for x in files[r["identity"]] if x != r["file"]][:limit_other]
            if others:
                co = enc(np.stack([read(x) for x in others]))
                row["d_other"] = float(np.linalg.norm(co - cb, axis=1).min())
            at = est(np.stack([a, b]))
            row.update(male=[float(at.male[0]), float(at.male[1])], age=[float(at.age[0]), float(at.age[1])])
            if others:
                ao = est(read(others[0])[None])
                row.update(pair_male=float(ao.male[0]), pair_age=float(ao.age[0]))
        back = FaceRecoverer(p, [decode_payload(x.track_id, encode_payload(x), shapes) for x in recs]).process(0, out) \
            if recs else out
        row["recovered_psnr"] = psnr(back, img)
        if save is not None:
            save.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(save / f"{mode}_{Path(r['file']).stem}.jpg"), np.hstack([img, out, back])[:, :, ::-1])
        rows.append(row)
        if (i + 1) % 20 == 0:
            print(f"  {mode}: {i + 1}/{len(picked)} ({time.time() - t0:.0f} s)", file=sys.stderr)
    return {**summarise(rows, time.time() - t0), "rows": rows}


def summarise(rows: list[dict], seconds: float) -> dict:
    faces = sum(r["faces"] for r in rows)
    measured = [r for r in rows if "male" in r]
    pair = [r for r in measured if "pair_male" in r]
    share = lambda xs: float(np.mean(xs)) if len(xs) else float("nan")  # noqa: E731
    return {
        "photos": len(rows), "faces": faces, "seconds": round(seconds, 1),
        "blurred_share": share([r["blurred"] / max(1, r["faces"]) for r in rows]),
        "blurred_why": {k: int(sum(r.get(k, 0) for r in rows))
                        for k in ("profile", "small_or_cut", "not_face", "weak_or_failed")},
        "replaced_measured": len(measured),
        "protected_same_photo": share([r["d_same"] > 0.6 for r in measured]),
        "protected_other_photos": share([r["d_other"] > 0.6 for r in measured if "d_other" in r]),
        "gender_kept": share([(r["male"][0] > 0.5) == (r["male"][1] > 0.5) for r in measured]),
        "age_within_10": share([abs(r["age"][0] - r["age"][1]) <= 10 for r in measured]),
        "age_change_median": float(np.median([abs(r["age"][0] - r["age"][1]) for r in measured])) if measured else None,
        "same_person_gender": share([(r["male"][0] > 0.5) == (r["pair_male"] > 0.5) for r in pair]),
        "same_person_age_within_10": share([abs(r["age"][0] - r["pair_age"]) <= 10 for r in pair]),
        "steered": int(sum(r["steered"] for r in rows)), "redrawn": int(sum(r["redrawn"] for r in rows)),
        "recovered_psnr_min": float(min(r["recovered_psnr"] for r in rows)),
        "recovered_psnr_median": float(np.median([r["recovered_psnr"] for r in rows])),
        "recovered_below_38": int(sum(r["recovered_psnr"] < 38 for r in rows)),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=100)
    ap.add_argument("--modes", default="keep,random")
    ap.add_argument("--name", default="cover")
    ap.add_argument("--only", default="", help="comma-separated parts of file names: protect only those photos")
    ap.add_argument("--save", type=Path, help="a folder for each photo's original | output | recovered picture")
    args = ap.parse_args()
    if not (FACES / "manifest.tsv").exists():
        print(f"skipped: {FACES} not present")
        return 0
    picked, files = photos(args.limit)
    res = {"machine": machine(), "photos": args.limit, "modes": {}}
    for mode in args.modes.split(","):
        res["modes"][mode] = run(mode, picked, files, only=tuple(x for x in args.only.split(",") if x),
                                 save=args.save)
        print(mode, json.dumps({k: v for k, v in res["modes"][mode].items() if k != "rows"}), file=sys.stderr)
    write(res, args.name)
    return 0


def write(res: dict, name: str) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps(res, indent=2))
    f = lambda v: f"{100 * v:.1f}%" if isinstance(v, float) else str(v)  # noqa: E731
    lines = [f"# The cover of every face: {res['photos']} eval photos ({res['machine']})", "",
             "| --attributes | blurred (profile / cut, small / no face found by the mesh / no fake far enough or "
             "failed) | protected: same photo / other photos | gender kept | age within 10 y (median change) | same person, two photos: gender / "
             "age within 10 | recovered whole picture: min / median dB (< 38 dB) | s |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for mode, m in res["modes"].items():
        w = m["blurred_why"]
        lines.append(f"| {mode} | {f(m['blurred_share'])} ({w['profile']} / {w['small_or_cut']} / "
                     f"{w.get('not_face', 0)} / {w['weak_or_failed']}) | {f(m['protected_same_photo'])} / "
                     f"{f(m['protected_other_photos'])} | "
                     f"{f(m['gender_kept'])} | {f(m['age_within_10'])} ({m['age_change_median']:.1f} y) | "
                     f"{f(m['same_person_gender'])} / {f(m['same_person_age_within_10'])} | "
                     f"{m['recovered_psnr_min']:.1f} / {m['recovered_psnr_median']:.1f} ({m['recovered_below_38']}) | "
                     f"{m['seconds']:.0f} |")
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    raise SystemExit(main())

"""The benchmark's report: NAME.md (figures and ratios) and the PNG figures (a frame strip, latency bars)."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def strip_png(path: Path, columns: list[tuple[str, np.ndarray]], height: int = 300) -> None:
    """One row of labelled frames, side by side."""
    tiles = []
    for label, img in columns:
        h, w = img.shape[:2]
        tile = cv2.resize(img, (int(w * height / h), height), interpolation=cv2.INTER_AREA)
        cv2.rectangle(tile, (0, 0), (tile.shape[1], 28), (0, 0, 0), -1)
        cv2.putText(tile, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    cv2.imwrite(str(path), np.concatenate(tiles, 1)[:, :, ::-1])


def bars_png(path: Path, stages: dict, title: str) -> bool:
    """Horizontal bars of p50 per stage with the p95 as a whisker (matplotlib; False when it is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    names = list(stages)
    p50 = [stages[k]["p50"] for k in names]
    p95 = [stages[k]["p95"] for k in names]
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(names) + 1.2))
    ax.barh(names, p50, xerr=[np.zeros(len(names)), np.maximum(0, np.subtract(p95, p50))], color="#4a7ab5",
            capsize=3)
    ax.invert_yaxis()
    ax.set_xlabel("ms per call (bar: p50, whisker: p95)")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True


def _backend_row(d: dict) -> dict:
    return {"fps": d["fps"], "frame_p50_ms": d["process_ms"]["p50"], "frame_p95_ms": d["process_ms"]["p95"],
            "difp_p50_ms": d["stages_ms"].get("difp", {}).get("p50"), "leaks": d["leaks"],
            "faces_checked": d["faces_checked"]}


def markdown(r: dict, command: str) -> str:
    d = r["difp"]
    st = d["identity_stability"]
    lines = [f"# Benchmark: {r['clip']} ({d['size']}, {d['frames']} frames)", "",
             f"`{command}` on {r['machine']}; backend {d['backend']}, keys {'on' if r['keys'] else 'off'}.", "",
             "| stage | p50 ms | p95 ms | calls |", "| --- | --- | --- | --- |"]
    for k, v in d["stages_ms"].items():
        lines.append(f"| {k} | {v['p50']:.1f} | {v['p95']:.1f} | {v['n']} |")
    lines += ["", f"- per frame (detect → blend): p50 {d['process_ms']['p50']:.1f} ms, p95 {d['process_ms']['p95']:.1f} ms",
              f"- end to end: **{d['fps']:.2f} fps**, real-time factor {d['realtime_factor']:.2f} at "
              f"{d['clip_fps']:.2f} fps; peak RSS {r['peak_rss_mb']:.0f} MB",
              f"- faces covered {d['faces']} in {d['tracks']} tracks (carried {d['carried']}, blurred {d['blurred']}: "
              f"{d.get('blurred_profiles', 0)} profiles, {d.get('blurred_small_or_cut', 0)} too small or cut, "
              f"{d.get('blurred_not_faces', 0)} not faces (mesh), the rest failed closed; blurred share of the faces "
              f"that are not profiles "
              f"**{d.get('blurred_share_not_profile', 0):.1%}**); "
              f"identity leaks **{d['leaks']} of {d['faces_checked']}** checked faces"]
    if st["same_fake_share"] is not None:
        lines.append(f"- identity stability: each track's fake face stays the same person (dlib L2 < 0.6 to its "
                     f"first) in {st['same_fake_share']:.0%} of checked frames; mean L2 to the track's mean "
                     f"{st['mean_l2_to_track_mean']:.2f} ({st['tracks_checked']} tracks)")
    dt = d.get("detail") or {}
    if dt.get("mid") is not None:
        lines.append(f"- detail in the frame (face box, output / original, median of {dt['faces']}): mid band "
                     f"**{dt['mid']:.2f}**, high band **{dt['high']:.2f}** (goals 0.6-1.5 and <= 2.0)")
    fl = d.get("flicker") or {}
    if fl.get("ratio") is not None:
        lines.append(f"- flicker: consecutive face crops differ by {fl['output_mad']:.2f} (0-255) in the output and "
                     f"{fl['original_mad']:.2f} in the original: ratio **{fl['ratio']:.2f}** ({fl['pairs']} pairs)")
    if r.get("backends"):
        lines += ["", "| backend (whole pipeline) | fps | per frame p50 / p95 ms | DIFP keyframe p50 ms | leaks |",
                  "| --- | --- | --- | --- | --- |"]
        for b, v in r["backends"].items():
            lines.append(f"| {b} | {v['fps']:.2f} | {v['frame_p50_ms']:.1f} / {v['frame_p95_ms']:.1f} | "
                         f"{v['difp_p50_ms']:.1f} | {v['leaks']} of {v['faces_checked']} |")
        lines.append("")
    if r.get("deface"):
        df = r["deface"]
        lines.append(f"- deface on the same clip, same run: {df['fps']:.2f} fps (whole command); difp-stream / "
                     f"deface = **{r['fps_ratio_difp_over_deface']:.2f}**; deface leaks {df['leaks']} of "
                     f"{df['faces_checked']}; frames where a face is still detectable after deface "
                     f"{df['frames_with_detectable_face']:.0%} (difp-stream keeps a face in place: utility)")
    else:
        lines.append("- deface: not installed (`pip install deface`), no side-by-side")
    return "\n".join(lines) + "\n"

"""Training data: a folder of aligned crops with a ``manifest.tsv`` (the format of shared/data/faces)."""
from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass
class FaceSet:
    images: np.ndarray  # uint8 [N, R, R, 3] RGB
    identities: np.ndarray  # int [N] identity index
    names: list[str]  # identity name per index
    descriptors: np.ndarray | None  # float32 [N, 128] recognition embeddings (dlib), if known
    files: list[str]


def read_manifest(root: str | Path) -> list[dict]:
    path = Path(root) / "manifest.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: a training folder needs a manifest.tsv (file, identity, split, ...)")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    if not rows or "file" not in rows[0] or "identity" not in rows[0]:
        raise ValueError(f"{path}: needs at least the columns 'file' and 'identity'")
    return rows


def load_faces(root: str | Path, split: str | None, resolution: int, cache_dir: str | Path | None = None,
               limit: int | None = None) -> FaceSet:
    """Read (and cache as .npy) the crops of one split, resized to ``resolution``."""
    root = Path(root)
    rows = read_manifest(root)
    idx = [i for i, r in enumerate(rows) if split is None or r.get("split", "train") == split]
    if limit:
        idx = idx[:limit]
    if not idx:
        raise ValueError(f"{root}: no rows in split {split!r}")
    files = [rows[i]["file"] for i in idx]
    key = hashlib.sha1(("\n".join(files) + f"|{resolution}|{root.resolve()}").encode()).hexdigest()[:16]
    cache = Path(cache_dir) / f"faces_{key}.npy" if cache_dir else None
    if cache is not None and cache.is_file():
        images = np.load(cache)
    else:
        images = np.empty((len(idx), resolution, resolution, 3), np.uint8)
        for j, f in enumerate(files):
            img = cv2.imread(str(root / f), cv2.IMREAD_COLOR)
            if img is None:
                raise ValueError(f"cannot read {root / f}")
            if img.shape[0] != resolution:
                img = cv2.resize(img, (resolution, resolution), interpolation=cv2.INTER_AREA)
            images[j] = img[:, :, ::-1]
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.save(cache, images)
    names = sorted({rows[i]["identity"] for i in idx})
    lookup = {n: k for k, n in enumerate(names)}
    identities = np.array([lookup[rows[i]["identity"]] for i in idx])
    desc = None
    dpath = root / "dlib_descriptors.npy"
    if dpath.is_file():
        desc = np.load(dpath).astype(np.float32)[idx]
    return FaceSet(images, identities, names, desc, files)

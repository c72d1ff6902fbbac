"""Which model a name or folder is: the shipped ones (package data, ``weights/NAME``) and model folders, each
loaded by the class its ``config.json`` declares (``"kind"``): ``"stylespace"``, DIFP in the face generator's style
space (:class:`~difp_stream.difp.stylespace.StyleDIFP`); ``"pixels"`` (or none, as older folders have), DIFP on
pixels through its own VAE (:class:`~difp_stream.difp.models.DIFPModel`, ``difp-stream train``)."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from .models import CONFIG_FILE, DIFPModel
from .stylespace import StyleDIFP

KINDS = {"stylespace": StyleDIFP, "pixels": DIFPModel}
SHIPPED = ("default",)  # model names resolved to package data (weights/NAME): DIFP in the face generator's style space
RETIRED = {"fast": "the distilled 64 px model ('fast') was retired with the 64 px default: the shipped default is "
                   "now photoreal (DIFP in a face generator's style space); drop --model, or pass a folder"}


def default_model_dir(name: str = "default") -> Path:
    return Path(__file__).resolve().parent.parent / "weights" / name


def kind_of(folder: str | Path) -> str:
    """The kind a model folder's config declares (``"pixels"`` when it declares none)."""
    cfg = Path(folder) / CONFIG_FILE
    kind = json.loads(cfg.read_text()).get("kind", "pixels") if cfg.is_file() else "pixels"
    if kind not in KINDS:
        raise ValueError(f"{folder}: unknown model kind {kind!r} (known: {', '.join(KINDS)})")
    return kind


def load_default(device: str | torch.device = "cpu", name: str = "default"):
    """The shipped model (a :class:`~difp_stream.difp.stylespace.StyleDIFP`)."""
    d = default_model_dir(name)
    if not (d / CONFIG_FILE).is_file():
        raise FileNotFoundError(
            f"the shipped DIFP weights {name!r} are not installed ({d}); train a model with `difp-stream styles` "
            "and pass it with --model DIR"
        )
    return _load_dir(d, device)


def _load_dir(d: str | Path, device):
    return KINDS[kind_of(d)].load(d, device)


def load_model(name_or_dir: str | Path | None = None, device: str | torch.device = "cpu"):
    """``None`` or ``"default"``: the shipped model; else a model folder (a style-space or a pixel-space model)."""
    name = str(name_or_dir or "default")
    if not Path(name).is_dir():
        if name in SHIPPED:
            return load_default(device, name)
        if name in RETIRED:
            raise FileNotFoundError(RETIRED[name])
    return _load_dir(name_or_dir, device)


def find_shipped(fingerprint: str, device: str | torch.device = "cpu"):
    """The shipped model whose fingerprint this is, or None (e.g. to open a key file's model)."""
    for name in SHIPPED:
        if (default_model_dir(name) / CONFIG_FILE).is_file():
            model = load_default(device, name)
            if model.fingerprint() == fingerprint:
                return model
    return None

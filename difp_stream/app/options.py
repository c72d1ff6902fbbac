"""Every option of a protect run, as typed dataclasses: the one place that names them, their defaults, ranges and
help. The command line is generated from them (``cli/protect.py``); ``serve`` reads a camera's TOML into the same
objects; both are checked by :func:`check` (ranges, choices, types), once, before anything is loaded.

A field's metadata: ``help``; ``kind`` (int, float, str, bool) where the default is None; ``lo``/``hi`` (inclusive;
``open_lo``: lo itself excluded); ``choices``; ``metavar``. Field names are unique across the sections, so a flat
``{name: value}`` (argparse's namespace, a TOML table) maps onto :class:`Options` by name."""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields
from typing import Literal

from ..difp.config import SamplingConfig
from ..errors import UsageError
from ..pipeline.config import PipelineConfig

BACKENDS = ("auto", "torch", "torch-cuda", "onnxruntime", "tensorrt", "openvino")
RECOVERY = ("faithful", "diffusion", "exact")
IMAGE_KEY_RESOLUTION = 256  # keys of still images restore the face at 256 px (~0.2 s per face on a CPU)


def opt(default, help: str = "", *, kind=None, lo=None, hi=None, open_lo=False, choices=None, metavar=None):
    kind = kind or type(default)
    meta = {"help": help, "kind": kind, "lo": lo, "hi": hi, "open_lo": open_lo, "choices": choices,
            "metavar": metavar}
    return field(default=default, metadata=meta)


_P, _S = PipelineConfig(), SamplingConfig()


@dataclass
class ModelOptions:
    model: str | None = opt(None, "model: 'default' (shipped: photoreal, DIFP in a face generator's style space) or "
                                  "a folder (from `difp-stream styles fit`, or a pixel-space model from `difp-stream "
                                  "train`)", kind=str)
    backend: str = opt("auto", "runtime for the U-Net and VAE (default: auto = on a GPU TensorRT where installed, "
                               "else torch-cuda: PyTorch fp16 with CUDA graphs; on CPU ONNX Runtime, else PyTorch); "
                               "a style-space model renders with OpenVINO (auto, where installed), ONNX Runtime or "
                               "PyTorch", choices=BACKENDS)
    device: str | None = opt(None, "cpu or cuda (default: cuda when available)", kind=str)
    threads: int | None = opt(None, "CPU threads for torch", kind=int, lo=1, hi=1024)
    no_progress: bool = opt(False, "no progress bar")


@dataclass
class SamplingOptions:
    """DIFP sampling; None: the model's recommended value (else the paper's)."""
    steps: int | None = opt(None, f"DDIM steps (paper default: {_S.steps})", kind=int, lo=1, hi=50)
    inversion_steps: int | None = opt(None, "DDIM inversion steps, the keys' schedule: a divisor of --steps "
                                            "(default: the model's, else --steps); fewer is faster, recovery stays "
                                            "exact", kind=int, lo=1, hi=50)
    strength: float | None = opt(None, f"S_n, start at t = S_n*T (paper: {_S.strength})", kind=float, lo=0, hi=1,
                                 open_lo=True)
    s_id: float | None = opt(None, f"identity guidance scale (paper-style default: {_S.s_id})", kind=float, lo=0,
                             hi=100)
    s_sty: float | None = opt(None, f"style guidance scale (default: {_S.s_sty})", kind=float, lo=0, hi=100)
    g_rea: float | None = opt(None, f"realism scale (paper: {_S.g_rea})", kind=float, lo=0, hi=1)
    surrogate_spread: float | None = opt(None, "fake identities drawn with this multiple of the training "
                                               "identities' spread (model's)", kind=float, lo=0, hi=5, open_lo=True)
    start_noise: float | None = opt(None, "share of seeded noise in the fake face's start, 0-1: seeds differ more "
                                          "(default: the model's)", kind=float, lo=0, hi=1)
    adaptive_realism: bool = opt(False, "g_rea per step from SSIM (paper Eq. 14)")


@dataclass
class FaceOptions:
    seed: int = opt(_P.seed, "makes the fake identities reproducible (default: 0)", lo=0)
    threshold: float = opt(_P.threshold, f"detector score threshold (default: {_P.threshold})", lo=0.05, hi=0.99)
    detect_every: int = opt(_P.detect_every, "detect every N frames, track between (default: 1)", lo=1, hi=1000)
    detect_size: int = opt(_P.detect_size, f"longest side for detection (default: {_P.detect_size})", lo=160,
                           hi=8192)
    max_misses: int = opt(_P.max_misses, f"frames a lost face stays covered (default: {_P.max_misses})", lo=0,
                          hi=1000)
    protect_every: int = opt(_P.protect_every, f"full DIFP run per face every N frames, motion carried between "
                                               f"(default: {_P.protect_every}; 1: every frame)", lo=1, hi=1000)
    carry_cutoff: int = opt(_P.carry_cutoff, f"latent low-pass size of the carried motion (default: "
                                             f"{_P.carry_cutoff})", lo=1, hi=64)
    render_every: int = opt(_P.render_every, "photoreal model: at most one new render per face every N frames (the "
                                             "span grows by N with every 6 renders of the face's expression atlas); "
                                             "between, the nearest render of the face's expression atlas (or the "
                                             f"last face) is warped into place (default: {_P.render_every})",
                            lo=1, hi=100, metavar="N")
    expression: Literal["on", "off"] = opt("on" if _P.expression else "off",
                                           "photoreal model: the fake face takes the person's expression each frame "
                                           "(mouth, smile, eyes, brows: face mesh + the model's expression "
                                           "directions); off: pose only (default: on)", choices=("on", "off"))
    attributes: Literal["keep", "random"] = opt(_P.attributes, "photoreal model: the fake face keeps the person's "
                                                "apparent gender and age band (keep), or is whoever the draw gives "
                                                f"(random: more change); default: {_P.attributes}",
                                                choices=("keep", "random"))
    expression_tolerance: float = opt(_P.expression_tolerance, "a new render when no render of the face's atlas is "
                                      "this near the person's expression and pose, in standard deviations (smaller: "
                                      f"closer, slower; default: {_P.expression_tolerance})", lo=0.05, hi=5,
                                      metavar="SD")
    check_every: int = opt(_P.check_every, "photoreal model (one DIFP run per track, then carried): check the "
                                           f"carried fake face against the person every N frames (default: "
                                           f"{_P.check_every})", lo=1, hi=1000, metavar="N")
    max_render: int = opt(_P.max_render, "photoreal model: faces are rendered at their size in the frame, up to "
                                         f"this many pixels (default: {_P.max_render})", choices=(128, 256, 512, 1024))
    min_difp: int = opt(_P.min_difp, "faces narrower than this many pixels are blurred instead of replaced "
                                     f"(default: {_P.min_difp})", lo=0, hi=4096)
    verify_distance: float = opt(_P.verify_distance, "a new face's first fake face must be this far from the "
                                                     "original (dlib L2), else other fake identities are tried "
                                                     f"(default: {_P.verify_distance}; 0: no check)", lo=0, hi=2)
    verify: Literal["every", "first"] = opt("every" if _P.verify_every else "first",
                                            "check the fake face at every DIFP keyframe against every view of the "
                                            "person seen so far (a match is blurred), or only a face's first one "
                                            "(faster); default: every", choices=("every", "first"))
    skip_below: float = opt(_P.skip_below, "reuse a face's last result while its aligned crop changes less than "
                                           f"this mean level (0-255; default: {_P.skip_below}; 0: off)", lo=0, hi=255)


@dataclass
class VideoOptions:
    codec: str | None = opt(None, "video encoder (default: libx264, or the container's own where it takes no H.264, "
                                  "e.g. VP9 for .webm)", kind=str)
    crf: int | None = opt(18, "quality, lower is better (default: 18)", kind=int, lo=0, hi=63)
    preset: str = opt("veryfast", "x264/x265 preset (default: veryfast)")
    keep_metadata: bool = opt(False, "keep the input's descriptive metadata (title, comments, GPS location, camera "
                                     "make and serial, creation time); by default only technical metadata is kept")
    keep_subtitles: bool = opt(False, "copy the input's subtitle tracks (by default dropped: drones and dashcams "
                                      "write GPS, speed and serials as subtitles)")


@dataclass
class LiveOptions:
    live: bool = opt(False, "treat a file input as a camera: read at its frame rate")
    rtsp_transport: str = opt("tcp", "RTSP transport (default: tcp)", choices=("tcp", "udp"))
    timeout: float = opt(5.0, "seconds without data before a source counts as lost", lo=0, hi=3600, open_lo=True)
    retries: int = opt(10, "failed connection attempts in a row before giving up (default: 10; -1: never)", lo=-1)
    retry_delay: float = opt(0.5, "first wait between attempts, doubled up to 8 s", lo=0, hi=60)
    max_latency_ms: float = opt(500.0, "latency budget: a frame later than this gets the fast path (no diffusion; "
                                       "each face gets its track's last protected face, or a blur) (default: 500)",
                                lo=0, hi=1e6, open_lo=True)
    segment_seconds: float = opt(0.0, "cut the file output into segments of this length; the file name is a "
                                      "strftime pattern, e.g. out_%%Y%%m%%d_%%H%%M%%S.mp4 (one key file per "
                                      "segment)", lo=0)
    duration: float = opt(0.0, "stop after this many seconds (default: run on)", lo=0)
    stats_every: float = opt(5.0, "seconds between stats lines (0: none)", lo=0)
    stats_json: str | None = opt(None, "append stats as JSON lines to this file (- for stdout)", kind=str)


@dataclass
class KeyOptions:
    recipient: str | None = opt(None, "public key (from `difp-stream keygen`) the keys are sealed to", kind=str)
    keys: str | None = opt(None, "key file (default: OUTPUT.difpkeys; per image for folders)", kind=str)
    no_keys: bool = opt(False, "irreversible: write no recovery keys")
    sign_key: str | None = opt(None, "Ed25519 key the key files are signed with (from `difp-stream keygen "
                                     "--signer`; default: this host's, made on first use)", kind=str)
    recovery: Literal["faithful", "diffusion", "exact"] = opt(
        "faithful", "faithful (default): the original face region (a video: each track's regions as one H.264 "
                    "stream per 30 frames; an image: a JPEG beside the DIFP key), >= 38 dB in the frame; "
                    "diffusion: the DIFP key alone (compact; restores the model's reconstruction); exact: the DIFP "
                    "key plus the original face pixels, losslessly", choices=RECOVERY)
    faithful_quality: int = opt(75, "quality of faithful recovery's face pixels: a video's regions are coded to "
                                    "reach 39 dB + 0.2 dB per point above 75 (90: 42 dB); an image's are a 4:4:4 "
                                    "JPEG of this quality (default: 75)",
                                lo=50, hi=100, metavar="Q")
    key_resolution: int | None = opt(None, "keys restore the face at this size (a multiple of the model's 64): the "
                                           "original is also encoded at it, so large faces come back sharper (+3 to "
                                           "+8 dB in frame at 256) for one more VAE encode per face and larger keys "
                                           f"(default: {IMAGE_KEY_RESOLUTION} for images and folders, the model's "
                                           "for video and live)", kind=int, lo=32, hi=1024, metavar="PX")
    key_refine: int = opt(0, "fit each key's latent to the original face with N decoder-gradient steps: sharper "
                             "diffusion recovery (29.1 -> 30.8 dB at 12 with 64 px keys) for N more decoder passes "
                             "per face", lo=0, hi=200, metavar="N")


SECTIONS = {"model": ModelOptions, "sampling": SamplingOptions, "faces": FaceOptions, "video": VideoOptions,
            "live": LiveOptions, "keys": KeyOptions}
TITLES = {"model": None, "sampling": "DIFP sampling (defaults: the model's recommended values, else the paper's)",
          "faces": "faces", "video": "video output",
          "live": "live streams (input rtsp://... or any URL; or --live for a file played as a camera)",
          "keys": "recovery keys"}


@dataclass
class Options:
    """One protect run: an input, its output(s) and every section's settings."""
    input: str
    outputs: list[str]
    overwrite: bool = False
    model: ModelOptions = field(default_factory=ModelOptions)
    sampling: SamplingOptions = field(default_factory=SamplingOptions)
    faces: FaceOptions = field(default_factory=FaceOptions)
    video: VideoOptions = field(default_factory=VideoOptions)
    live: LiveOptions = field(default_factory=LiveOptions)
    keys: KeyOptions = field(default_factory=KeyOptions)

    @property
    def output(self) -> str:
        """The output of a file run (one)."""
        return self.outputs[0]

    @classmethod
    def from_flat(cls, values: dict, where: str = "") -> "Options":
        """``{name: value}`` -> Options, every value checked (:func:`check`); an unknown name is a UsageError that
        names it (``where``: the prefix of the names in messages, e.g. ``camera[0].``)."""
        values = dict(values)
        for k in ("input", "outputs"):
            if k not in values:
                raise UsageError(f"{where}{k}: missing")
        outputs = values.pop("outputs")
        if isinstance(outputs, str):
            outputs = [outputs]
        top = {"input": values.pop("input"), "outputs": list(outputs), "overwrite": values.pop("overwrite", False)}
        parts = {name: {} for name in SECTIONS}
        owner = {f.name: name for name, sec in SECTIONS.items() for f in fields(sec)}
        for k, v in values.items():
            if k not in owner:
                raise UsageError(f"{where}{k}: not an option (see `difp-stream -h`)")
            parts[owner[k]][k] = v
        opts = cls(**top, **{name: SECTIONS[name](**parts[name]) for name in SECTIONS})
        check(opts, where)
        return opts


def option_fields():
    """(section name, field) for every option, in the order of ``-h``."""
    for name, sec in SECTIONS.items():
        for f in fields(sec):
            yield name, f


def span(meta: dict) -> str:
    lo, hi = meta["lo"], meta["hi"]
    return f"{'(' if meta['open_lo'] else '['}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}]"


def out_of_range(meta: dict, v: float) -> bool:
    lo, hi = meta["lo"], meta["hi"]
    return not math.isfinite(v) or lo is not None and (v <= lo if meta["open_lo"] else v < lo) or (
        hi is not None and v > hi)


def problem(meta: dict, v) -> str | None:
    """Why ``v`` is not a valid value of the option (None: it is)."""
    kind = meta["kind"]
    if kind is bool:
        return None if isinstance(v, bool) else f"expected true or false, got {v!r}"
    if kind in (int, float):
        if isinstance(v, bool) or not isinstance(v, (int, float)) or kind is int and not isinstance(v, int):
            return f"expected {'a whole number' if kind is int else 'a number'}, got {v!r}"
        if out_of_range(meta, v):
            return f"{v} is out of range {span(meta)}"
    elif not isinstance(v, str):
        return f"expected a string, got {v!r}"
    if meta["choices"] is not None and v not in meta["choices"]:
        return f"invalid choice: {v!r} (choose from {', '.join(map(repr, meta['choices']))})"
    return None


def check(opts: Options, where: str = "") -> None:
    """Every option's type, range and choices; a UsageError names the first bad one."""
    if not isinstance(opts.input, str) or not opts.input:
        raise UsageError(f"{where}input: expected a file or URL, got {opts.input!r}")
    if not opts.outputs or not all(isinstance(o, str) and o for o in opts.outputs):
        raise UsageError(f"{where}outputs: expected one or more files or URLs, got {opts.outputs!r}")
    for name in SECTIONS:
        check_section(getattr(opts, name), where)


def check_section(section, where: str = "") -> None:
    """One section's fields (e.g. serve's ``[model] sampling`` table, a :class:`SamplingOptions`)."""
    for f in fields(section):
        v = getattr(section, f.name)
        if v is None and f.default is None:
            continue
        why = problem(f.metadata, v)
        if why:
            raise UsageError(f"{where}{f.name}: {why}")

"""`difp-stream serve CONFIG`: the TOML file, read and checked before anything starts. Every problem names its key.

    [model]                       # the shared face model service
    name = "default"              # or a model folder
    backend = "auto"
    batch = 8                     # most faces per model call (faces from every camera)
    wait_ms = 10                  # how long a batch waits to fill
    replicas = 1                  # model replicas (one per GPU, or a CPU pool)
    cpus = 1                      # CPUs per replica (Ray resources); gpus = 0
    threads = 0                   # intra-op threads per replica (0: the runtime's default)

    [serve]
    stats_seconds = 5             # status file and metrics refresh
    status_file = "serve.status.json"   # relative to the config file; `difp-stream serve CONFIG --status` reads it

    [defaults]                    # options for every camera (any `difp-stream URL OUTPUT` option, as key = value:
                                  # the fields of app/options.py, checked as the command line checks them)
    recipient = "auditor.pub"
    segment_seconds = 600

    [[camera]]
    name = "lobby"
    input = "rtsp://cam-lobby/stream"
    outputs = ["rtsp://relay/publish/lobby", "/data/lobby_%Y%m%d_%H%M%S.mp4"]
    cpus = 1                      # CPUs per camera worker
    seed = 3                      # per-camera options override [defaults]
"""
from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path

from ..app.options import Options, SamplingOptions, check_section, option_fields
from ..errors import UsageError

MODEL_KEYS = {"name": str, "backend": str, "batch": int, "wait_ms": (int, float), "replicas": int, "cpus": (int, float),
              "gpus": (int, float), "threads": int, "sampling": dict}
SERVE_KEYS = {"stats_seconds": (int, float), "status_file": str}
CAMERA_KEYS = {"name": str, "input": str, "outputs": list, "cpus": (int, float)}
# the numeric fields' ranges (inclusive): a typo such as ``replicas = 1e9`` or ``stats_seconds = -1`` stops at --check
MODEL_RANGES = {"batch": (1, 256), "wait_ms": (0, 10_000), "replicas": (1, 64), "cpus": (0, 1024), "gpus": (0, 64),
                "threads": (0, 1024)}
STATS_RANGE = (0.5, 3600)
CAMERA_CPUS = (0.01, 1024)
NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass
class ModelSpec:
    name: str = "default"
    backend: str = "auto"
    batch: int = 8
    wait_ms: float = 10.0
    replicas: int = 1
    cpus: float = 1.0
    gpus: float = 0.0
    threads: int = 0
    sampling: SamplingOptions | dict = field(default_factory=dict)  # a TOML table, then its SamplingOptions


@dataclass
class Camera:
    name: str
    input: str
    outputs: list[str]
    options: Options  # the camera's protect options ([defaults] merged), checked like the command line's
    cpus: float = 1.0


@dataclass
class ServeConfig:
    path: Path
    model: ModelSpec
    cameras: list[Camera]
    stats_seconds: float = 5.0
    status_file: Path | None = None


def _typed(where: str, d: dict, allowed: dict) -> dict:
    for k, v in d.items():
        if k not in allowed:
            raise UsageError(f"{where}.{k}: unknown key (known: {', '.join(sorted(allowed))})")
        if not isinstance(v, allowed[k]) or isinstance(v, bool) and allowed[k] is not bool:
            raise UsageError(f"{where}.{k}: expected {_kind(allowed[k])}, got {v!r}")
    return d


def _in_range(where: str, v, lo: float, hi: float) -> None:
    if not math.isfinite(v) or not lo <= v <= hi:
        raise UsageError(f"{where}: must be between {lo} and {hi}, got {v!r}")


def _kind(t) -> str:
    names = {str: "a string", int: "an integer", float: "a number", list: "a list", dict: "a table"}
    return " or ".join(names[x] for x in (t if isinstance(t, tuple) else (t,)))


CAMERA_OPTIONS = {f.name for _, f in option_fields()}  # (input, outputs: the camera's own keys)


def _options(where: str, d: dict) -> dict:
    """Camera options are `difp-stream` options (the fields of ``app/options.py``); names checked here, values
    when the camera's :class:`Options` are made."""
    for k, v in d.items():
        if k not in CAMERA_OPTIONS:
            raise UsageError(f"{where}.{k}: not a camera option (see `difp-stream -h`)")
        if isinstance(v, (dict, list)):
            raise UsageError(f"{where}.{k}: expected a single value, got {v!r}")
    return d


def camera_options(inp: str, outputs: list, options: dict, where: str = "camera") -> Options:
    """A camera's options, checked (types, ranges, choices) by the dataclasses the command line is made from. A
    camera writes segments (a restarted worker starts a new file), never over an existing one."""
    opts = Options.from_flat({"input": inp, "outputs": list(outputs), **options}, where=f"{where}.")
    opts.model.no_progress = True
    opts.live.stats_every = opts.live.stats_every or 5.0
    return opts


def _sampling(d: dict) -> SamplingOptions:
    """``[model] sampling = {...}``: the command line's sampling options (``--s-id`` is ``s_id``), checked alike."""
    known = {f.name for f in fields(SamplingOptions)}
    for k in d:
        if k not in known:
            raise UsageError(f"model.sampling.{k}: unknown key (known: {', '.join(sorted(known))})")
    s = SamplingOptions(**d)
    check_section(s, "model.sampling.")
    return s


def load(path: str | Path) -> ServeConfig:
    """Read and check ``path``; a :class:`UsageError` (exit 2) names the first problem, before anything starts."""
    p = Path(path)
    try:
        raw = tomllib.loads(p.read_text())
    except FileNotFoundError:
        raise UsageError(f"config {p} not found") from None
    except tomllib.TOMLDecodeError as e:
        raise UsageError(f"config {p}: not valid TOML ({e})") from None
    for k in raw:
        if k not in ("model", "serve", "defaults", "camera"):
            raise UsageError(f"{k}: unknown section (known: model, serve, defaults, camera)")
    model = ModelSpec(**_typed("model", dict(raw.get("model", {})), MODEL_KEYS))
    for k, (lo, hi) in MODEL_RANGES.items():
        _in_range(f"model.{k}", getattr(model, k), lo, hi)
    model.sampling = _sampling(model.sampling)
    serve = _typed("serve", dict(raw.get("serve", {})), SERVE_KEYS)
    _in_range("serve.stats_seconds", serve.get("stats_seconds", 5.0), *STATS_RANGE)
    defaults = _options("defaults", dict(raw.get("defaults", {})))
    cams = raw.get("camera", [])
    if not isinstance(cams, list) or not cams:
        raise UsageError("camera: at least one [[camera]] table is needed")
    cameras, names, taken = [], set(), {}  # taken: every output (a file pattern, resolved; a URL) -> its camera
    for i, c in enumerate(cams):
        where = f"camera[{i}]"
        for k in ("name", "input", "outputs"):
            if k not in c:
                raise UsageError(f"{where}.{k}: missing")
        own = {k: v for k, v in c.items() if k in CAMERA_KEYS}
        _typed(where, own, CAMERA_KEYS)
        opts = _options(where, {k: v for k, v in c.items() if k not in CAMERA_KEYS})
        if not NAME.match(c["name"]) or c["name"] in names:
            raise UsageError(f"{where}.name: {c['name']!r} must be unique, 1-64 letters, digits, '_', '-' or '.'")
        names.add(c["name"])
        outs = c["outputs"]
        if not outs or not all(isinstance(o, str) and o for o in outs):
            raise UsageError(f"{where}.outputs: a list of RTSP URLs and/or one file pattern")
        _in_range(f"{where}.cpus", c.get("cpus", 1.0), *CAMERA_CPUS)
        for o in outs:  # two writers of one file (or one publish URL) corrupt each other's segments and keys
            ident = o if "://" in o else str(Path(o).expanduser().resolve())
            if o == c["input"] or ident == str(Path(c["input"]).expanduser().resolve()):
                raise UsageError(f"{where}.outputs: {o!r} is the camera's own input")
            if ident in taken:
                who = "this camera (listed twice)" if taken[ident] == c["name"] else f"camera {taken[ident]!r}"
                raise UsageError(f"{where}.outputs: {o!r} is already written by {who} (each output, file pattern "
                                 "or URL, belongs to one camera)")
            taken[ident] = c["name"]
        merged = {**defaults, **opts}
        files = [o for o in outs if "://" not in o]
        if len(files) > 1:
            raise UsageError(f"{where}.outputs: one file pattern at most")
        if files and "%" not in files[0]:  # a restarted worker starts a new file: names must not collide
            raise UsageError(f"{where}.outputs: {files[0]!r} must be a time pattern (e.g. lobby_%Y%m%d_%H%M%S.mp4): "
                             "a camera writes segments, and a restarted worker starts a new one")
        if files and not Path(files[0]).expanduser().parent.is_dir():
            raise UsageError(f"{where}.outputs: folder {Path(files[0]).parent} does not exist")
        if files and not merged.get("segment_seconds"):
            merged["segment_seconds"] = 600
        if merged.get("recipient") and not Path(merged["recipient"]).expanduser().is_file():
            raise UsageError(f"{where}.recipient: {merged['recipient']} not found")
        if files and not merged.get("recipient") and not merged.get("no_keys"):
            raise UsageError(f"{where}.recipient: a camera that writes files needs the public key its recovery keys "
                             "are sealed to (or no_keys = true)")
        opts = camera_options(c["input"], outs, merged, where)
        cameras.append(Camera(c["name"], c["input"], list(outs), opts, float(c.get("cpus", 1.0))))
    status = serve.get("status_file", f"{p.name}.status.json")
    return ServeConfig(p, model, cameras, float(serve.get("stats_seconds", 5.0)),
                       (p.parent / status).resolve())

"""The one place that turns options into a working pipeline: (1) the model, (2) its runtime backend, (3) the
``Protector`` (batched DIFP on aligned crops), (4) the frame pipeline's settings and (5) the frame-level
``FaceProtector``. Built once per run (StreamDiffusion's "prepare once"); per frame only ``FaceProtector.process``
runs. The command line, ``serve``'s camera workers and model replicas and the benchmarks all build here."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..difp import Protector, registry
from ..difp.config import SamplingConfig
from ..difp.identity import DlibIdentityEncoder
from ..difp.protector import check_sampling
from ..errors import UsageError
from ..pipeline import FaceProtector, PipelineConfig
from ..runtime import select
from .options import IMAGE_KEY_RESOLUTION, ModelOptions, Options, SamplingOptions


def load_model(mo: ModelOptions):
    """(1) The model ``mo.model`` names (shipped or a folder) on ``mo.device`` (default: cuda when available)."""
    if mo.threads:
        torch.set_num_threads(mo.threads)
    device = mo.device or ("cuda" if torch.cuda.is_available() else "cpu")
    return registry.load_model(mo.model, device), device


def sampling_config(so: SamplingOptions, model) -> SamplingConfig:
    """The model's recommended sampling with the options' overrides; settings it cannot serve are a usage error."""
    try:  # out-of-range values (e.g. g_rea 2) are a usage error, not a traceback
        s = model.cfg.sampling_config(steps=so.steps, strength=so.strength, s_id=so.s_id, s_sty=so.s_sty,
                                      g_rea=so.g_rea, adaptive_realism=so.adaptive_realism or None,
                                      surrogate_spread=so.surrogate_spread, inversion_steps=so.inversion_steps,
                                      start_noise=so.start_noise)
        check_sampling(model.cfg, s)  # e.g. another s_id for a distilled model
    except ValueError as e:
        raise UsageError(str(e)) from None
    return s


def key_resolution(opts: Options, model, media: str) -> int:
    """The size keys restore faces at: the option, else 256 px for still images (0: the model's own) where the
    model's keys have a resolution (a style-space model's keys are its latents)."""
    if opts.keys.key_resolution is not None:
        return opts.keys.key_resolution
    return IMAGE_KEY_RESOLUTION if media == "image" and model.keys_have_resolution else 0


def make_protector(mo: ModelOptions, so: SamplingOptions, model, device: str, key_refine: int = 0,
                   key_resolution: int = 0) -> tuple[Protector, str]:
    """(2) + (3): the backend ``mo.backend`` asks for (``auto`` resolved, with a one-line fallback) and the
    Protector with the sampling ``so`` sets; returns (Protector, the backend's name)."""
    sampling = sampling_config(so, model)
    backend, used = select(mo.backend, model, device)
    try:
        return Protector(model, sampling, device, backend=backend, key_refine=key_refine,
                         key_resolution=key_resolution), used
    except ValueError as e:  # e.g. a key resolution that is not a multiple of the model's
        raise UsageError(str(e)) from None


def pipeline_config(opts: Options, keys: bool, **extra) -> PipelineConfig:
    """(4) The frame pipeline's settings (``extra``: further :class:`PipelineConfig` fields, for benchmarks)."""
    f, k = opts.faces, opts.keys
    return PipelineConfig(seed=f.seed, detect_every=f.detect_every, threshold=f.threshold, detect_size=f.detect_size,
                          max_misses=f.max_misses, keys=keys, protect_every=f.protect_every,
                          carry_cutoff=f.carry_cutoff, render_every=f.render_every, max_render=f.max_render,
                          check_every=f.check_every, expression=f.expression == "on", attributes=f.attributes,
                          expression_tolerance=f.expression_tolerance,
                          pixels_quality=k.faithful_quality if k.recovery == "faithful" else 0,
                          skip_below=f.skip_below, verify_distance=f.verify_distance, min_difp=f.min_difp,
                          exact=k.recovery in ("exact", "faithful"), verify_every=f.verify == "every", **extra)


@dataclass
class Prepared:
    """What a run builds once: the model, its Protector (or a stand-in with the same calls, e.g. ``serve``'s model
    service) and the identity encoder; :meth:`frame_protector` makes one frame pipeline per output."""
    options: Options
    model: object
    protector: object
    identity: DlibIdentityEncoder
    backend: str = "service"  # the runtime backend's name (a stand-in: its own)

    def frame_protector(self, keys: bool, on_key=None, **extra) -> FaceProtector:
        """(5) The frame-level protector: ``process(index, rgb) -> rgb``."""
        return FaceProtector(self.protector, self.identity, pipeline_config(self.options, keys, **extra),
                             on_key=on_key)

    @property
    def header(self) -> dict:
        """What a key file's header says of the model (never the input: file names can name people)."""
        return {"model": self.model.fingerprint(), "resolution": self.model.cfg.resolution}

    def key_shapes(self) -> dict:
        return self.model.key_shapes(self.protector.key_resolution)


def prepare(opts: Options, media: str = "video", model=None, device: str = "cpu", protector=None) -> Prepared:
    """Everything a run needs, from its options (``model`` on ``device`` / ``protector``: already built ones to use
    instead, e.g. ``serve``'s model service)."""
    if model is None:
        model, device = load_model(opts.model)
    if protector is not None:
        return Prepared(opts, model, protector, DlibIdentityEncoder())
    protector, used = make_protector(opts.model, opts.sampling, model, device, opts.keys.key_refine,
                                     key_resolution(opts, model, media))
    return Prepared(opts, model, protector, DlibIdentityEncoder(), used)

"""The DIFP method: models, schedule, guidance, realism control, surrogate identities, ``Protector``."""
from .config import ModelConfig, SamplingConfig
from .models import DIFPModel
from .registry import SHIPPED, default_model_dir, find_shipped, load_default, load_model
from .protector import FaceKey, ProtectResult, Protector

__all__ = ["ModelConfig", "SamplingConfig", "DIFPModel", "Protector", "FaceKey", "ProtectResult",
           "default_model_dir", "find_shipped", "load_default", "load_model", "SHIPPED"]

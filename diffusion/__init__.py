"""A small-image diffusion lab: noise schedules, a class-conditional U-Net, DDPM and DDIM samplers, training,
checkpoints and evaluation. The public entry point is `Pipeline`.

Usage: from diffusion import Pipeline; images = Pipeline.from_pretrained("checkpoints/fashion-mnist").generate([0, 1])
"""

from .config import DiffusionConfig, SamplingDefaults
from .pipeline import Pipeline
from .schedules import NoiseSchedule
from .unet import UNet, UNetConfig

__all__ = ["DiffusionConfig", "NoiseSchedule", "Pipeline", "SamplingDefaults", "UNet", "UNetConfig"]

"""Shared fixtures: tiny randomly initialised models saved as model directories (fast on a CPU)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import pytest
import torch

from diffusion.checkpoint import save_model_dir
from diffusion.config import DiffusionConfig, SamplingDefaults
from diffusion.unet import UNet, UNetConfig

# torch.compile's CPU backend (inductor) builds C++ kernels; CI installs g++ and checks that these tests ran
needs_cxx = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                               reason="torch.compile on a CPU needs a C++ compiler: apt-get install g++")


FAST = Path(__file__).resolve().parent.parent / "checkpoints" / "fashion-mnist-fast"


@pytest.fixture(scope="session")
def fast():
    """The shipped fast model (0.7 M parameters), in fp32: real properties, checked in seconds."""
    from diffusion.pipeline import Pipeline

    if not (FAST / "model.safetensors").exists():
        pytest.skip("the shipped fast model is not in this checkout")
    return Pipeline.from_pretrained(FAST, precision="fp32")


def tiny_config(image_size: int = 16, channels: int = 1, num_classes: int = 3, patch_size: int = 1,
                T: int = 50, prediction_type: str = "v", schedule: str = "cosine") -> DiffusionConfig:
    unet = UNetConfig(image_size=image_size, in_channels=channels, num_classes=num_classes, base_channels=8,
                      channel_mult=[1, 2], num_res_blocks=1, patch_size=patch_size, norm_groups=4,
                      attention_levels=[1], attention_heads=2)
    return DiffusionConfig(unet=unet, num_timesteps=T, schedule=schedule, prediction_type=prediction_type,
                           dataset="digits", class_names=[f"class {i}" for i in range(num_classes)],
                           sampling=SamplingDefaults(sampler="ddim", steps=5, guidance_scale=2.0))


def randomised(model: UNet, seed: int = 0) -> UNet:
    """Give the zero-initialised output layers random weights too, so outputs depend on every input."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    return model


@pytest.fixture
def tiny_model_dir(tmp_path):
    config = tiny_config()
    model = randomised(UNet(config.unet))
    return save_model_dir(tmp_path / "tiny", config, model.state_dict())


def make_checkpoints(root, name: str = "tiny") -> Path:
    """root/<name>/ as the app expects a shipped model: config, weights, real example images."""
    from diffusion.data import load_dataset, save_examples

    config = tiny_config()
    directory = save_model_dir(Path(root) / name, config, randomised(UNet(config.unet)).state_dict())
    digits = load_dataset("digits", "test")
    small = type(digits)("digits", digits.images, digits.context[:, :3], digits.labels.clamp(max=2),
                         config.class_names, False)
    save_examples(small, directory / "examples", per_class=2)
    return Path(root)


@pytest.fixture
def checkpoints(tmp_path):
    return make_checkpoints(tmp_path / "checkpoints")

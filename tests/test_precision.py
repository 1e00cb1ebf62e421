"""precision="auto": bf16 autocast only where a timed call shows it clearly faster, decided once per architecture."""

from __future__ import annotations

import math

import pytest
import torch

from diffusion import Pipeline, precision
from diffusion.unet import UNet

from .conftest import tiny_config


@pytest.fixture
def fresh(monkeypatch):
    """An empty decision cache and a CPU that has native bf16, whatever this machine has."""
    monkeypatch.setattr(precision, "_choices", {})
    monkeypatch.setattr(precision, "bf16_is_native", lambda device: True)


def fake_timings(monkeypatch, fp32: float, bf16: float) -> list:
    calls = []

    def measure(model, config, device, batch=precision.MEASURE_BATCH, training=False):
        calls.append((config, training))
        return fp32, bf16
    monkeypatch.setattr(precision, "measure", measure)
    return calls


@pytest.mark.parametrize("bf16_seconds, expected", [(0.05, torch.bfloat16), (0.089, torch.bfloat16),
                                                    (0.095, None), (0.2, None)])
def test_bf16_is_kept_only_when_clearly_faster(fresh, monkeypatch, bf16_seconds, expected):
    fake_timings(monkeypatch, fp32=0.1, bf16=bf16_seconds)
    dtype, reason = precision.choose_autocast(UNet(tiny_config().unet), tiny_config().unet, torch.device("cpu"))
    assert dtype is expected
    assert reason.startswith("bf16 autocast:" if expected else "fp32:") and "against 100.0 in fp32" in reason


def test_decided_once_per_architecture_and_use(fresh, monkeypatch):
    calls = fake_timings(monkeypatch, fp32=0.1, bf16=0.05)
    small, wide = tiny_config().unet, tiny_config().unet
    wide.base_channels = 16
    for config, training in [(small, False), (small, False), (wide, False), (small, True), (small, False),
                             (wide, False), (small, True)]:
        assert precision.choose_autocast(UNet(config), config, torch.device("cpu"), training)[0] is torch.bfloat16
    assert calls == [(small, False), (wide, False), (small, True)]


def test_no_native_bf16_means_fp32_without_timing(monkeypatch):
    monkeypatch.setattr(precision, "_choices", {})
    monkeypatch.setattr(precision, "bf16_is_native", lambda device: False)
    calls = fake_timings(monkeypatch, fp32=1.0, bf16=0.01)
    config = tiny_config().unet
    assert precision.choose_autocast(UNet(config), config, torch.device("cpu")) == (None, "fp32: no native bf16 on cpu")
    assert calls == []


@pytest.mark.parametrize("training", [False, True])
def test_measure_times_both_precisions_and_leaves_the_model_as_it_was(fresh, training):
    """Weights, gradients, train mode and the global random state (which dropout draws from) are untouched."""
    config = tiny_config().unet
    config.dropout = 0.5
    model = UNet(config).train()
    for i, p in enumerate(model.parameters()):
        p.grad = torch.full_like(p, float(i + 1))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    grads = [p.grad.clone() for p in model.parameters()]
    rng = torch.get_rng_state()
    fp32, bf16 = precision.measure(model, config, torch.device("cpu"), batch=4, repeats=2, training=training)
    assert all(math.isfinite(s) and s > 0 for s in (fp32, bf16))
    precision.choose_autocast(model, config, torch.device("cpu"), training)
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(torch.equal(p.grad, g) for p, g in zip(model.parameters(), grads))
    assert torch.equal(torch.get_rng_state(), rng)


def test_fp32_is_timed_in_fp32_even_inside_autocast(fresh, monkeypatch):
    dtypes = []
    config = tiny_config().unet
    model = UNet(config)
    model.register_forward_hook(lambda module, args, out: dtypes.append(out.dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        precision.measure(model, config, torch.device("cpu"), batch=2, repeats=1)
    assert dtypes == [torch.float32, torch.bfloat16] * 2


def test_resolve(fresh, monkeypatch):
    calls = fake_timings(monkeypatch, fp32=0.1, bf16=0.05)
    config = tiny_config().unet
    model, cpu = UNet(config), torch.device("cpu")
    assert precision.resolve("fp32", model, config, cpu) == (None, "fp32: asked for")
    assert precision.resolve("bf16", model, config, cpu, kept="fp32") == (torch.bfloat16, "bf16: asked for")
    assert precision.resolve("auto", model, config, cpu, training=True, kept="fp32") == (
        None, "fp32: kept from the run being resumed")
    assert calls == []
    assert precision.resolve("auto", model, config, cpu, training=True)[0] is torch.bfloat16
    assert calls == [(config, True)]
    with pytest.raises(ValueError, match="precision must be one of"):
        precision.resolve("fp16", model, config, cpu)


def test_pipeline_auto_reports_its_choice(fresh, monkeypatch, tiny_model_dir):
    fake_timings(monkeypatch, fp32=0.1, bf16=0.2)
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    assert pipe.autocast_dtype is None and pipe.precision_reason.startswith("fp32: 200.0 ms per call in bf16")
    fake_timings(monkeypatch, fp32=0.1, bf16=0.01)  # decided already for this architecture: not asked again
    assert Pipeline.from_pretrained(tiny_model_dir).autocast_dtype is None
    asked = Pipeline.from_pretrained(tiny_model_dir, precision="bf16")
    assert asked.autocast_dtype is torch.bfloat16 and asked.precision_reason == "bf16: asked for"

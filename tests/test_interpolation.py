"""Interpolation between samples (DDIM paper, sec. 5.3): the noise paths and their measures, `Pipeline.interpolate`,
the app's function, and on the shipped fast model the properties the Interpolate tab shows: DDIM's frames morph,
DDPM's jump, and DDPM's images hardly depend on x_T."""


import numpy as np
import pytest
import torch

from diffusion import lab
from diffusion.images import OutputFiles
from diffusion.inputs import InputError, Limits
from diffusion.interpolation import detail, frame_changes, interpolate_noise, lerp, path_ratio, slerp
from diffusion.pipeline import Pipeline
from diffusion.registry import ModelRegistry

from .conftest import make_checkpoints



# --------------------------------------------------------------------------------------------------- the paths


def test_slerp_starts_and_ends_at_its_ends_and_keeps_their_norm():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(1, 28, 28, generator=g), torch.randn(1, 28, 28, generator=g)
    b = b * a.norm() / b.norm()  # equal norms: the arc keeps that norm exactly
    w = torch.linspace(0, 1, 9)
    x = slerp(a, b, w)
    assert x.shape == (9, 1, 28, 28) and x.dtype == a.dtype
    torch.testing.assert_close(x[0], a)
    torch.testing.assert_close(x[-1], b)
    torch.testing.assert_close(x.flatten(1).norm(dim=1), a.norm().expand(9), rtol=1e-5, atol=0)


def test_slerp_of_orthogonal_unit_vectors_is_the_quarter_circle():
    a, b = torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0])
    x = slerp(a, b, torch.tensor([0.0, 1 / 3, 0.5, 1.0]))
    angles = torch.atan2(x[:, 1], x[:, 0])
    torch.testing.assert_close(angles, torch.tensor([0.0, torch.pi / 6, torch.pi / 4, torch.pi / 2]))


def test_lerps_middle_noise_has_standard_deviation_near_0_71_and_slerps_near_1():
    """Two independent N(0, I) draws in 784 dimensions: the straight line's midpoint (a + b) / 2 has variance 1/2."""
    stds = {"lerp": [], "slerp": []}
    for seed in range(20):
        g = torch.Generator().manual_seed(seed)
        a, b = torch.randn(784, generator=g), torch.randn(784, generator=g)
        for path in stds:
            stds[path].append(float(interpolate_noise(a, b, torch.tensor([0.5]), path)[0].std()))
    assert abs(np.mean(stds["lerp"]) - 0.5 ** 0.5) < 0.02 and abs(np.mean(stds["slerp"]) - 1) < 0.03, stds


def test_equal_ends_give_that_end_everywhere():
    a = torch.randn(3, 4, 4)
    for path in ("slerp", "lerp"):
        x = interpolate_noise(a, a.clone(), torch.linspace(0, 1, 5), path)
        assert torch.isfinite(x).all()
        torch.testing.assert_close(x, a.expand(5, 3, 4, 4))


@pytest.mark.parametrize("call, message", [
    (lambda: slerp(torch.ones(3), torch.ones(4), torch.tensor([0.5])), "same shape"),
    (lambda: lerp(torch.ones(3), torch.ones(4), torch.tensor([0.5])), "same shape"),
    (lambda: slerp(torch.zeros(3), torch.ones(3), torch.tensor([0.5])), "non-zero ends"),
    (lambda: slerp(torch.ones(3), -2 * torch.ones(3), torch.tensor([0.5])), "opposite ends"),
    (lambda: slerp(torch.ones(3), -torch.ones(3), torch.tensor([1.5])), r"in \[0, 1\]"),
    (lambda: lerp(torch.ones(3), torch.ones(3), torch.tensor([float("nan")])), "finite"),
    (lambda: lerp(torch.ones(3), torch.ones(3), torch.tensor([])), "non-empty"),
    (lambda: interpolate_noise(torch.ones(3), torch.ones(3), torch.tensor([0.5]), "zigzag"), "slerp, lerp"),
])
def test_bad_paths_are_clear_errors(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_the_measures_of_a_path():
    """A steady fade from black to white: each step is 1/4 of the way, the path is as long as the direct change.
    Flicker between black and white: every step is the whole distance, 4x the (zero-free) direct change."""
    fade = torch.linspace(0, 1, 5).view(5, 1, 1, 1).expand(5, 1, 6, 6)
    torch.testing.assert_close(frame_changes(fade), torch.full((4,), 255 / 4, dtype=torch.float64))
    assert path_ratio(fade) == pytest.approx(1.0)
    flicker = torch.tensor([0.0, 1.0, 0.0, 1.0, 0.0, 1.0]).view(6, 1, 1, 1).expand(6, 1, 6, 6)
    assert path_ratio(flicker) == pytest.approx(5.0)
    assert path_ratio(torch.zeros(3, 1, 2, 2)) == 1.0 and path_ratio(flicker[:3]) == float("inf")
    checkerboard = (torch.arange(6)[:, None] + torch.arange(6)[None, :]) % 2
    torch.testing.assert_close(detail(checkerboard.float().view(1, 1, 6, 6)), torch.tensor([255.0],
                                                                                          dtype=torch.float64))
    assert float(detail(fade)[2]) == 0.0


# ------------------------------------------------------------------------------------- Pipeline.interpolate


def test_interpolates_ends_are_the_samples_of_the_two_seeds(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    frames = pipe.interpolate(0, 2, frames=5, noise_seeds=(3, 4), steps=5, guidance_scale=1.5)
    assert frames.shape == (5, 1, 16, 16) and frames.min() >= 0 and frames.max() <= 1
    for i, (label, seed) in enumerate([(0, 3), (2, 4)]):
        alone = pipe.generate([label], sampler="ddim", eta=0.0, steps=5, guidance_scale=1.5,
                              x_T=pipe.noise(1, seed=seed))
        torch.testing.assert_close(frames[[0, -1][i]], alone[0], atol=1e-5, rtol=0)
    same = pipe.interpolate(1, 1, frames=4, noise_seeds=(6, 6), steps=5)
    torch.testing.assert_close(same, same[:1].expand_as(same), atol=1e-5, rtol=0)
    mixed = pipe.interpolate([1.0, 0.0, 0.0], None, frames=3, noise_seeds=(6, 6), steps=5)  # a class fading out
    torch.testing.assert_close(mixed[-1], pipe.generate([None], sampler="ddim", eta=0.0, steps=5,
                                                        x_T=pipe.noise(1, seed=6))[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(frames=1), ValueError, "frames must be an integer of at least 2"),
    (dict(frames=True), ValueError, "frames must be an integer"),
    (dict(noise_seeds=(1,)), ValueError, "two seeds"),
    (dict(noise_seeds=(1, -2)), ValueError, r"noise_seeds must be an integer in \[0, 2\*\*63\)"),
    (dict(noise_seeds=(1, "2")), ValueError, "noise_seeds must be an integer"),
    (dict(path="zigzag"), ValueError, "path must be one of slerp, lerp"),
    (dict(x_T=torch.zeros(2, 1, 16, 16)), TypeError, r"from noise_seeds\): x_T is not one of its arguments"),
    (dict(start=7), ValueError, "class index 7 out of range"),
    (dict(steps=0), ValueError, "steps"),
])
def test_bad_interpolate_arguments_are_clear_errors(tiny_model_dir, kwargs, error, message):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    args = dict(start=0, end=1, frames=3, steps=4) | kwargs
    with pytest.raises(error, match=message):
        pipe.interpolate(args.pop("start"), args.pop("end"), **args)


def test_an_unconditional_model_interpolates_without_classes(tmp_path):
    from diffusion.checkpoint import save_model_dir
    from diffusion.unet import UNet

    from .conftest import randomised, tiny_config

    config = tiny_config(num_classes=0)
    pipe = Pipeline.from_pretrained(save_model_dir(tmp_path / "plain", config, randomised(UNet(config.unet))
                                                   .state_dict()), precision="fp32")
    assert pipe.interpolate(frames=3, steps=4).shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="unconditional"):
        pipe.interpolate(0, 1, frames=3, steps=4)


# ---------------------------------------------------------------------------- on the shipped fast model


def test_ddim_morphs_and_ddpm_jumps(fast):
    """Between two sneakers (seeds 0 and 1), 8 frames: DDIM's path through its frames is barely longer than the
    direct change between its ends, DDPM's (from the same x_T's, 100 steps) is several times that (measured on the
    default model over all ten classes and two seed pairs: 1.06-2.00x against 5.2-13.7x; the fast model: 1.12-1.93x
    against 5.1-16.9x; `benchmarks/interpolation.py`)."""
    sneaker = fast.class_names.index("Sneaker")
    ddim = fast.interpolate(sneaker, sneaker, frames=8, noise_seeds=(0, 1), steps=20)
    ddpm = fast.interpolate(sneaker, sneaker, frames=8, noise_seeds=(0, 1), sampler="ddpm", steps=100, seed=2)
    assert path_ratio(ddim) < 2.5 and path_ratio(ddpm) > 4, (path_ratio(ddim), path_ratio(ddpm))
    assert float(frame_changes(ddpm).mean()) > 2 * float(frame_changes(ddim).mean())


def test_ddpm_images_do_not_depend_on_x_T(fast):
    """The cosine schedule ends at alpha_bar = 2.4e-9: x_T says nothing about x0, and DDPM's first step keeps x_T
    with weight ~0.03 (T steps) or less. Swapping x_T for other noise (same step noise) moves DDPM's images by a
    fraction of a grey level on average; DDIM's by tens of grey levels (measured: 0.03-0.4 against 40)."""
    labels = list(range(10))
    moved = {}
    for sampler, steps in (("ddpm", 100), ("ddim", 20)):
        a, b = (fast.generate(labels, sampler=sampler, steps=steps, eta=0.0, x_T=fast.noise(10, seed=s), seed=7)
                for s in (0, 1))
        moved[sampler] = float((a - b).abs().mean()) * 255
    assert moved["ddpm"] < 1 and moved["ddim"] > 20, moved


def test_lerps_middle_frames_have_less_detail_than_slerps(fast):
    """Frames from lerp's middle noise (standard deviation ~0.71) come out flatter: across five classes, the middle
    frame's detail (mean change between neighbouring pixels) is lower on lerp's path than on slerp's (measured on the
    default model over ten classes and two seed pairs: 0.77x the ends' detail against 1.06x; the fast model: 0.86x
    against 1.04x)."""
    ratios = {}
    for path in ("slerp", "lerp"):
        middles = [float(detail(fast.interpolate(k, k, frames=3, noise_seeds=(0, 1), path=path, steps=20)[1:2]))
                   for k in range(0, 10, 2)]
        ratios[path] = float(np.mean(middles))
    assert ratios["lerp"] < 0.9 * ratios["slerp"], ratios


# ----------------------------------------------------------------------------------------------- the app's work


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return ModelRegistry(make_checkpoints(tmp_path_factory.mktemp("interp") / "checkpoints"), precision="fp32")


def test_the_app_interpolates_and_measures_both_rows(registry):
    r = lab.interpolate(registry, OutputFiles(), "tiny", "class 0", 3, "class 1", 4, 6, "slerp", 5, 7, 2.0)
    assert r.ddim.dtype == np.uint8 and r.ddim.shape == r.ddpm.shape and r.ddim.shape[1] > 5 * r.ddim.shape[0]
    assert "**DDIM 5 (eta 0)**, 6 frames from seed 3 to seed 4 along a slerp path, class 0 to class 1" in r.info
    assert "**DDPM 7** from the same x_T's" in r.info and "Slerp keeps every x_T" in r.info
    assert "The middle frames have" in r.info  # 6 frames: the two middle ones
    two = lab.interpolate(registry, OutputFiles(), "tiny", "class 0", 3, "class 1", 4, 2, "lerp", 5, 0, 2.0)
    assert "middle" not in two.info and "halfway" not in two.info
    pipe = registry.get("tiny")
    direct = pipe.interpolate(0, 1, frames=6, noise_seeds=(3, 4), steps=5, guidance_scale=2.0)
    assert np.array_equal(r.ddim, lab.grid_array(direct, 3 * Limits().display_size, cols=6))
    again = lab.interpolate(registry, OutputFiles(), "tiny", "class 0", 3, "class 1", 4, 6, "slerp", 5, 0, 2.0)
    assert again.ddpm is None and "DDPM" not in again.info and np.array_equal(r.ddim, again.ddim)


@pytest.mark.parametrize("args, message", [
    (dict(class_from="dragon"), "first end's class must be one of class 0, class 1, class 2, no class"),
    (dict(class_to=None), "last end's class must be one of"),
    (dict(frames=1), "frames must be an integer from 2 to 16"),
    (dict(frames=17), "frames must be an integer from 2 to 16"),
    (dict(path="zigzag"), "noise path must be one of slerp, lerp"),
    (dict(ddim_steps=0), "DDIM steps must be an integer from 1 to 50"),
    (dict(ddpm_steps=51), "DDPM steps must be an integer from 0 to 50"),
    (dict(seed_to=-1), "seed of the last end must be an integer"),
    (dict(guidance_scale=float("inf")), "guidance scale must be a number"),
    (dict(frames=16, ddim_steps=50, ddpm_steps=50, cap_passes=1000),  # 16 x 100 x 2 = 3,200 passes
     r"16 images x 100 DDIM \+ DDPM steps x 2 \(guidance\) .* at most 31 DDIM \+ DDPM steps for 16 images"),
])
def test_interpolate_bad_input(registry, args, message):
    call = dict(class_from="class 0", seed_from=0, class_to="class 1", seed_to=1, frames=4, path="slerp",
                ddim_steps=5, ddpm_steps=5, guidance_scale=2.0) | args
    if "cap_passes" in call:
        call["limits"] = Limits(max_tflop=call.pop("cap_passes") * registry.get("tiny").flops_per_image / 1e12)
    with pytest.raises(InputError, match=message):
        lab.interpolate(registry, OutputFiles(), "tiny", **call)

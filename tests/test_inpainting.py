"""Inpainting (DDNM's x0 replacement, `diffusion.inpainting`): the preset regions and mask checks, the algebra of the
masked denoiser, `Pipeline.inpaint` with every sampler (the kept pixels come back exactly, and deterministic DDIM
keeps them on the forward process of the image), the app's function, and on the shipped fast model the property
that matters: the filled pixels follow the kept ones."""


import numpy as np
import pytest
import torch

from diffusion import lab
from diffusion.inpainting import REGIONS, check_mask, masked_denoiser, region_mask, resampled
from diffusion.inputs import InputError, Limits
from diffusion.pipeline import Pipeline
from diffusion.registry import ModelRegistry
from diffusion.samplers import make_plan, sample
from diffusion.schedules import NoiseSchedule

from .conftest import make_checkpoints



def test_the_preset_regions():
    fractions = {name: float(region_mask(name, 28, 28).float().mean()) for name in REGIONS}
    assert fractions["top half"] == fractions["left half"] == fractions["bottom half"] == 0.5
    assert fractions["centre"] == 0.25 and abs(fractions["3 in 4 pixels"] - 0.75) < 0.05
    top = region_mask("top half", 28, 28)[0, 0]
    assert top[:14].all() and not top[14:].any()
    assert (region_mask("top half", 28, 28) ^ region_mask("bottom half", 28, 28)).all()
    assert torch.equal(region_mask("3 in 4 pixels", 28, 28, seed=3), region_mask("3 in 4 pixels", 28, 28, seed=3))
    assert not torch.equal(region_mask("3 in 4 pixels", 28, 28, seed=3), region_mask("3 in 4 pixels", 28, 28))
    with pytest.raises(ValueError, match="region must be one of top half"):
        region_mask("elsewhere", 28, 28)


def test_masks_are_checked():
    shape = (4, 1, 8, 8)
    assert check_mask(torch.ones(8, 8), shape).shape == (1, 1, 8, 8)
    assert check_mask(torch.zeros(4, 1, 8, 8, dtype=torch.bool), shape).dtype == torch.bool
    for bad, message in [(np.ones((8, 8)), "must be a tensor"), (torch.full((8, 8), 0.5), "only 0 and 1"),
                         (torch.ones(8, 7), r"shape \(8, 8\)"), (torch.ones(3, 1, 8, 8), r"\(4, 1, 8, 8\)"),
                         (torch.ones(1, 2, 8, 8), "shape")]:
        with pytest.raises(ValueError, match=message):
            check_mask(bad, shape)


def test_the_masked_denoiser_keeps_the_known_x0_and_a_consistent_eps():
    s = NoiseSchedule.from_name("cosine", 100)
    g = torch.Generator().manual_seed(0)
    known, x_t, x0_net = (torch.randn(2, 1, 6, 6, generator=g) for _ in range(3))
    fill = region_mask("left half", 6, 6)
    t = torch.tensor([40, 40])
    x0, eps = masked_denoiser(lambda x, tt: (x0_net, s.eps_from_x0(x, tt, x0_net)), s, known, fill)(x_t, t)
    assert torch.equal(x0[..., :3], x0_net[..., :3]) and torch.equal(x0[..., 3:], known[..., 3:])
    ab = s.alphas_cumprod[40]
    torch.testing.assert_close(ab.sqrt() * x0 + (1 - ab).sqrt() * eps, x_t)


@pytest.fixture
def tiny(tiny_model_dir):
    return Pipeline.from_pretrained(tiny_model_dir, precision="fp32")


def images(n: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, 1, 16, 16, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("sampler, eta, resample", [("ddpm", 0.0, 1), ("ddim", 0.0, 1), ("ddim", 1.0, 1),
                                                    ("dpm++", 0.0, 1), ("dpm++", 1.0, 1), ("ddpm", 0.0, 3),
                                                    ("ddim", 0.0, 3)])
def test_every_sampler_keeps_the_kept_pixels_exactly(tiny, sampler, eta, resample):
    x = images(3)
    fill = region_mask("centre", 16, 16)
    out = tiny.inpaint(x, fill, [0, 1, 2], sampler=sampler, steps=6, eta=eta, seed=1, resample=resample)
    keep = ~fill.expand_as(x)
    torch.testing.assert_close(out[keep], x[keep], atol=1e-5, rtol=0)
    assert (out[~keep] - x[~keep]).abs().mean() > 0.05  # the centre was generated, not copied


def test_nothing_to_fill_gives_the_images_and_everything_to_fill_is_plain_generation(tiny):
    x = images(2)
    torch.testing.assert_close(tiny.inpaint(x, torch.zeros(16, 16, dtype=torch.bool), [0, 1], steps=5, seed=2), x,
                               atol=1e-5, rtol=0)
    for sampler in ("ddim", "ddpm"):
        filled = tiny.inpaint(x, torch.ones(16, 16), [0, 1], sampler=sampler, steps=5, seed=2)
        torch.testing.assert_close(filled, tiny.generate([0, 1], sampler=sampler, steps=5, seed=2), atol=1e-4,
                                   rtol=0)


def test_deterministic_ddim_keeps_the_known_pixels_on_the_forward_process(tiny):
    """With eta 0 the known pixels of every state are sqrt(ab_t) x0 + sqrt(1 - ab_t) eps_0: the image noised with
    the noise x_T implies at the first timestep, eps_0 = (x_T - sqrt(ab_T) x0) / sqrt(1 - ab_T). Leading spacing
    starts at t = 40 of 50, where sqrt(ab_T) = 0.15 and eps_0 is far from x_T."""
    x = images(2)
    fill = region_mask("right half", 16, 16)
    states = []
    tiny.inpaint(x, fill, [2, 0], sampler="ddim", eta=0.0, steps=5, spacing="leading", seed=4,
                 callback=lambda s: states.append(s))
    x0, x_T = (x * 2 - 1).double(), tiny.noise(2, seed=4).double()
    ab = tiny.schedule.alphas_cumprod.double()
    first = states[0].t
    eps_0 = (x_T - ab[first].sqrt() * x0) / (1 - ab[first]).sqrt()
    assert float(ab[first].sqrt()) > 0.1 and (eps_0 - x_T).abs().max() > 0.1
    for s in states[:-1]:
        expected = ab[s.t_prev].sqrt() * x0 + (1 - ab[s.t_prev]).sqrt() * eps_0
        torch.testing.assert_close(s.x_prev[..., :8].double(), expected[..., :8], atol=2e-5, rtol=0)


def counting(denoise, calls):
    def counted(x, t):
        calls.append(int(t[0]))
        return denoise(x, t)
    return counted


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_resampling_takes_every_step_again_but_the_last(sampler):
    """RePaint with a jump of one step: resample r takes each step r times (the last, to clean data, once), the
    callback still sees one StepInfo per step; resample 1 is the plain sampling loop."""
    from .test_way_back import gaussian_denoiser

    s = NoiseSchedule.from_name("cosine", 100)
    plan = make_plan(sampler, s, 5, "trailing", 1.0)
    x_T = torch.randn(2, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    denoise = gaussian_denoiser(s)
    plain = sample(denoise, x_T, plan, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(resampled(denoise, x_T, plan, s, 1, generator=torch.Generator().manual_seed(1)),
                               plain)
    calls, infos = [], []
    resampled(counting(denoise, calls), x_T, plan, s, 3, generator=torch.Generator().manual_seed(1),
              callback=infos.append)
    ts = [t for t, _ in plan.pairs]
    assert calls == [t for t in ts[:-1] for _ in range(3)] + [ts[-1]]
    assert [(i.index, i.num_steps, i.t) for i in infos] == [(k, 5, t) for k, t in enumerate(ts)]


def test_resampling_keeps_the_forward_marginal_on_gaussian_data():
    """On data x0 ~ N(0, 0.25 I), with the exact denoiser, going back up by q(x_t | x_t_prev) and down again leaves
    the distribution where it was: DDPM over all 1000 steps with resample 4 ends with the data's variance (0.2452
    measured, 0.2486 without resampling). A coarse chain's per-step bias is taken r times: DDPM 10 gives 0.151, and
    0.141 with resample 4."""
    from .test_way_back import gaussian_denoiser

    s = NoiseSchedule.from_name("cosine", 1000)
    plan = make_plan("ddpm", s, 1000, "trailing")
    x_T = torch.randn(4000, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    out = resampled(gaussian_denoiser(s), x_T, plan, s, 4, generator=torch.Generator().manual_seed(1))
    assert abs(float(out.var()) - 0.25) < 0.01, float(out.var())


def test_bad_inpaint_arguments_are_clear_errors(tiny):
    with pytest.raises(ValueError, match="images must hold finite values in"):
        tiny.inpaint(images(1) * 255, torch.ones(16, 16), [0])
    with pytest.raises(ValueError, match="2 images need 2 labels, got 3"):
        tiny.inpaint(images(2), torch.ones(16, 16), [0, 1, 2])
    with pytest.raises(TypeError, match="inpaint makes its own starting noise \\(from seed\\): x_T is not one of"):
        tiny.inpaint(images(1), torch.ones(16, 16), [0], x_T=torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="mask must have shape"):
        tiny.inpaint(images(1), torch.ones(28, 28), [0])
    with pytest.raises(ValueError, match="resample must be an integer of at least 1"):
        tiny.inpaint(images(1), torch.ones(16, 16), [0], resample=0)
    with pytest.raises(ValueError, match="DPM-Solver\\+\\+\\(2M\\) cannot"):
        tiny.inpaint(images(1), torch.ones(16, 16), [0], sampler="dpm++", resample=2)


# ---------------------------------------------------------------------------- on the shipped fast model


def shipped_examples(pipe: Pipeline) -> tuple[torch.Tensor, list[int]]:
    """The model's 30 shipped real examples, (30, 1, 28, 28) in [0, 1], and their classes."""
    from .test_way_back import examples

    per_class = [examples(pipe, k) for k in range(len(pipe.class_names))]
    return torch.cat(per_class), [k for k, x in enumerate(per_class) for _ in range(len(x))]


def test_the_filled_pixels_follow_the_kept_ones_and_resampling_makes_them_agree(fast):
    """The 30 shipped examples with 3 in 4 pixels generated anew toward their own class (DDIM 20): the filled pixels
    land closer to the originals than those of a fresh sample of the same class pasted in, and much closer again
    with resampling (measured on the default model over 100 test images with DDIM 20 resampled 5 times and
    DDIM 50: 16.8 and 35.7 grey levels, against 48.1 pasted; `benchmarks/inpainting.py`)."""
    x, labels = shipped_examples(fast)
    fill = region_mask("3 in 4 pixels", 28, 28)
    run = dict(sampler="ddim", steps=20, eta=0.0, seed=0)
    errors = {}
    for name, out in [("pasted", fast.generate(labels, **run)), ("inpainted", fast.inpaint(x, fill, labels, **run)),
                      ("resampled", fast.inpaint(x, fill, labels, resample=4, **run))]:
        errors[name] = float((out - x).abs()[fill.expand_as(x)].mean()) * 255
    # measured here: 21.4 resampled 4 times, 35.7 in one take, 50.9 pasted
    assert errors["resampled"] < 0.7 * errors["inpainted"] and errors["inpainted"] < 0.8 * errors["pasted"], errors


# ----------------------------------------------------------------------------------------------- the app's work


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return ModelRegistry(make_checkpoints(tmp_path_factory.mktemp("fill") / "checkpoints"), precision="fp32")


def test_the_app_fills_in_a_region(registry):
    pipe = registry.get("tiny")
    example = lab.example_choices(pipe)[4]  # class 2
    r = lab.fill_in(registry, "tiny", example, None, "left half", "ddim", 6, 2, lab.OWN_CLASS, 2.0, 5)
    assert ("**DDIM 6 steps** toward its own class, class 2, guidance 2, each but the last (to clean data) taken 2 "
            "times (RePaint resampling): the left half (50% of the pixels)") in r.info
    assert r.masked.shape == r.filled.shape and r.masked.dtype == np.uint8
    x0, k = lab.source_image(pipe, example, None, Limits())
    direct = pipe.inpaint((x0 + 1) / 2, region_mask("left half", 16, 16), [k], sampler="ddim", steps=6, eta=0.0,
                          guidance_scale=2.0, seed=5, resample=2)
    assert np.array_equal(r.filled, lab.grid_array(direct, Limits().display_size // 2))
    none = lab.fill_in(registry, "tiny", example, None, "centre", "dpm++", 6, 1, lab.NO_CLASS, 2.0, 5)
    assert "with no class, guidance 1, each taken once:" in none.info and "Resample more than once" in none.info


@pytest.mark.parametrize("args, message", [
    (dict(region="elsewhere"), "region to fill must be one of top half"),
    (dict(region=None), "region to fill must be one of"),
    (dict(steps=0), "steps must be an integer from 1 to 50"),
    (dict(sampler="heun"), "sampler must be one of"),
    (dict(toward="dragon"), "denoise toward must be one of"),
    (dict(seed=-1), "seed must be an integer"),
    (dict(example=None), "choose an example image or upload one"),
    (dict(guidance_scale=float("nan")), "guidance scale must be a number"),
    (dict(resample=0), "resample must be an integer from 1 to 10"),
    (dict(resample=2, sampler="dpm++"), "DPM-Solver\\+\\+\\(2M\\) cannot"),
    (dict(resample=10, steps=50, cap_passes=999), r"x 10 runs \(resampling\) .* at most 49 steps for 1 image"),
])
def test_fill_in_bad_input(registry, args, message):
    call = dict(example="class 1 #0", upload=None, region="top half", sampler="ddim", steps=5, resample=1,
                toward=lab.OWN_CLASS, guidance_scale=2.0, seed=0) | args
    if "cap_passes" in call:
        call["limits"] = Limits(max_tflop=call.pop("cap_passes") * registry.get("tiny").flops_per_image / 1e12)
    with pytest.raises(InputError, match=message):
        lab.fill_in(registry, "tiny", **call)

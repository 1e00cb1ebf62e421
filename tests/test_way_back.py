"""The way back from x_t: sampling from an intermediate timestep (SDEdit) and DDIM inversion, from the plans up to the
app's functions, and on the shipped fast model, where the properties are real ones: a round trip returns the image,
a high t with another class makes that class, a low t keeps the image's own."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from diffusion import lab
from diffusion.images import to_uint8
from diffusion.inputs import InputError, Limits
from diffusion.pipeline import Pipeline
from diffusion.registry import ModelRegistry
from diffusion.samplers import ddim, ddim_inversion_plan, make_plan, sample, timesteps
from diffusion.schedules import NoiseSchedule

ROOT = Path(__file__).resolve().parent.parent
FAST = ROOT / "checkpoints" / "fashion-mnist-fast"
CLASSIFIER = ROOT / "checkpoints" / "classifiers" / "fashion-mnist"


def gaussian_denoiser(schedule, c2=0.25):
    """The exact denoiser of data x0 ~ N(0, c2 I): E[x0 | x_t] = sqrt(ab) c2 / (ab c2 + 1 - ab) x_t."""
    ab = schedule.alphas_cumprod.double()

    def denoise(x_t, t):
        a = ab[t][:, None, None, None]
        x0 = a.sqrt() * c2 / (a * c2 + 1 - a) * x_t
        return x0, (x_t - a.sqrt() * x0) / (1 - a).sqrt()
    return denoise


@pytest.mark.parametrize("sampler, eta", [("ddpm", 0.0), ("ddim", 0.0), ("ddim", 1.0), ("dpm++", 0.0), ("dpm++", 1.0)])
def test_an_explicit_grid_is_the_same_plan_as_its_spacing(sampler, eta):
    s = NoiseSchedule.from_name("cosine", 1000)
    grid = timesteps(1000, 20, "quadratic")
    assert make_plan(sampler, s, 20, "trailing", eta, grid) == make_plan(sampler, s, 20, "quadratic", eta)


def test_ddim_inversion_plan_climbs_the_grid():
    s = NoiseSchedule.from_name("cosine", 1000)
    ts = timesteps(1000, 10, "trailing")
    plan = ddim_inversion_plan(s, ts)
    assert plan.pairs == list(zip(ts[:-1], ts[1:])) and plan.sigma == [0.0] * 9 and len(plan) == 9
    ab = s.alphas_cumprod.double()
    assert plan.coef_x0[-1] == pytest.approx(float(ab[999].sqrt())) and plan.coef_eps[0] ** 2 == pytest.approx(
        1 - float(ab[ts[1]]))
    with pytest.raises(ValueError, match="at least 2"):
        ddim_inversion_plan(s, [999])
    with pytest.raises(ValueError, match="strictly increasing"):
        ddim_inversion_plan(s, [500, 100])


def test_ddim_inversion_finds_the_odes_noise_on_gaussian_data():
    """For Gaussian data the probability-flow ODE is linear: x_t / sqrt(ab_t c2 + 1 - ab_t) is constant along it, so
    the exact x_T of a data point is known. Inversion approaches it as the steps grow, and DDIM from the inverted
    x_T gives the data back, ever more closely."""
    s = NoiseSchedule.from_name("cosine", 1000)
    c2 = 0.25
    denoise = gaussian_denoiser(s, c2)
    x0 = torch.randn(64, 1, 4, 4, generator=torch.Generator().manual_seed(0)).double() * c2 ** 0.5
    ab_T = float(s.alphas_cumprod.double()[999])
    exact_T = x0 * ((ab_T * c2 + 1 - ab_T) / c2) ** 0.5
    errors, round_trips = [], []
    for steps in (10, 50, 250):
        x_T = sample(denoise, x0, ddim_inversion_plan(s, timesteps(1000, steps)))
        errors.append(float((x_T - exact_T).abs().max()))
        round_trips.append(float((ddim(denoise, x_T, s, steps=steps) - x0).abs().max()))
    # first order in the step size, like DDIM itself: 5x the steps, about a fifth of the error
    assert errors[0] > 3 * errors[1] > 9 * errors[2] and errors[2] < 0.05, errors
    assert round_trips[0] > 3 * round_trips[1] > 9 * round_trips[2] and round_trips[2] < 0.05, round_trips


def test_starting_at_the_top_timestep_is_plain_sampling(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    T = pipe.config.num_timesteps
    x_T = pipe.noise(3, seed=4)
    for kwargs in (dict(sampler="ddim", steps=10, eta=0.0), dict(sampler="dpm++", steps=8, eta=1.0),
                   dict(sampler="ddpm", steps=T)):
        plain = pipe.generate([0, 1, 2], x_T=x_T, seed=5, spacing="trailing", **kwargs)
        top = pipe.generate([0, 1, 2], x_T=x_T, seed=5, spacing="trailing", t_start=T - 1, **kwargs)
        assert torch.equal(plain, top), kwargs


def test_a_start_timestep_runs_it_then_the_runs_timesteps_below_it(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    full = pipe.timesteps("dpm++", 10, "trailing")
    plan = pipe.plan("dpm++", 10, "trailing", t_start=23)
    assert [t for t, _ in plan.pairs] == [23, *reversed([t for t in full if t < 23])] and plan.pairs[-1][1] == -1
    assert plan.coef_x0_last[0] == 0.0  # its first step has no previous prediction: first order
    pipe.config.sampling.tuned_timesteps = {"4": [3, 11, 30, 49]}  # DDIM takes the model's tuned grid
    assert [t for t, _ in pipe.plan("ddim", 4, t_start=20).pairs] == [20, 11, 3]


def test_bad_way_back_arguments_are_clear_errors(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    x = pipe.noise(2, seed=0)
    images = torch.rand(2, *pipe.image_shape)
    with pytest.raises(ValueError, match="t_start must be an integer timestep in"):
        pipe.generate([0, 1], x_T=x, t_start=50)
    with pytest.raises(ValueError, match="t_start needs x_T"):
        pipe.generate([0, 1], t_start=10)
    with pytest.raises(ValueError, match="at least 2"):
        pipe.invert(images, [0, 1], steps=1)
    with pytest.raises(ValueError, match="2 images need 2 labels"):
        pipe.invert(images, [0, 1, 2], steps=5)
    with pytest.raises(ValueError, match="images must have shape"):
        pipe.invert(images[:, :, :8], [0, 1], steps=5)
    with pytest.raises(ValueError, match="finite"):
        pipe.invert(images * float("nan"), [0, 1], steps=5)
    with pytest.raises(ValueError, match="t must be an integer timestep"):
        pipe.add_noise(images, -1)


# ------------------------------------------------------------------------------------------------- shipped model


@pytest.fixture(scope="module")
def fast():
    if not (FAST / "model.safetensors").exists():
        pytest.skip("the shipped fast model is not in this checkout")
    return Pipeline.from_pretrained(FAST, precision="fp32")


def examples(pipe: Pipeline, k: int) -> torch.Tensor:
    """The model's shipped real examples of class k, (N, 1, 28, 28) in [0, 1]."""
    paths = sorted((Path(pipe.directory) / "examples").glob(f"{k}_*.png"))
    return torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255)[None] for p in paths])


def test_a_ddim_round_trip_returns_real_images(fast):
    """Invert real images (three of each of the ten classes) with the plain conditional model, then run DDIM down
    from the inverted noise: the images come back, closer with more steps, and far closer than DDIM from fresh
    noise lands (measured over the 30 shipped examples at 50 steps: 3.9 grey levels of 255, against 53)."""
    images = torch.cat([examples(fast, k) for k in range(10)])
    labels = [k for k in range(10) for _ in range(len(images) // 10)]
    errors = {}
    for steps in (10, 50):
        x_T = fast.invert(images, labels, steps=steps)
        back = fast.generate(labels, sampler="ddim", eta=0.0, steps=steps, guidance_scale=1.0, x_T=x_T)
        errors[steps] = float((back - images).abs().mean()) * 255
    fresh = fast.generate(labels, sampler="ddim", eta=0.0, steps=50, guidance_scale=1.0, seed=0)
    fresh_error = float((fresh - images).abs().mean()) * 255
    assert errors[50] < errors[10] and errors[50] < 6 and fresh_error > 5 * errors[50], (errors, fresh_error)


def test_denoising_from_t_keeps_the_image_low_and_takes_the_class_high(fast):
    """SDEdit with the fast model, judged by the evaluation classifier: T-shirts noised to t = 100 and denoised
    toward Trouser stay T-shirts; noised to t = 850, they become trousers."""
    from diffusion.classifier import load_classifier
    from diffusion.evaluate import score

    classifier = load_classifier(CLASSIFIER)
    shirts = examples(fast, 0).repeat(4, 1, 1, 1)  # 12 images, each noised with its own noise
    trouser = fast.class_names.index("Trouser")
    predicted = {}
    for t in (100, 850):
        x_t = fast.add_noise(shirts, t, seed=1)
        out = fast.generate([trouser] * len(shirts), sampler="ddim", eta=0.0, steps=50, x_T=x_t, t_start=t)
        uint8 = torch.from_numpy(to_uint8(out)).permute(0, 3, 1, 2)
        predicted[t] = score(classifier, uint8, torch.full((len(shirts),), trouser))[0]
    assert predicted[100] <= 0.2 and predicted[850] >= 0.8, predicted


# ------------------------------------------------------------------------------------------------- the app's work


@pytest.fixture
def registry(checkpoints):
    return ModelRegistry(checkpoints, precision="fp32")


def test_denoise_back_starts_from_the_forward_tabs_x_t(registry):
    pipe = registry.get("tiny")
    example = lab.example_choices(pipe)[4]  # class 2
    r = lab.denoise_back(registry, "tiny", example, None, 30, 7, "ddim", 10, lab.OWN_CLASS, 1.0)
    steps_run = len(pipe.plan("ddim", 10, t_start=30))
    assert f"{steps_run} steps" in r.info and "toward its own class, class 2" in r.info and r.image.dtype == np.uint8
    again = lab.denoise_back(registry, "tiny", example, None, 30, 7, "ddim", 10, lab.OWN_CLASS, 1.0)
    assert np.array_equal(r.image, again.image)  # deterministic: same x_t, same result
    other = lab.denoise_back(registry, "tiny", example, None, 30, 7, "ddim", 10, "class 0", 1.0)
    assert "toward class 0" in other.info and not np.array_equal(r.image, other.image)
    x0, k = lab.source_image(pipe, example, None, Limits())
    x_t, _ = lab.noised(pipe, x0, 30, 7)
    direct = pipe.generate([k], sampler="ddim", eta=0.0, steps=10, guidance_scale=1.0, x_T=x_t, t_start=30)
    assert np.array_equal(r.image, lab.grid_array(direct, Limits().display_size // 2))


def test_round_trip_reports_its_error_against_fresh_noise(registry, tmp_path):
    example = lab.example_choices(registry.get("tiny"))[0]
    r = lab.ddim_round_trip(registry, "tiny", example, None, 8, lab.OWN_CLASS, 0)
    assert "DDIM inversion, 8 steps" in r.info and "7 network calls" in r.info and "from fresh noise" in r.info
    assert r.noise.shape == r.reconstruction.shape
    upload = tmp_path / "mine.png"
    Image.fromarray(np.full((30, 30), 200, np.uint8)).save(upload)
    r = lab.ddim_round_trip(registry, "tiny", None, str(upload), 8, lab.OWN_CLASS, 0)
    assert "no class (an upload has no class of its own)" in r.info


@pytest.mark.parametrize("call, message", [
    (lambda reg: lab.denoise_back(reg, "tiny", "class 0 #0", None, 50, 0, "ddim", 10, lab.OWN_CLASS, 1.0),
     "noise level t must be an integer from 0 to 49"),
    (lambda reg: lab.denoise_back(reg, "tiny", "class 0 #0", None, 10, 0, "euler", 10, lab.OWN_CLASS, 1.0),
     "sampler must be one of"),
    (lambda reg: lab.denoise_back(reg, "tiny", "class 0 #0", None, 10, 0, "ddim", 10, "dragon", 1.0),
     "denoise toward must be one of its own class, class 0"),
    (lambda reg: lab.denoise_back(reg, "tiny", None, None, 10, 0, "ddim", 10, lab.OWN_CLASS, 1.0),
     "choose an example image or upload one"),
    (lambda reg: lab.ddim_round_trip(reg, "tiny", "class 0 #0", None, 1, lab.OWN_CLASS, 0),
     "steps must be an integer from 2 to 50"),
    (lambda reg: lab.ddim_round_trip(reg, "tiny", "class 0 #0", None, 20, lab.OWN_CLASS, 0,  # 60 passes, cap 50
                                     limits=Limits(max_tflop=50 * reg.get("tiny").flops_per_image / 1e12)),
     "too much work"),
])
def test_way_back_bad_input(registry, call, message):
    with pytest.raises(InputError, match=message):
        call(registry)


def test_the_way_back_with_an_unconditional_model(tmp_path):
    """No classes: an upload is denoised and inverted unconditionally, and 'no class' is the only choice."""
    from diffusion.checkpoint import save_model_dir
    from diffusion.unet import UNet

    from .conftest import randomised, tiny_config

    config = tiny_config(num_classes=0)
    save_model_dir(tmp_path / "checkpoints" / "plain", config, randomised(UNet(config.unet)).state_dict())
    registry = ModelRegistry(tmp_path / "checkpoints", precision="fp32")
    upload = tmp_path / "mine.png"
    Image.fromarray(np.full((30, 30), 90, np.uint8)).save(upload)
    assert lab.toward_choices(registry.get("plain")) == [lab.NO_CLASS]
    back = lab.denoise_back(registry, "plain", None, str(upload), 20, 0, "dpm++", 10, lab.NO_CLASS, 2.0)
    assert "unconditional" in back.info
    trip = lab.ddim_round_trip(registry, "plain", None, str(upload), 5, lab.NO_CLASS, 0)
    assert "unconditional" in trip.info and "4 network calls" in trip.info

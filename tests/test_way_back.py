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
from diffusion.unet import UNet

ROOT = Path(__file__).resolve().parent.parent
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
    """One network call per step of the DDIM run it inverts: the first from the clean image to ts[0], where
    x_{ts[0]} = sqrt(ab_0) x + sqrt(1 - ab_0) eps_hat; then one DDIM step up per grid interval."""
    s = NoiseSchedule.from_name("cosine", 1000)
    ts = timesteps(1000, 10, "trailing")
    plan = ddim_inversion_plan(s, ts)
    assert plan.pairs == [(ts[0], ts[0]), *zip(ts[:-1], ts[1:])] and plan.sigma == [0.0] * 10 and len(plan) == 10
    ab = s.alphas_cumprod.double()
    assert plan.coef_x0[-1] == pytest.approx(float(ab[999].sqrt())) and plan.coef_eps[1] ** 2 == pytest.approx(
        1 - float(ab[ts[1]]))
    # the first step on a denoiser output consistent with its input x: sqrt(ab0) x + sqrt(1 - ab0) eps
    a, b = float(ab[ts[0]].sqrt()), float((1 - ab[ts[0]]).sqrt())
    x0_hat, eps_hat = torch.tensor(0.3), torch.tensor(-1.2)
    x = a * x0_hat + b * eps_hat
    assert plan.coef_x0[0] * x0_hat + plan.coef_eps[0] * eps_hat == pytest.approx(float(a * x + b * eps_hat))
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
    for steps in (10, 50, 250):  # trailing grids: the clean image's first step reaches t = 99, 19, 3
        x_T = sample(denoise, x0, ddim_inversion_plan(s, timesteps(1000, steps)))
        errors.append(float((x_T - exact_T).abs().max()))
        round_trips.append(float((ddim(denoise, x_T, s, steps=steps) - x0).abs().max()))
    # first order in the step size, like DDIM itself: 5x the steps, about a fifth of the error (4.3x and 4.6x here)
    assert errors[0] > errors[1] > 3 * errors[2] and errors[2] < 0.03, errors
    assert round_trips[0] > 3 * round_trips[1] > 9 * round_trips[2] and round_trips[2] < 0.03, round_trips


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
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")  # T = 50
    assert pipe.timesteps("dpm++", 10, "trailing") == [4, 9, 14, 19, 24, 29, 34, 39, 44, 49]
    plan = pipe.plan("dpm++", 10, "trailing", t_start=27)
    assert [t for t, _ in plan.pairs] == [27, 24, 19, 14, 9, 4] and plan.pairs[-1][1] == -1
    # a grid point less than half a stride below t_start is skipped: 26 -> 19, not a sliver 26 -> 24
    assert [t for t, _ in pipe.plan("dpm++", 10, "trailing", t_start=26).pairs] == [26, 19, 14, 9, 4]
    pipe.config.sampling.tuned_timesteps = {"4": [3, 11, 30, 49]}  # DDIM takes the model's tuned grid
    assert [t for t, _ in pipe.plan("ddim", 4, t_start=22).pairs] == [22, 11, 3]
    assert [t for t, _ in pipe.plan("ddim", 4, t_start=20).pairs] == [20, 3]  # 11 is within half of 11..30


@pytest.mark.parametrize("steps", [10, 20, 50])
def test_dpm_solver_pp_from_any_start_keeps_its_weights_bounded(steps):
    """DPM-Solver++(2M)'s correction is weighted 1 / 2r with r = h_last / h: a start just above a grid point would
    make r tiny. From every t_start its coefficients stay those of a well-spaced run (|weights| < 2)."""
    from .conftest import tiny_config

    config = tiny_config(T=1000)
    pipe = Pipeline(UNet(config.unet), config, precision="fp32")
    worst = max(max(abs(c) for c in pipe.plan("dpm++", steps, "trailing", eta=eta, t_start=t).coef_x0_last)
                for t in range(1, 1000) for eta in (0.0, 1.0))
    assert worst < 2.0, worst


def test_bad_way_back_arguments_are_clear_errors(tiny_model_dir):
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    x = pipe.noise(2, seed=0)
    images = torch.rand(2, *pipe.image_shape)
    with pytest.raises(ValueError, match="t_start must be an integer timestep in"):
        pipe.generate([0, 1], x_T=x, t_start=50)
    with pytest.raises(ValueError, match="t_start needs x_T"):
        pipe.generate([0, 1], t_start=10)
    with pytest.raises(ValueError, match="steps must be an integer in"):
        pipe.invert(images, [0, 1], steps=0)
    with pytest.raises(ValueError, match="steps must be an integer in"):
        pipe.generate([0, 1], sampler="ddim", steps="20")
    with pytest.raises(ValueError, match="2 images need 2 labels"):
        pipe.invert(images, [0, 1, 2], steps=5)
    with pytest.raises(ValueError, match="images must have shape"):
        pipe.invert(images[:, :, :8], [0, 1], steps=5)
    with pytest.raises(ValueError, match="finite values in"):
        pipe.invert(images * float("nan"), [0, 1], steps=5)
    with pytest.raises(ValueError, match="uint8 images: divide by 255"):
        pipe.invert(images * 255, [0, 1], steps=5)
    with pytest.raises(ValueError, match="float tensor"):
        pipe.add_noise((images * 255).to(torch.uint8), 5)
    with pytest.raises(ValueError, match="float tensor"):
        pipe.add_noise(images.numpy(), 5)
    with pytest.raises(ValueError, match="t must be an integer timestep"):
        pipe.add_noise(images, -1)


# ------------------------------------------------------------------------------------------------- shipped model


def examples(pipe: Pipeline, k: int) -> torch.Tensor:
    """The model's shipped real examples of class k, (N, 1, 28, 28) in [0, 1]."""
    paths = sorted((Path(pipe.directory) / "examples").glob(f"{k}_*.png"))
    return torch.stack([torch.from_numpy(np.asarray(Image.open(p), np.float32) / 255)[None] for p in paths])


def test_a_ddim_round_trip_returns_real_images(fast):
    """Invert real images (three of each of the ten classes) with the plain conditional model, then run DDIM down
    from the inverted noise: the images come back, closer with more steps, and far closer than DDIM from fresh
    noise lands (measured over the 30 shipped examples at 50 steps: 3.4 grey levels of 255, against 53)."""
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
    assert f"{steps_run} steps down from t = 30" in r.info and "toward its own class, class 2" in r.info
    assert r.image.dtype == np.uint8
    again = lab.denoise_back(registry, "tiny", example, None, 30, 7, "ddim", 10, lab.OWN_CLASS, 1.0)
    assert np.array_equal(r.image, again.image)  # deterministic: same x_t, same result
    other = lab.denoise_back(registry, "tiny", example, None, 30, 7, "ddim", 10, "class 0", 1.0)
    assert "toward class 0" in other.info and not np.array_equal(r.image, other.image)
    x0, k = lab.source_image(pipe, example, None, Limits())
    x_t, _ = lab.noised(pipe, x0, 30, 7)
    direct = pipe.generate([k], sampler="ddim", eta=0.0, steps=10, guidance_scale=1.0, x_T=x_t, t_start=30)
    assert np.array_equal(r.image, lab.grid_array(direct, Limits().display_size // 2))


def test_ddpm_from_x_t_draws_noise_other_than_x_ts(registry, monkeypatch):
    """The forward tab's x_t is made with noise drawn from the seed; DDPM's first step from it must draw other
    noise, or it would add the very noise it should be removing."""
    pipe = registry.get("tiny")
    x0, _ = lab.source_image(pipe, "class 1 #0", None, Limits())
    _, eps = lab.noised(pipe, x0, 40, 7)
    drawn = []
    real_randn = torch.randn

    def spy(*args, **kwargs):
        out = real_randn(*args, **kwargs)
        drawn.append(out)
        return out

    monkeypatch.setattr(torch, "randn", spy)
    lab.denoise_back(registry, "tiny", "class 1 #0", None, 40, 7, "ddpm", 50, lab.OWN_CLASS, 1.0)
    firsts = [z for z in drawn if z.shape == eps.shape]
    assert len(firsts) >= 2 and torch.equal(firsts[0], eps)  # the first draw makes x_t, as in the forward tab
    assert not any(torch.equal(z, eps) for z in firsts[1:])


def test_round_trip_reports_its_error_against_fresh_noise(registry, tmp_path):
    example = lab.example_choices(registry.get("tiny"))[0]
    r = lab.ddim_round_trip(registry, "tiny", example, None, 8, lab.OWN_CLASS, 0)
    assert "DDIM inversion, 8 steps" in r.info and "8 network calls" in r.info and "from fresh noise" in r.info
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
     r"1 image x 20 steps x 3 runs \(up to noise, down, and down from fresh noise\) x .* at most 16 steps for 1 image"),
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
    assert "unconditional" in trip.info and "5 network calls" in trip.info

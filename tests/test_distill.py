"""Progressive distillation: the teacher grid, the target's algebra against the sampler's own DDIM steps, and a
short run on the real digits that lowers the distillation loss, exports a loadable model and resumes."""

from __future__ import annotations

import json

import pytest
import torch

from diffusion.checkpoint import load_model_dir, save_model_dir
from diffusion.data import to_model_range
from diffusion.distill import DistillConfig, Distiller, distillation_target, main, teacher_grid
from diffusion.model_card import model_card
from diffusion.samplers import ddim_plan, iter_sample
from diffusion.schedules import NoiseSchedule, broadcast
from diffusion.training import TrainingError
from diffusion.unet import UNet
from tests.conftest import randomised, tiny_config


def test_teacher_grid_halves_every_jump_it_can():
    assert teacher_grid([3, 15, 32]) == [1, 3, 9, 15, 24, 32]
    assert teacher_grid([0, 1, 5]) == [0, 1, 3, 5]  # jumps of one timestep (0 -> -1, 1 -> 0) stay one step
    grid = [2, 9, 21, 39, 61, 89, 121, 159, 201, 249]
    fine = teacher_grid(grid)
    assert set(grid) <= set(fine) and len(fine) == 2 * len(grid)
    assert all(b > a for a, b in zip(fine, fine[1:]))


def nonlinear_denoiser(schedule: NoiseSchedule):
    """A made-up, nonlinear and timestep-dependent (x0, eps) predictor, consistent with x_t = a x0 + s eps."""
    def denoise(x_t, t):
        a = broadcast(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
        s = broadcast(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
        x0 = torch.tanh(1.5 * x_t + 0.001 * t.view(-1, 1, 1, 1)) * 0.9
        return x0, (x_t - a * x0) / s
    return denoise


@pytest.mark.parametrize("t, t_mid, t_next", [(40, 30, 17), (999, 900, 800), (3, 1, -1), (12, 12, 5)])
def test_one_ddim_step_on_the_target_lands_where_the_teachers_two_steps_do(t, t_mid, t_next):
    schedule = NoiseSchedule.from_name("cosine", 1000)
    teacher = nonlinear_denoiser(schedule)
    z_t = torch.randn(3, 1, 6, 6, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    schedule = schedule.to("cpu")
    tt = lambda v: torch.full((3,), v, dtype=torch.long)  # noqa: E731
    target = distillation_target(teacher, schedule, z_t, tt(t), tt(t_mid), tt(t_next))
    # the teacher's steps, by the sampler's own DDIM plan on the grid (t_next,) t_mid, t
    grid = sorted({g for g in (t_next, t_mid, t) if g >= 0})
    steps = list(iter_sample(teacher, z_t, ddim_plan(schedule, len(grid), grid=grid)))
    landing = steps[1 if t_mid < t else 0].x_prev
    # the student's single DDIM step t -> t_next from z_t with x0_hat = target
    student = ddim_plan(schedule, 2 if t_next >= 0 else 1, grid=[g for g in (t_next, t) if g >= 0])
    eps = (z_t - schedule.sqrt_alphas_cumprod[t] * target) / schedule.sqrt_one_minus_alphas_cumprod[t]
    one = student.coef_x0[0] * target + student.coef_eps[0] * eps
    torch.testing.assert_close(one, landing, rtol=1e-5, atol=1e-5)
    # two teacher steps ask for another x0 than the teacher's own one-step prediction; a single step, for that one
    assert torch.allclose(target, teacher(z_t, tt(t))[0], atol=1e-4) == (t_mid == t)


def test_target_of_a_point_mass_is_the_point():
    """Data = one image c: the exact denoiser predicts c everywhere, DDIM is exact in any number of steps, and the
    distillation target is c itself."""
    schedule = NoiseSchedule.from_name("cosine", 1000)
    c = torch.linspace(-1, 1, 16, dtype=torch.float64).view(1, 1, 4, 4)

    def exact(x_t, t):
        a = broadcast(schedule.sqrt_alphas_cumprod, t, x_t.ndim)
        s = broadcast(schedule.sqrt_one_minus_alphas_cumprod, t, x_t.ndim)
        return c.expand_as(x_t), (x_t - a * c) / s

    t = torch.tensor([700, 250])
    z_t = schedule.q_sample(c.expand(2, -1, -1, -1), t, torch.randn(2, 1, 4, 4, dtype=torch.float64))
    target = distillation_target(exact, schedule, z_t, t, torch.tensor([500, 120]), torch.tensor([300, -1]))
    torch.testing.assert_close(target, c.expand_as(target), rtol=1e-6, atol=1e-6)


@pytest.fixture
def digits_model(tmp_path):
    config = tiny_config(num_classes=10)  # the digits' ten classes
    return save_model_dir(tmp_path / "teacher", config, randomised(UNet(config.unet)).state_dict())


def fixed_batch_loss(d: Distiller) -> float:
    g = torch.Generator().manual_seed(123)
    x0 = to_model_range(d.data.images[:32])
    jump = d.jumps[torch.randint(0, len(d.jumps), (32,), generator=g)]
    with torch.no_grad():
        return float(d.distill_loss(x0, d.data.context[:32], jump, torch.randn(x0.shape, generator=g)))


def test_distilling_on_digits_lowers_the_loss_exports_and_resumes(digits_model, tmp_path):
    cfg = DistillConfig(model=str(digits_model), steps=5, output_dir=str(tmp_path / "run"), max_steps=20,
                        batch_size=16, lr=2e-3, warmup_steps=0, diffusion_weight=0.0, ema_decay=0.0,
                        log_every=10, save_every=10, progress=False, precision="fp32")
    d = Distiller(cfg)
    before = fixed_batch_loss(d)
    out = d.run()
    assert fixed_batch_loss(d) < 0.7 * before
    config, student = load_model_dir(out)
    assert config == load_model_dir(digits_model)[0]  # the pipeline settings travel unchanged
    record = json.loads((out / "training.json").read_text())["distillation"]
    assert record["steps"] == 20 and record["student_steps"] == [5] and len(record["teacher_grids"]["5"]) == 10
    assert len((tmp_path / "run" / "distill_log.jsonl").read_text().splitlines()) == 2

    cfg.max_steps, cfg.resume = 24, True
    resumed = Distiller(cfg)
    assert resumed.step == 20
    torch.testing.assert_close(resumed.ema.model.state_dict(), student.state_dict())
    resumed.run()
    assert json.loads((out / "training.json").read_text())["distillation"]["steps"] == 24
    card = model_card(out)  # the card says how the student was made, not "? steps in 0 minutes"
    assert "Progressive distillation" in card and "DDIM 5 steps" in card and "24 steps of batch 16" in card
    assert "? steps" not in card


def test_auto_precision_is_timed_and_kept_on_resume(digits_model, tmp_path, monkeypatch):
    import diffusion.precision as precision

    monkeypatch.setattr(precision, "_choices", {})
    monkeypatch.setattr(precision, "bf16_is_native", lambda device: True)
    monkeypatch.setattr(precision, "measure", lambda model, config, device, batch=32, training=False: (0.1, 0.05))
    cfg = DistillConfig(model=str(digits_model), steps=5, output_dir=str(tmp_path / "run"), max_steps=2,
                        batch_size=4, save_every=2, progress=False)
    d = Distiller(cfg)
    assert cfg.precision == "auto" and d.autocast_dtype is torch.bfloat16
    d.run()
    monkeypatch.setattr(precision, "_choices", {})
    monkeypatch.setattr(precision, "measure", lambda model, config, device, batch=32, training=False: (0.1, 0.5))
    cfg.max_steps, cfg.resume = 3, True
    resumed = Distiller(cfg)
    assert resumed.autocast_dtype is torch.bfloat16 and resumed.precision_reason.endswith("kept from the run "
                                                                                          "being resumed")


def test_several_step_counts_distil_each_grid_equally_often(digits_model, tmp_path, monkeypatch):
    """--steps 3 8: the jumps are both grids' steps, and a batch draws each grid about half the time (the 8-step
    grid's jumps are not drawn 8/11 of the time), each of its steps about equally often."""
    cfg = DistillConfig(model=str(digits_model), steps=[3, 8], output_dir=str(tmp_path / "run"), max_steps=1,
                        batch_size=4000, progress=False, precision="fp32")
    d = Distiller(cfg)
    assert [len(g) for g in d.grids.values()] == [3, 8] and len(d.jumps) == 11
    three_steps, eight_steps = d.grids[3], d.grids[8]
    assert d.jumps[:, 0].tolist() == three_steps + eight_steps  # one row per student step, grid after grid
    assert d.jumps[:, 2].tolist() == [-1] + three_steps[:-1] + [-1] + eight_steps[:-1]  # each grid's next timestep
    drawn = []
    monkeypatch.setattr(d, "distill_loss", lambda x0, context, jump, noise: drawn.append(jump) or torch.zeros(()))
    monkeypatch.setattr("diffusion.distill.diffusion_loss",
                        lambda *a: 0 * sum(p.sum() for p in d.student.parameters()))
    d.train_step(0)
    rows = [tuple(r) for r in drawn[0].tolist()]
    three = {tuple(r) for r in d.jumps[:3].tolist()}
    share = sum(r in three for r in rows) / len(rows)
    assert 0.45 < share < 0.55
    counts = [rows.count(tuple(r)) for r in d.jumps[3:].tolist()]
    assert min(counts) > 0.6 * (len(rows) - sum(r in three for r in rows)) / 8
    with pytest.raises(TrainingError, match="distinct step counts"):
        DistillConfig(model=str(digits_model), steps=[5, 5]).validate()
    assert main(["--model", str(digits_model), "--steps", "3", "0", "--output-dir", str(tmp_path / "o")]) == 2


def test_bad_input_is_a_clear_error(tmp_path, digits_model, capsys):
    assert main(["--model", str(tmp_path / "nowhere"), "--output-dir", str(tmp_path / "o")]) == 2
    assert "--model" in capsys.readouterr().err
    with pytest.raises(TrainingError, match="--steps must be a positive integer"):
        Distiller(DistillConfig(model=str(digits_model), steps=0))
    done = DistillConfig(model=str(digits_model), steps=5, output_dir=str(tmp_path / "r"), max_steps=1,
                         batch_size=4, progress=False)
    Distiller(done).run()
    with pytest.raises(TrainingError, match="already holds a distillation run"):
        Distiller(done)  # without --resume: refused, the run is kept
    with pytest.raises(TrainingError, match="start a new --output-dir"):
        Distiller(DistillConfig(model=str(digits_model), steps=4, output_dir=str(tmp_path / "r"), resume=True))

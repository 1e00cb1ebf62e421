"""Agreement with an independent implementation: diffusers' DDPMScheduler, DDIMScheduler and
DPMSolverMultistepScheduler (a test-only dependency) step by step on a fixed dummy network, for every setting where
diffusers is right; where it derives the previous timestep from a fixed stride, the gap is documented and ours is
checked against the equations instead."""

import pytest
import torch

from diffusion.samplers import ddim_plan, dpm_solver_pp_plan, ddpm_plan, sample, time_pairs, timesteps
from diffusion.schedules import NoiseSchedule

diffusers = pytest.importorskip("diffusers")


def run_diffusers(scheduler, model_fn, x_T, steps, generator, **step_kwargs):
    scheduler.set_timesteps(steps)
    x = x_T.clone()
    trajectory = []
    for t in scheduler.timesteps:
        out = model_fn(x, torch.full((x.shape[0],), int(t)))
        x = scheduler.step(out, int(t), x, generator=generator, **step_kwargs).prev_sample
        trajectory.append(x)
    return [int(t) for t in scheduler.timesteps], trajectory


def raw_model(x, t):
    return 0.5 * x * (t / (t + 1.0))[:, None, None, None]


def ours(plan, schedule, prediction_type, x_T, generator):
    trajectory = []
    def denoise(x_t, t):
        return schedule.split_prediction(x_t, t, raw_model(x_t, t), prediction_type)
    sample(denoise, x_T, plan, generator=generator, callback=lambda s: trajectory.append(s.x_prev))
    return [t for t, _ in plan.pairs], trajectory


SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
@pytest.mark.parametrize("spacing, steps", [("leading", 20), ("trailing", 20), ("trailing", 8), ("leading", 1000)])
@pytest.mark.parametrize("eta", [0.0, 1.0])
def test_ddim_matches_diffusers(schedule, prediction_type, spacing, steps, eta):
    s = NoiseSchedule.from_name(schedule, 1000)
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, beta_schedule=SCHEDULES[schedule], clip_sample=False,
                                  set_alpha_to_one=True, steps_offset=0, timestep_spacing=spacing,
                                  prediction_type="epsilon" if prediction_type == "epsilon" else "v_prediction")
    x_T = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    ts_ref, traj_ref = run_diffusers(ref, raw_model, x_T, steps, torch.Generator().manual_seed(5), eta=eta)
    ts, traj = ours(ddim_plan(s, steps, spacing, eta), s, prediction_type, x_T, torch.Generator().manual_seed(5))
    assert ts == ts_ref
    for a, b in zip(traj, traj_ref):
        torch.testing.assert_close(a, b, atol=2e-4, rtol=2e-4)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
@pytest.mark.parametrize("spacing, steps", [("leading", 1000), ("trailing", 100), ("linspace", 100),
                                            ("leading", 50)])
def test_ddpm_matches_diffusers(schedule, prediction_type, spacing, steps):
    s = NoiseSchedule.from_name(schedule, 1000)
    ref = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule=SCHEDULES[schedule], clip_sample=False,
                                  variance_type="fixed_small", timestep_spacing=spacing,
                                  prediction_type="epsilon" if prediction_type == "epsilon" else "v_prediction")
    x_T = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    ts_ref, traj_ref = run_diffusers(ref, raw_model, x_T, steps, torch.Generator().manual_seed(5))
    ts, traj = ours(ddpm_plan(s, steps, spacing), s, prediction_type, x_T, torch.Generator().manual_seed(5))
    assert ts == ts_ref
    for a, b in zip(traj, traj_ref):
        torch.testing.assert_close(a, b, atol=5e-4, rtol=5e-4)


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
@pytest.mark.parametrize("steps", [5, 20, 1000])
@pytest.mark.parametrize("algorithm, eta", [("dpmsolver++", 0.0), ("sde-dpmsolver++", 1.0)])
def test_dpm_solver_pp_2m_matches_diffusers(schedule, prediction_type, steps, algorithm, eta):
    """The ODE solver (eta 0) and the SDE solver (eta 1: same noise draws from the same seeded generator)."""
    s = NoiseSchedule.from_name(schedule, 1000)
    ref = diffusers.DPMSolverMultistepScheduler(
        num_train_timesteps=1000, beta_schedule=SCHEDULES[schedule], algorithm_type=algorithm, solver_order=2,
        solver_type="midpoint", final_sigmas_type="zero", timestep_spacing="trailing", steps_offset=0,
        prediction_type="epsilon" if prediction_type == "epsilon" else "v_prediction")
    x_T = torch.randn(2, 1, 6, 6, generator=torch.Generator().manual_seed(0))
    ts_ref, traj_ref = run_diffusers(ref, raw_model, x_T, steps, torch.Generator().manual_seed(5))
    ts, traj = ours(dpm_solver_pp_plan(s, steps, "trailing", eta), s, prediction_type, x_T,
                    torch.Generator().manual_seed(5))
    assert ts == ts_ref
    for a, b in zip(traj, traj_ref):  # cosine + epsilon divides by alpha_999 ~ 3e-5: compare relatively
        torch.testing.assert_close(a, b, atol=2e-4, rtol=1e-4)


@pytest.mark.parametrize("spacing, steps", [("linspace", 7), ("trailing", 30)])
def test_diffusers_ddim_uses_a_fixed_stride(spacing, steps):
    """diffusers' DDIM derives t_prev = t - T // S, which is wrong whenever the gaps of the sequence are not all
    T // S: linspace spacing (diffusers issues #12633, #11347) and trailing spacing with S not dividing T. Those
    settings are checked against eq. 12 (test_ddim_coefficients_follow_eq_12) instead; this documents the gap."""
    ref = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing=spacing)
    ref.set_timesteps(steps)
    ts = [int(t) for t in ref.timesteps]
    assert ts == timesteps(1000, steps, spacing)[::-1]  # same timesteps ...
    stride_prev = [t - 1000 // steps for t in ts[:-1]]  # ... but diffusers steps to these
    assert stride_prev != ts[1:]
    assert [p for _, p in time_pairs(timesteps(1000, steps, spacing))][:-1] == ts[1:]  # ours: read from the list

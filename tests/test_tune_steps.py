"""Tuned DDIM grids: the dynamic programme is exact, the costs are what they claim, and the pipeline, config and CLI
use the grids only where they apply."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from diffusion.checkpoint import load_config
from diffusion.config import ConfigError, DiffusionConfig
from diffusion.pipeline import Pipeline
from diffusion.samplers import timesteps
from diffusion.schedules import NoiseSchedule
from diffusion.tune_steps import FinePath, fine_path, grid_cost, local_costs, main, optimal_grids

from .conftest import tiny_config


def random_cost(T: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    cost = torch.rand(T, T + 1, generator=g, dtype=torch.float64)
    return torch.where(torch.arange(T + 1)[None, :] <= torch.arange(T)[:, None], cost, torch.inf)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_dynamic_programme_finds_the_cheapest_grid_of_every_length(seed):
    T = 7
    cost = random_cost(T, seed)
    grids = optimal_grids(cost, [1, 2, 3, 4, 7])
    for k, (grid, total) in grids.items():
        brute = min(grid_cost(cost, list(rest) + [T - 1]) for rest in itertools.combinations(range(T - 1), k - 1))
        assert total == pytest.approx(brute) and grid_cost(cost, grid) == pytest.approx(total)
        assert len(grid) == k and grid[-1] == T - 1 and all(b > a for a, b in zip(grid, grid[1:]))
    with pytest.raises(ValueError, match="step counts"):
        optimal_grids(cost, [0])


def test_local_costs_are_the_weighted_error_of_one_ddim_jump():
    T, D = 6, 5
    g = torch.Generator().manual_seed(0)
    path = FinePath(*(torch.randn(n, D, generator=g, dtype=torch.float64) for n in (T + 1, T, T)))
    ab = NoiseSchedule.from_name("cosine", T).alphas_cumprod
    cost = local_costs(path, ab, gamma=0.7)
    for t in range(T):
        for s in range(-1, T):
            if s >= t:
                assert cost[t, s + 1] == torch.inf
                continue
            a_s, b_s = (float(ab[s]) ** 0.5, (1 - float(ab[s])) ** 0.5) if s >= 0 else (1.0, 0.0)
            jump = a_s * path.x0[t] + b_s * path.eps[t]
            weight = (float(ab[s]) if s >= 0 else 1.0) ** 0.7
            assert float(cost[t, s + 1]) == pytest.approx(weight * float(((jump - path.z[s + 1]) ** 2).mean()),
                                                          rel=1e-6, abs=1e-12)


def test_the_fine_path_is_reproduced_exactly_by_its_own_jumps(tiny_model_dir):
    """Jumping one timestep at a time with the recorded predictions re-traces the DDIM path over all timesteps, so
    the all-T grid costs ~0 and beats any coarser grid."""
    pipe = Pipeline.from_pretrained(tiny_model_dir, precision="fp32")
    T = pipe.config.num_timesteps
    path = fine_path(pipe, per_class=1, seed=3)
    cost = local_costs(path, pipe.schedule.alphas_cumprod)
    full = grid_cost(cost, list(range(T)))
    assert full < 1e-9
    grids = optimal_grids(cost, [5, T])
    assert grids[T][0] == list(range(T))
    assert grids[5][1] <= grid_cost(cost, timesteps(T, 5, "quadratic")) + 1e-12


def test_pipeline_uses_a_tuned_grid_only_for_ddim_at_its_step_count(tiny_model_dir):
    config = load_config(tiny_model_dir)
    config.sampling.tuned_timesteps = {"3": [4, 30, 49]}
    config.validate()
    config.to_json_file(tiny_model_dir / "config.json")
    pipe = Pipeline.from_pretrained(tiny_model_dir)
    plan = lambda **kw: pipe.prepare([0], seed=0, **kw)[2]  # noqa: E731
    assert [t for t, _ in plan(sampler="ddim", steps=3).pairs] == [49, 30, 4]
    assert [t for t, _ in plan(sampler="ddim", steps=3, eta=1.0).pairs] == [49, 30, 4]
    spaced = timesteps(50, 3, "quadratic")[::-1]
    assert [t for t, _ in plan(sampler="ddim", steps=3, spacing="quadratic").pairs] == spaced
    assert [t for t, _ in plan(sampler="ddpm", steps=3, spacing="quadratic").pairs] == spaced
    assert [t for t, _ in plan(sampler="ddim", steps=4).pairs] == timesteps(50, 4, config.sampling.spacing)[::-1]


@pytest.mark.parametrize("grids, message", [
    ([1, 2], "map step counts"),
    ({"3": [4, 3, 49]}, "strictly increasing"),
    ({"3": [4, 30, 50]}, r"\[0, 49\]"),
    ({"4": [4, 30, 49]}, "cannot run 4 steps"),
    ({"three": [4, 30, 49]}, "cannot run"),
])
def test_config_rejects_broken_tuned_grids(grids, message):
    data = tiny_config().to_dict()
    data["sampling"]["tuned_timesteps"] = grids
    with pytest.raises(ConfigError, match=message):
        DiffusionConfig.from_dict(data)


def test_cli_writes_the_grids_into_the_model_config(tiny_model_dir, capsys):
    assert main(["--model", str(tiny_model_dir), "--steps", "3", "5", "--per-class", "1", "--write"]) == 0
    out = capsys.readouterr().out
    assert "3 steps: cost" in out and "wrote sampling.tuned_timesteps" in out
    saved = json.loads((tiny_model_dir / "config.json").read_text())["sampling"]["tuned_timesteps"]
    assert sorted(saved) == ["3", "5"] and len(saved["5"]) == 5 and saved["5"][-1] == 49
    assert Pipeline.from_pretrained(tiny_model_dir).generate([0], steps=5, seed=0).shape == (1, 1, 16, 16)


@pytest.mark.parametrize("argv, message", [
    (["--steps", "0"], "--steps must be in"),
    (["--steps", "51"], "--steps must be in"),
    (["--per-class", "0"], "--per-class must be at least 1"),
])
def test_cli_usage_errors(tiny_model_dir, capsys, argv, message):
    with pytest.raises(SystemExit) as e:
        main(["--model", str(tiny_model_dir), *argv])
    assert e.value.code == 2 and message in capsys.readouterr().err


def test_cli_refuses_to_write_into_a_model_that_is_not_a_local_directory(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--model", str(tmp_path / "missing"), "--write"])
    assert "local model directory" in capsys.readouterr().err

"""Tune a model's DDIM timestep grid: for each step count K, the K timesteps whose DDIM jumps best follow the
model's own DDIM path over all T timesteps, found exactly by dynamic programming (in the spirit of "Align Your
Steps", Sabour et al. 2024, and "Optimal Stepsize Distillation", Pei et al. 2025).

1. The fine path: DDIM (eta 0) over every timestep T-1, ..., 0 from a few seeded noises, with the model's saved
   guidance, recording z_t (the state at timestep t), the prediction x0_t and eps_t = (z_t - a_t x0_t) / b_t,
   where a_t = sqrt(alpha_bar_t), b_t = sqrt(1 - alpha_bar_t) (a_{-1} = 1, b_{-1} = 0: z_{-1} is the sample).
2. The local cost of one coarse DDIM jump from timestep t to s < t that uses the prediction at t (DDIM eq. 12,
   eta 0):  z_hat_s = a_s x0_t + b_s eps_t,   c(t, s) = alpha_bar_s^gamma * mean (z_hat_s - z_s)^2.
   The weight alpha_bar_s^gamma discounts errors made at high noise, which the later steps largely undo (the
   flow contracts towards the data there); on the shipped Fashion-MNIST model gamma = 1 beat 0 and 0.5.
3. The grid: the path T-1 = t_K > ... > t_1 > t_0 = -1 of K jumps with the least total cost, by dynamic programming
   over (jumps made, timestep reached): O(K T^2), exact.

Usage:
    python -m diffusion.tune_steps --model checkpoints/fashion-mnist --steps 10 20 50 [--write]

--write stores the grids in the model's config.json (sampling.tuned_timesteps); DDIM then uses them whenever it
runs that many steps without an explicit spacing. Re-evaluate the model afterwards (its evaluation.json records the
grids it was measured with).
"""

from __future__ import annotations

import argparse
import math
import sys
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from .checkpoint import CONFIG_NAME, CheckpointError, atomic_write
from .pipeline import Pipeline
from .samplers import StepInfo, timesteps


@dataclass
class FinePath:
    """DDIM over all T timesteps, flattened per timestep: row t+1 of z (and row t of x0, eps) is timestep t."""

    z: Tensor  # (T + 1, N * C * H * W) float64: z[t + 1] = state at timestep t, z[0] = the final sample
    x0: Tensor  # (T, N * C * H * W) float64: the (guided) prediction of x0 at timestep t
    eps: Tensor  # (T, N * C * H * W) float64: the matching noise prediction


def fine_path(pipe: Pipeline, per_class: int = 4, seed: int = 777) -> FinePath:
    """Run DDIM over every timestep with the model's saved guidance on `per_class` noises per class (or 4 * per_class
    unconditional noises): about T * N network passes (x2 where guided)."""
    T = pipe.config.num_timesteps
    K = pipe.config.num_classes
    labels = torch.arange(K).repeat_interleave(per_class).tolist() if K else None
    N = K * per_class if K else 4 * per_class
    D = N * math.prod(pipe.config.image_shape)
    z = torch.empty(T + 1, D, dtype=torch.float64)
    x0, eps = torch.empty(T, D, dtype=torch.float64), torch.empty(T, D, dtype=torch.float64)

    def record(info: StepInfo) -> None:  # rows are filled as the path runs: nothing else is kept
        t = torch.full((info.x_t.shape[0],), info.t, dtype=torch.long, device=info.x_t.device)
        z[info.t + 1] = info.x_t.reshape(-1).double().cpu()
        x0[info.t] = info.x0.reshape(-1).double().cpu()
        eps[info.t] = pipe.schedule.eps_from_x0(info.x_t, t, info.x0).reshape(-1).double().cpu()
        if info.t_prev == -1:
            z[0] = info.x_prev.reshape(-1).double().cpu()

    pipe.generate(labels, n=None if labels else N, sampler="ddim", steps=T, eta=0.0,
                  spacing="trailing", seed=seed, callback=record)
    return FinePath(z, x0, eps)


def local_costs(path: FinePath, alphas_cumprod: Tensor, gamma: float = 1.0) -> Tensor:
    """(T, T + 1) cost[t, s + 1] = c(t, s) of one DDIM jump from timestep t to s (s = -1: to the sample); inf for
    s >= t. Expanded into inner products so that it is two matrix products, not T^2 differences."""
    T, D = path.x0.shape
    ab = torch.cat([torch.ones(1, dtype=torch.float64), alphas_cumprod.to("cpu", torch.float64)])  # index s + 1
    a, b = ab.sqrt()[None], (1 - ab).sqrt()[None]  # (1, T + 1)
    xx, ee = (path.x0 ** 2).sum(1)[:, None], (path.eps ** 2).sum(1)[:, None]  # (T, 1)
    xe, zz = (path.x0 * path.eps).sum(1)[:, None], (path.z ** 2).sum(1)[None]  # (T, 1), (1, T + 1)
    sq = a * a * xx + b * b * ee + zz + 2 * a * b * xe - 2 * a * (path.x0 @ path.z.T) - 2 * b * (path.eps @ path.z.T)
    cost = sq.clamp_min(0) / D * ab[None] ** gamma
    reachable = torch.arange(T + 1)[None, :] <= torch.arange(T)[:, None]  # s + 1 <= t
    return torch.where(reachable, cost, torch.full_like(cost, float("inf")))


def optimal_grids(cost: Tensor, steps: list[int]) -> dict[int, tuple[list[int], float]]:
    """For each K in `steps`, the increasing timesteps t_1 < ... < t_K = T-1 whose path T-1 -> ... -> t_1 -> -1
    has the least total cost, and that cost. best_k[s + 1] = least cost of reaching s from T-1 in k jumps."""
    T = cost.shape[0]
    if not steps or not all(isinstance(k, int) and 1 <= k <= T for k in steps):
        raise ValueError(f"step counts must be integers in [1, {T}], got {steps!r}")
    best = torch.full((T + 1,), float("inf"), dtype=torch.float64)
    best[T] = 0.0  # at timestep T-1, no jump made
    came_from, grids = [], {}
    for k in range(1, max(steps) + 1):
        total = best[1:, None] + cost  # (T, T + 1): reach t in k - 1 jumps, then jump t -> s
        best, arg = total.min(0)
        came_from.append(arg)
        if k in steps:
            grid, i = [], 0  # walk back from the sample (index 0)
            for back in reversed(came_from):
                t = int(back[i])
                grid.append(t)
                i = t + 1
            grids[k] = (sorted(grid), float(best[0]))
    return grids


def grid_cost(cost: Tensor, grid: list[int]) -> float:
    """Total cost of the path T-1 = grid[-1] -> ... -> grid[0] -> -1."""
    ts = sorted(grid, reverse=True) + [-1]
    return float(sum(cost[t, s + 1] for t, s in zip(ts, ts[1:])))


def tune(pipe: Pipeline, steps: list[int], per_class: int = 4, seed: int = 777, gamma: float = 1.0,
         log=print) -> dict[int, list[int]]:
    """The tuned grids of `pipe` for each step count, logging each one's cost next to the model's spacing's."""
    path = fine_path(pipe, per_class, seed)
    cost = local_costs(path, pipe.schedule.alphas_cumprod, gamma)
    spacing = pipe.config.sampling.spacing
    out = {}
    for k, (grid, total) in optimal_grids(cost, steps).items():
        ref = grid_cost(cost, timesteps(pipe.config.num_timesteps, k, spacing))
        log(f"{k} steps: cost {total:.3e} ({spacing} spacing: {ref:.3e}); timesteps {grid}")
        out[k] = grid
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory (written to with --write)")
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 20, 50], help="step counts to tune")
    parser.add_argument("--per-class", type=int, default=4, help="noises per class on the fine path")
    parser.add_argument("--seed", type=int, default=777, help="seed of those noises (keep it apart from evaluation "
                                                               "seeds)")
    parser.add_argument("--gamma", type=float, default=1.0, help="weight alpha_bar^gamma of a jump's error")
    parser.add_argument("--write", action="store_true", help="store the grids in the model's config.json")
    args = parser.parse_args(argv)
    if args.per_class < 1:
        parser.error(f"--per-class must be at least 1, got {args.per_class}")
    if args.write and not Path(args.model).is_dir():
        parser.error(f"--write needs a local model directory; {args.model} is not one")
    try:
        pipe = Pipeline.from_pretrained(args.model, device="cpu")
        T = pipe.config.num_timesteps
        if not all(1 <= k <= T for k in args.steps):
            parser.error(f"--steps must be in [1, {T}] for this model, got {args.steps}")
        grids = tune(pipe, args.steps, args.per_class, args.seed, args.gamma)
    except (CheckpointError, OSError, ValueError) as e:
        parser.error(str(e))
    if args.write:
        config = pipe.config
        config.sampling.tuned_timesteps = {**(config.sampling.tuned_timesteps or {}),
                                           **{str(k): g for k, g in sorted(grids.items())}}
        config.validate()
        atomic_write(pipe.directory / CONFIG_NAME, config.to_json_file)
        print(f"wrote sampling.tuned_timesteps to {pipe.directory / CONFIG_NAME}; re-evaluate the model")
    return 0


if __name__ == "__main__":
    sys.exit(main())

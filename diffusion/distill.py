"""Progressive distillation of a model's own guided DDIM sampler (Salimans & Ho 2022, arXiv:2202.00512) onto one
K-step timestep grid: a student, started from the model, learns to make in one DDIM step the jump that the frozen
model (the teacher) makes in two.

The student's grid is the model's tuned K-step grid (`sampling.tuned_timesteps`, diffusion.tune_steps) or its
spacing; the teacher runs the 2K-step grid with a midpoint between each pair. For a training image x0 with noise
at a grid timestep t (next grid timestep t'' < t, midpoint t'), Alg. 2 of the paper, with a_t = sqrt(alpha_bar_t),
s_t = sqrt(1 - alpha_bar_t):

    z'  = a_t' x0_T(z_t) + s_t' eps_T(z_t),      z'' = a_t'' x0_T(z') + s_t'' eps_T(z')      (two teacher steps)
    x~  = (z'' - (s_t''/s_t) z_t) / (a_t'' - (s_t''/s_t) a_t)                                (the x0 that takes
                                                                              one DDIM step from z_t to z'')

(at the last step, t'' = -1, x~ = z''). Teacher and student predictions are both *guided* (the model's saved
guidance scale and interval), so the student's guided DDIM K-step sampler follows the teacher's 2K-step one with the
same pipeline settings. The loss is the squared error of the student's guided x0 against x~ weighted by 1 + SNR_t
(= its error in v-space, the units of the model's own training loss), plus `diffusion_weight` times the ordinary
denoising loss at uniform timesteps on the same images (a regulariser: the student stays a denoiser at every other
timestep, so DDPM and other grids keep working). The exported model is the student's EMA.

Several step counts (`--steps 20 50`) distil their grids together, each grid drawn equally often, so one student
learns the jumps of every grid it will be sampled on (one round for a single grid moves the network toward that
grid's jumps alone, and the samplers on other grids may lose).

`--guidance W_LO W_HI` distils the guidance instead (Meng et al. 2023, arXiv:2210.03142, sec. 4.1): the student is
the model grown by a guidance-scale input (`UNetConfig.guidance_range`, its embedding's output layer zero, so it
starts as the model's conditional prediction at every w) and learns, at uniform timesteps of the forward process and
w ~ U[W_LO, W_HI], the model's guided output in one pass:

    student(x_t, t, c, w)  ~  model(x_t, t, 0) + w (model(x_t, t, c) - model(x_t, t, 0))    (squared error, in the
                                                                                            network's output units)

with the class dropped (c = 0, target: the unconditional output) 10% of the time. A guided sampling step then costs
one network pass instead of two, for every sampler and step count.

Usage: python -m diffusion.distill --model checkpoints/fashion-mnist --steps 20 --output-dir runs/distill20
       python -m diffusion.distill --model checkpoints/fashion-mnist-fast --guidance 1 3 --output-dir runs/gd
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import math
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm import tqdm

from .checkpoint import (TRAINING_NAME, CheckpointError, atomic_write, load_model_dir,
                         resolve_model_dir, save_model_dir)
from .config import DiffusionConfig
from .data import load_dataset, to_model_range
from .ema import EMA
from .guidance import make_denoiser
from .losses import diffusion_loss
from .precision import hardware_name, name as precision_name, resolve
from .samplers import Denoiser, timesteps
from .schedules import NoiseSchedule
from .training import STATE_NAME, TrainingError, learning_rate, load_state, save_state, step_generator
from .unet import UNet

LOG_NAME = "distill_log.jsonl"
MODEL_DIR_NAME = "model"
CONTEXT_DROP = 0.1  # the share of training rows without their class (the training loop's default p_uncond)


@dataclass
class DistillConfig:
    model: str = "checkpoints/fashion-mnist"
    steps: int | list[int] = 20  # the student's number(s) of DDIM steps, one grid each
    guidance: list[float] | None = None  # [w_lo, w_hi]: distil the guidance for w in this range instead
    output_dir: str = "runs/distill"
    max_steps: int = 1500
    batch_size: int = 64  # images per step (each also gives one ordinary denoising example)
    lr: float = 5e-5
    lr_schedule: str = "cosine"  # after the warm-up: cosine decay to 0 at max_steps, or constant
    warmup_steps: int = 50
    ema_decay: float = 0.998
    diffusion_weight: float = 1.0
    grad_clip: float = 1.0
    precision: str = "auto"  # auto: bf16 autocast if a timed training step is faster here
    device: str = "cpu"
    data_dir: str | None = None
    seed: int = 0
    log_every: int = 25
    save_every: int = 250
    resume: bool = False
    progress: bool = True

    @property
    def step_counts(self) -> list[int]:
        return [self.steps] if isinstance(self.steps, int) else list(self.steps)

    def validate(self) -> None:
        if self.guidance is not None and not (len(self.guidance) == 2 and all(map(math.isfinite, self.guidance))
                                              and self.guidance[0] < self.guidance[1]):
            raise TrainingError(f"--guidance must be two finite numbers W_LO < W_HI, got {self.guidance!r}")
        counts = self.step_counts
        if not counts or len(set(counts)) != len(counts):
            raise TrainingError(f"--steps must be one or more distinct step counts, got {self.steps!r}")
        for name, v in [("steps", k) for k in counts] + [(n, getattr(self, n)) for n in
                                                          ("max_steps", "batch_size", "log_every", "save_every")]:
            if not isinstance(v, int) or v < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        checks = [(self.lr > 0 and math.isfinite(self.lr), "--lr must be a positive number"),
                  (self.warmup_steps >= 0, "--warmup-steps must be >= 0"),
                  (0.0 <= self.ema_decay < 1.0, "--ema-decay must be in [0, 1)"),
                  (self.diffusion_weight >= 0, "--diffusion-weight must be >= 0"),
                  (self.grad_clip > 0, "--grad-clip must be > 0"),
                  (self.lr_schedule in ("cosine", "constant"), "--lr-schedule must be cosine or constant"),
                  (self.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16")]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)


def teacher_grid(grid: list[int]) -> list[int]:
    """The 2K-step grid: `grid` (increasing) plus the midpoint of each jump, the last one from grid[0] to t = -1
    (a jump of one timestep has no midpoint and stays one step)."""
    lows = [-1] + grid[:-1]
    mids = [(lo + hi + 1) // 2 for lo, hi in zip(lows, grid)]
    return sorted(set(grid) | {m for m, lo, hi in zip(mids, lows, grid) if lo < m < hi})


def alpha_bar(schedule: NoiseSchedule, t: Tensor, like: Tensor) -> Tensor:
    """alpha_bar_t for (B,) timesteps, 1 at t = -1 (clean data), shaped (B, 1, ..., 1) to broadcast over `like`."""
    ab = torch.where(t >= 0, schedule.alphas_cumprod[t.clamp(min=0)].to(like.dtype),
                     torch.ones_like(t, dtype=like.dtype))
    return ab.view(-1, *([1] * (like.ndim - 1)))


def ddim_jump(schedule: NoiseSchedule, x0: Tensor, eps: Tensor, t_to: Tensor) -> Tensor:
    """The deterministic DDIM step's landing point a_to x0 + s_to eps (t_to = -1: clean data, x0); t_to (B,)."""
    ab = alpha_bar(schedule, t_to, x0)
    return ab.sqrt() * x0 + (1 - ab).sqrt() * eps


@torch.no_grad()
def distillation_target(teacher: Denoiser, schedule: NoiseSchedule, z_t: Tensor, t: Tensor, t_mid: Tensor,
                        t_next: Tensor) -> Tensor:
    """x~ (B, C, H, W): the x0 prediction whose single DDIM step t -> t_next lands where the teacher's two steps
    t -> t_mid -> t_next do (module docstring). t, t_mid, t_next: (B,), with t_next < t_mid <= t (t_mid = t: one
    teacher step)."""
    x0, eps = teacher(z_t, t)
    z = ddim_jump(schedule, x0, eps, t_mid)
    two = t_mid < t
    if bool(two.any()):
        x0_mid, eps_mid = teacher(z, t_mid.clamp(min=0))
        z_next = torch.where(two.view(-1, *([1] * (z_t.ndim - 1))), ddim_jump(schedule, x0_mid, eps_mid, t_next),
                             ddim_jump(schedule, x0, eps, t_next))
    else:
        z_next = ddim_jump(schedule, x0, eps, t_next)
    ab_t, ab_next = alpha_bar(schedule, t, z_t), alpha_bar(schedule, t_next, z_t)
    ratio = (1 - ab_next).sqrt() / (1 - ab_t).sqrt()  # s''/s
    return (z_next - ratio * z_t) / (ab_next.sqrt() - ratio * ab_t.sqrt())


def drop_context(context: Tensor, generator: torch.Generator) -> Tensor:
    """A copy of the (B, K) context with each row zeroed ("no class") with probability CONTEXT_DROP, so the student
    keeps the unconditional prediction that guidance needs."""
    dropped = context.clone()
    dropped[torch.rand(context.shape[0], generator=generator) < CONTEXT_DROP] = 0.0
    return dropped


def grow_guidance_input(config: DiffusionConfig, model: UNet, guidance_range: list[float]) -> tuple[DiffusionConfig,
                                                                                                    UNet]:
    """The student of guidance distillation: `model`'s config and weights plus a guidance-scale input for w in
    `guidance_range`, whose zero output layer leaves every prediction as it was (tested)."""
    if config.num_classes == 0:
        raise TrainingError("--guidance: an unconditional model has no classifier-free guidance to distil")
    if config.unet.guidance_range is not None:
        raise TrainingError(f"--guidance: the model's guidance is distilled already (for w in "
                            f"{config.unet.guidance_range})")
    grown = copy.deepcopy(config)
    grown.unet.guidance_range = [float(w) for w in guidance_range]
    grown.validate()
    student = UNet(grown.unet).to(next(model.parameters()).device)
    missing, unexpected = student.load_state_dict(model.state_dict(), strict=False)
    assert not unexpected and all(k.startswith("guidance_mlp.") for k in missing), (missing, unexpected)
    return grown, student


class Distiller:
    """One distillation run: teacher (frozen), student, its EMA and optimiser; `run()` trains and exports."""

    def __init__(self, cfg: DistillConfig):
        cfg.validate()
        self.cfg = cfg
        self.device = torch.device(cfg.device)
        self.out = Path(cfg.output_dir)
        try:
            self.source = resolve_model_dir(cfg.model)
            self.config, teacher = load_model_dir(self.source, self.device)
        except CheckpointError as e:
            raise TrainingError(f"--model: {e}") from e
        self.teacher = teacher.eval().requires_grad_(False)
        self.export_config = self.config  # what the student's config.json says
        if cfg.guidance is None:
            self.student = copy.deepcopy(self.teacher)
        else:
            self.export_config, self.student = grow_guidance_input(self.config, self.teacher, cfg.guidance)
        self.student.train().requires_grad_(True)
        self.ema = EMA(self.student, cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.student.parameters(), lr=cfg.lr, weight_decay=0.0)
        self.schedule = NoiseSchedule.from_name(self.config.schedule, self.config.num_timesteps,
                                                self.config.beta_start, self.config.beta_end).to(self.device)
        self.data = load_dataset(self.config.dataset, "train", cfg.data_dir)
        s = self.config.sampling
        self.grids = {} if cfg.guidance is not None else {
            k: list((s.tuned_timesteps or {}).get(str(k)) or timesteps(self.config.num_timesteps, k,
                                                                        s.spacing or "trailing"))
            for k in cfg.step_counts}
        # every grid's student steps as rows (t, t_mid, t_next), grid after grid; t_mid = t where the jump has no
        # midpoint. A batch draws a grid uniformly, then one of its steps uniformly.
        rows = []
        for grid in self.grids.values():
            fine, lows = teacher_grid(grid), [-1] + grid[:-1]
            rows += [[hi, next((m for m in fine if lo < m < hi), hi), lo] for lo, hi in zip(lows, grid)]
        self.jumps = torch.tensor(rows, device=self.device)
        sizes = [len(g) for g in self.grids.values()]
        self.grid_sizes = torch.tensor(sizes, device=self.device)
        self.grid_offsets = torch.tensor([sum(sizes[:i]) for i in range(len(sizes))], device=self.device)
        self.step, self.elapsed = 0, 0.0
        if not cfg.resume and (self.out / STATE_NAME).exists():  # never overwrite a run
            raise TrainingError(f"{self.out} already holds a distillation run: pass --resume to continue it or "
                                f"choose a new --output-dir")
        kept = None
        if cfg.resume and (self.out / STATE_NAME).exists():
            state = load_state(self.out)
            saved = DistillConfig(model=state["config"]["model"], steps=state["config"]["steps"],
                                  guidance=state["config"].get("guidance"))
            if (saved.model, saved.step_counts, saved.guidance) != (cfg.model, cfg.step_counts, cfg.guidance):
                what = (f"the guidance of {saved.model} for w in {saved.guidance}" if saved.guidance is not None
                        else f"{saved.model} to {saved.step_counts} steps")
                raise TrainingError(f"--resume: {self.out} distils {what}; start a new --output-dir")
            self.student.load_state_dict(state["student"])
            self.ema.model.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
            torch.set_rng_state(state["torch_rng"])
            kept = state.get("precision", state["config"].get("precision"))
        # bf16 autocast or fp32 for the teacher's and the student's passes (auto: what a timed training pass shows
        # faster here, or what the resumed run used)
        self.autocast_dtype, self.precision_reason = resolve(cfg.precision, self.student, self.config.unet,
                                                             self.device, training=True, kept=kept)

    def denoiser(self, model, context: Tensor) -> Denoiser:
        """The model's guided denoiser with the saved pipeline settings (guidance scale and interval)."""
        s, c = self.config.sampling, self.config
        return make_denoiser(model, self.schedule, context, guidance_scale=s.guidance_scale,
                             prediction_type=c.prediction_type, clip_x0=c.clip_x0,
                             autocast_dtype=self.autocast_dtype,
                             guidance_interval=s.guidance_interval, guidance_range=c.unet.guidance_range)

    def distill_loss(self, x0: Tensor, context: Tensor, jump: Tensor, noise: Tensor) -> Tensor:
        """The distillation loss of a batch: x0, noise (B, C, H, W), context (B, K), jump (B, 3) rows of
        (t, t_mid, t_next) from `self.jumps`; the student's guided x0 against x~, weighted by 1 + SNR_t."""
        t, t_mid, t_next = jump.unbind(1)
        z_t = self.schedule.q_sample(x0, t, noise)
        target = distillation_target(self.denoiser(self.teacher, context), self.schedule, z_t, t, t_mid, t_next)
        x0_student, _ = self.denoiser(self.student, context)(z_t, t)
        weight = 1 + self.schedule.snr(t)
        return (weight * (x0_student.float() - target).pow(2).mean(dim=(1, 2, 3))).mean()

    def guidance_loss(self, x0: Tensor, context: Tensor, t: Tensor, w: Tensor, noise: Tensor) -> Tensor:
        """The guidance-distillation loss of a batch: x0, noise (B, C, H, W), context (B, K), t (B,) timesteps and w
        (B,) guidance scales; the student's output at w against the model's guided output (module docstring)."""
        x_t = self.schedule.q_sample(x0, t, noise)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None):
            with torch.no_grad():
                cond, uncond = self.teacher(torch.cat([x_t, x_t]), torch.cat([t, t]),
                                            torch.cat([context, torch.zeros_like(context)])).float().chunk(2)
                target = uncond + w.view(-1, 1, 1, 1) * (cond - uncond)
            out = self.student(x_t, t, context, guidance=w).float()
        return (out - target).pow(2).mean()

    def train_step(self, step: int) -> tuple[float, float]:
        """One optimiser step; returns the distillation loss and the denoising loss (0 when guidance is distilled)."""
        cfg = self.cfg
        g = step_generator(cfg.seed, step, 0)
        idx = torch.randint(0, len(self.data), (cfg.batch_size,), generator=g)
        x0 = to_model_range(self.data.images[idx]).to(self.device)
        if cfg.guidance is not None:
            context = drop_context(self.data.context[idx], g)
            t = torch.randint(0, self.config.num_timesteps, (cfg.batch_size,), generator=g)
            w = cfg.guidance[0] + (cfg.guidance[1] - cfg.guidance[0]) * torch.rand(cfg.batch_size, generator=g)
            loss = self.guidance_loss(x0, context.to(self.device), t.to(self.device), w.to(self.device),
                                      torch.randn(x0.shape, generator=g).to(self.device))
            self.optimize(step, loss)
            return float(loss.detach()), 0.0
        which = torch.randint(0, len(self.grids), (cfg.batch_size,), generator=g).to(self.device)
        u = torch.rand(cfg.batch_size, generator=g).to(self.device)
        jump = self.jumps[self.grid_offsets[which] + (u * self.grid_sizes[which]).long()]
        context = self.data.context[idx].to(self.device)
        distill = self.distill_loss(x0, context, jump, torch.randn(x0.shape, generator=g).to(self.device))
        context = drop_context(context, g)
        t_any = torch.randint(0, self.config.num_timesteps, (cfg.batch_size,), generator=g).to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None):
            denoising = diffusion_loss(self.student, self.schedule, x0, context, t_any,
                                       torch.randn(x0.shape, generator=g).to(self.device),
                                       self.config.prediction_type)
        self.optimize(step, distill + cfg.diffusion_weight * denoising)
        return float(distill.detach()), float(denoising.detach())

    def optimize(self, step: int, loss: Tensor) -> None:
        """Backward, clip, step and the EMA update; a non-finite loss stops the run before anything is saved."""
        for group in self.optimizer.param_groups:
            group["lr"] = learning_rate(step, self.cfg, self.cfg.max_steps)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.student.parameters(), self.cfg.grad_clip))
        if not (math.isfinite(float(loss.detach())) and math.isfinite(grad_norm)):
            raise TrainingError(f"step {step}: the loss is not finite ({float(loss.detach())}); the last "
                                f"checkpoint in {self.out} is intact")
        self.optimizer.step()
        self.ema.update(self.student, step)

    def save(self) -> Path:
        """The resumable state and the exported student (its EMA) with a record of how it was made."""
        state = {"config": dataclasses.asdict(self.cfg), "student": self.student.state_dict(),
                 "ema": self.ema.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "elapsed": self.elapsed, "torch_rng": torch.get_rng_state(),
                 "precision": precision_name(self.autocast_dtype)}
        save_state(self.out, state)
        model_dir = save_model_dir(self.out / MODEL_DIR_NAME, self.export_config, self.ema.model.state_dict())
        if (self.source / "examples").is_dir():  # the real example images of the data set travel with the student
            shutil.copytree(self.source / "examples", model_dir / "examples", dirs_exist_ok=True)
        source_record = self.source / TRAINING_NAME
        record = {"command": "python -m diffusion.distill " + " ".join(sys.argv[1:])
                  if Path(sys.argv[0]).name == "distill.py" else None,
                  "distillation": {**({"guidance_range": self.cfg.guidance} if self.cfg.guidance is not None else
                                      {"student_steps": self.cfg.step_counts,
                                       "student_grids": {str(k): g for k, g in self.grids.items()},
                                       "teacher_grids": {str(k): teacher_grid(g) for k, g in self.grids.items()}}),
                                   "steps": self.step,
                                   "wall_time_min": self.elapsed / 60, "hardware": hardware_name(self.device),
                                   "precision": self.precision_reason, "config": dataclasses.asdict(self.cfg)},
                  "init_from": json.loads(source_record.read_text()) if source_record.exists() else str(self.source)}
        atomic_write(model_dir / TRAINING_NAME, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))
        return model_dir

    def run(self) -> Path:
        cfg = self.cfg
        self.out.mkdir(parents=True, exist_ok=True)
        log = (self.out / LOG_NAME).open("a")
        bar = tqdm(total=cfg.max_steps, initial=self.step, disable=not cfg.progress, desc="distil")
        window_start, window_images = time.perf_counter(), 0
        while self.step < cfg.max_steps:
            start = time.perf_counter()
            distill, denoising = self.train_step(self.step)
            self.elapsed += time.perf_counter() - start
            self.step += 1
            window_images += cfg.batch_size
            bar.update(1)
            if self.step % cfg.log_every == 0 or self.step == cfg.max_steps:
                ips = window_images / (time.perf_counter() - window_start)
                losses = {"distill": distill} if cfg.guidance is not None else {"distill": distill,
                                                                                  "denoising": denoising}
                record = {"step": self.step, **{f"{k}_loss": v for k, v in losses.items()},
                          "lr": learning_rate(self.step - 1, cfg, cfg.max_steps), "img_per_s": round(ips, 1)}
                log.write(json.dumps(record) + "\n")
                log.flush()
                bar.set_postfix(**{k: f"{v:.4f}" for k, v in losses.items()}, ips=f"{ips:.0f}")
                window_start, window_images = time.perf_counter(), 0
            if self.step % cfg.save_every == 0 or self.step == cfg.max_steps:
                self.save()
        bar.close()
        log.close()
        return self.out / MODEL_DIR_NAME


def main(argv: list[str] | None = None) -> int:
    defaults = DistillConfig()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", default=defaults.model, help="the teacher: a model directory or Hub repo id")
    parser.add_argument("--steps", type=int, nargs="+", default=None, metavar="K",
                        help=f"the student's DDIM steps (on the model's tuned grid for that count, else its spacing); "
                             f"the teacher takes twice as many. Several counts distil their grids together, each "
                             f"drawn equally often (e.g. 20 50: one student for both samplers). Default: "
                             f"{defaults.steps}")
    parser.add_argument("--guidance", type=float, nargs=2, default=None, metavar=("W_LO", "W_HI"),
                        help="distil the model's classifier-free guidance for scales in [W_LO, W_HI] instead: the "
                             "student predicts the guided output in one pass (Meng et al. 2023)")
    parser.add_argument("--output-dir", default=defaults.output_dir, help="run directory (state, log, model/)")
    parser.add_argument("--max-steps", type=int, default=defaults.max_steps, help="optimiser steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size, help="images per step")
    parser.add_argument("--lr", type=float, default=defaults.lr, help="peak learning rate")
    parser.add_argument("--lr-schedule", default=defaults.lr_schedule, choices=("cosine", "constant"),
                        help="after the warm-up: cosine decay to 0 at --max-steps, or constant")
    parser.add_argument("--warmup-steps", type=int, default=defaults.warmup_steps, help="linear warm-up steps")
    parser.add_argument("--ema-decay", type=float, default=defaults.ema_decay, help="EMA decay of the exported weights")
    parser.add_argument("--diffusion-weight", type=float, default=defaults.diffusion_weight,
                        help="weight of the ordinary denoising loss at uniform timesteps (0 = distillation only; "
                             "--steps only: with --guidance, w = 1 is in the range and keeps the denoiser)")
    parser.add_argument("--precision", default=defaults.precision, choices=("auto", "fp32", "bf16"),
                        help="bf16 autocast, fp32, or auto: bf16 autocast where a timed training step shows it faster")
    parser.add_argument("--device", default=defaults.device, help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--data-dir", default=None, help="directory holding the data set files")
    parser.add_argument("--seed", type=int, default=defaults.seed, help="seed of the images, timesteps and noise")
    parser.add_argument("--log-every", type=int, default=defaults.log_every, help="steps between log records")
    parser.add_argument("--save-every", type=int, default=defaults.save_every, help="steps between checkpoints")
    parser.add_argument("--resume", action="store_true", help="continue the run in --output-dir")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    args = parser.parse_args(argv)
    if args.guidance is not None and args.steps is not None:
        parser.error("--steps and --guidance distil different things: give one of them")
    args.steps = defaults.steps if args.steps is None else args.steps
    cfg = DistillConfig(**vars(args))
    try:
        model_dir = Distiller(cfg).run()
    except TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    samplers = "ddim:50:0" if cfg.guidance is not None else " ".join(f"ddim:{k}:0" for k in cfg.step_counts)
    print(f"student written to {model_dir} (evaluate: python -m diffusion.evaluate --model {model_dir} "
          f"--samplers {samplers})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Load a trained model (local directory or Hugging Face Hub repo) and generate images: the public API used by the
app, the sampling CLI, the evaluator and users.

Usage:
    pipe = Pipeline.from_pretrained("checkpoints/fashion-mnist")
    images = pipe.generate([0, 7], sampler="ddim", steps=20, seed=0)  # (2, 1, 28, 28) in [0, 1]
"""

from __future__ import annotations

import functools
import math
import numbers
import secrets
import time
from pathlib import Path
from typing import Iterator, Literal, Sequence

import torch
from torch import Tensor

from .checkpoint import load_model_dir, resolve_model_dir, save_model_dir
from .config import DiffusionConfig, check_guidance_interval
from .guidance import make_denoiser
from .inpainting import check_mask, masked_denoiser, resampled
from .interpolation import interpolate_noise, lerp
from .precision import resolve
from .samplers import (Callback, Denoiser, ReversePlan, StepInfo, ddim_inversion_plan, iter_sample, make_plan, sample,
                       timesteps)
from .schedules import NoiseSchedule
from .unet import UNet, forward_flops

Precision = Literal["auto", "fp32", "bf16"]
Labels = Sequence[int | None] | Sequence[Sequence[float]] | Tensor


COMPILE_HELP = ("torch.compile the network: compiled once before sampling (10-50 s on a 2-core CPU, needs a C++ "
                "compiler), then 1.2-2.2x faster there")


class CompileError(RuntimeError):
    """torch.compile failed on this machine (e.g. no C++ compiler for inductor's CPU kernels)."""


class Pipeline:
    """A trained network, its noise schedule and config, on one device.

    compile=True runs the network through torch.compile (inductor; on a CPU it needs a C++ compiler): compiled at
    the first calls, once for batch 1 and once for every larger batch (10-50 s on a 2-core CPU; `warm_up()` does it
    up front), after which sampling is 1.2-2.2x faster on a 2-core CPU (benchmarks/sampling.py --compile)."""

    def __init__(self, model: UNet, config: DiffusionConfig, *, device: str | torch.device = "cpu",
                 precision: Precision = "auto", source: str = "", compile: bool = False):
        config.validate()
        self.device = torch.device(device)
        self.model = model.to(self.device).eval()  # note: moves and switches the given module to eval mode
        # what the samplers call: the module itself, or its compiled wrapper (sharing the same weights)
        self.network: torch.nn.Module = torch.compile(self.model, dynamic=True) if compile else self.model
        self.compiled = compile
        self.config = config
        self.schedule = NoiseSchedule.from_name(config.schedule, config.num_timesteps, config.beta_start,
                                                config.beta_end).to(self.device)
        self.directory: Path | None = None  # the model directory, when loaded from one
        # autocast_dtype: torch.bfloat16 (bf16 autocast) or None (fp32); precision_reason says how it was chosen
        self.autocast_dtype, self.precision_reason = resolve(precision, self.model, config.unet, self.device)
        self.source = source

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, *, device: str | torch.device = "cpu",
                        precision: Precision = "auto", revision: str | None = None, source: str = "auto",
                        compile: bool = False) -> Pipeline:
        """A local model directory, or a Hub repo id ('owner/name') fetched with huggingface_hub. source "hub" or
        "local" restricts where the name is looked up (see checkpoint.resolve_model_dir)."""
        directory = resolve_model_dir(name_or_path, revision, source)
        config, model = load_model_dir(directory)
        pipe = cls(model, config, device=device, precision=precision, source=str(name_or_path), compile=compile)
        pipe.directory = directory
        return pipe

    def warm_up(self) -> float:
        """Sample two steps with one image, guided (network calls on a batch of 2) and unguided (batch 1), so that a
        compiled network is compiled now, for every batch size, rather than in the first request; a guidance-distilled
        network, which guides in one pass with its guidance input, runs both with two images too (its calls are all
        of B images). Returns the seconds taken. Raises CompileError with the reason if torch.compile cannot compile
        it here."""
        start = time.perf_counter()
        everywhere = (0, self.config.num_timesteps - 1)
        r = self.config.unet.guidance_range
        w = 2.0 if r is None else (r[0] + r[1]) / 2  # guided: inside a distilled network's range
        label_sets = ([0],) if r is None else ([0], [0, 0])
        runs = ([dict(n=1), dict(n=2)] if self.config.num_classes == 0 else
                [dict(labels=labels, guidance_scale=scale, guidance_interval=everywhere)
                 for scale in (w, 1.0) for labels in label_sets])
        try:
            for run in runs:
                self.generate(sampler="ddim", steps=2, seed=0, **run)
        except Exception as e:  # noqa: BLE001 - inductor raises many types (missing compiler, unsupported op)
            if not self.compiled:
                raise
            reason = (str(e).strip().splitlines() or [""])[0][:300]  # inductor's messages run to pages
            raise CompileError(f"torch.compile could not compile the network on {self.device} "
                               f"({type(e).__name__}: {reason}); run without --compile") from e
        return time.perf_counter() - start

    def use_eager(self) -> None:
        """Drop the compiled wrapper (e.g. after a CompileError): the samplers call the plain module again."""
        self.network, self.compiled = self.model, False

    def save_pretrained(self, directory: str | Path) -> Path:
        return save_model_dir(directory, self.config, self.model.state_dict())

    @property
    def class_names(self) -> list[str]:
        return list(self.config.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.config.image_shape

    @functools.cached_property
    def flops_per_image(self) -> int:
        """FLOPs of one network pass over one image (a guided step makes two): what a request costs is this times
        images x steps x passes, whatever the network's size. Counted at the first call; FlopCounterMode hooks every
        module's forward while it counts (global hooks), so the app counts inside its one sampling slot."""
        return forward_flops(self.config.unet)

    def context(self, labels: Labels) -> Tensor:
        """Class indices (None or -1 = no class) or (N, K) context vectors -> (N, K) float32 context."""
        K = self.config.num_classes
        if K == 0:
            raise ValueError("this model is unconditional: it takes no labels; use generate(n=...)")
        if isinstance(labels, Tensor):
            if labels.dtype.is_floating_point:
                ctx = labels.float()
            else:
                labels = labels.tolist()
        if not isinstance(labels, Tensor):
            labels = list(labels)
            if labels and all(isinstance(v, (numbers.Integral, type(None))) and not isinstance(v, bool)
                              for v in labels):  # Python or NumPy integers
                labels = [None if v is None else int(v) for v in labels]
                bad = [v for v in labels if v is not None and not -1 <= v < K]
                if bad:
                    raise ValueError(f"class index {bad[0]} out of range: use 0..{K - 1} "
                                     f"({', '.join(self.class_names)}) or -1/None for no class")
                ctx = torch.zeros(len(labels), K)
                for i, v in enumerate(labels):
                    if v is not None and v >= 0:
                        ctx[i, v] = 1.0
            else:
                try:
                    ctx = torch.tensor(labels, dtype=torch.float32)
                except (TypeError, ValueError) as e:
                    raise ValueError(f"labels must be class indices or context vectors of length {K}: {e}") from e
        if ctx.ndim != 2 or ctx.shape[1] != K or ctx.shape[0] == 0:
            raise ValueError(f"context vectors must have shape (N, {K}) with N >= 1, got {tuple(ctx.shape)}")
        if not torch.isfinite(ctx).all() or (ctx < 0).any():
            raise ValueError("context vectors must hold finite, non-negative class weights")
        return ctx

    def noise(self, n: int, seed: int | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Starting noise x_T ~ N(0, I), (n, C, H, W), drawn on the CPU so a seed gives the same noise anywhere."""
        if generator is None:
            generator = torch.Generator().manual_seed(seed if seed is not None else fresh_seed())
        return torch.randn((n, *self.image_shape), generator=generator).to(self.device)

    def timesteps(self, sampler: str, steps: int, spacing: str | None = None) -> list[int]:
        """The increasing timesteps a `steps`-step run visits: DDIM takes the model's tuned grid for this step count
        (config sampling.tuned_timesteps, from diffusion.tune_steps) unless a spacing is given; otherwise they follow
        `spacing` (None = the model's)."""
        d = self.config.sampling
        ts = timesteps(self.config.num_timesteps, steps, d.spacing if spacing is None else spacing)  # checks steps
        grid = (d.tuned_timesteps or {}).get(str(steps)) if sampler == "ddim" and spacing is None else None
        return list(grid) if grid else ts

    def plan(self, sampler: str, steps: int, spacing: str | None = None, eta: float = 0.0,
             t_start: int | None = None) -> ReversePlan:
        """The sampler's per-step constants over `timesteps(sampler, steps, spacing)`. t_start: start the chain at
        that timestep instead (x given at t_start): it runs t_start, then the run's timesteps below it. A grid point
        less than half its stride below t_start is left out, so that no step is a sliver: a near-empty first step
        wastes a network call, and in DPM-Solver++(2M) it makes the next step's ratio r = h_last / h tiny and its
        second-order weight 1 / 2r huge."""
        ts = self.timesteps(sampler, steps, spacing)
        if t_start is not None:
            t_start = check_timestep("t_start", t_start, self.config.num_timesteps)
            below, above = [t for t in ts if t < t_start], [t for t in ts if t >= t_start]
            if below:
                stride = (above[0] if above else self.config.num_timesteps) - below[-1]
                if t_start - below[-1] < stride / 2:
                    below.pop()
            ts = below + [t_start]
        return make_plan(sampler, self.schedule, len(ts), "trailing", eta, ts)

    def prepare(self, labels: Labels | None = None, *, n: int | None = None, sampler: str | None = None,
                steps: int | None = None, eta: float | None = None, guidance_scale: float | None = None,
                spacing: str | None = None, guidance_interval: tuple[int, int] | list[int] | None = None,
                seed: int | None = None, x_T: Tensor | None = None,
                t_start: int | None = None) -> tuple[Denoiser, Tensor, ReversePlan, torch.Generator]:
        """Validate the arguments of `generate` and build what the sampling loop needs:
        (denoiser, x_T (N, C, H, W) on the device, plan, generator)."""
        d = self.config.sampling
        if eta is None:  # the saved eta belongs to the saved sampler: another sampler asked for starts from 0
            eta = d.eta if sampler in (None, d.sampler) else 0.0
        sampler = d.sampler if sampler is None else sampler
        steps = d.steps if steps is None else steps
        guidance_scale = d.guidance_scale if guidance_scale is None else guidance_scale
        interval = d.guidance_interval if guidance_interval is None else guidance_interval
        if interval is not None:
            interval = check_guidance_interval(interval, self.config.num_timesteps)
        if not isinstance(guidance_scale, (int, float)) or not math.isfinite(guidance_scale):
            raise ValueError(f"guidance_scale must be a finite number, got {guidance_scale!r}")
        plan = self.plan(sampler, steps, spacing, eta, t_start)
        if t_start is not None and x_T is None:
            raise ValueError("t_start needs x_T: the state at t_start to denoise from (e.g. Pipeline.add_noise)")

        context = self.context(labels) if labels is not None else None
        if context is None and self.config.num_classes > 0:
            if n is None:
                raise ValueError("pass labels (class indices or context vectors), or n for unguided samples")
            context = torch.zeros(n, self.config.num_classes)
        N = context.shape[0] if context is not None else n
        if N is None or N < 1:
            raise ValueError(f"the number of images must be at least 1, got {N!r}")
        if seed is not None:
            check_seed("seed", seed)
        generator = torch.Generator().manual_seed(seed if seed is not None else fresh_seed())
        if x_T is None:
            x_T = self.noise(N, generator=generator)
        elif tuple(x_T.shape) != (N, *self.image_shape):
            raise ValueError(f"x_T must have shape {(N, *self.image_shape)}, got {tuple(x_T.shape)}")
        denoise = make_denoiser(self.network, self.schedule,
                                context.to(self.device) if context is not None else None,
                                guidance_scale=float(guidance_scale), prediction_type=self.config.prediction_type,
                                clip_x0=self.config.clip_x0, autocast_dtype=self.autocast_dtype,
                                guidance_interval=interval, guidance_range=self.config.unet.guidance_range)
        with torch.inference_mode():  # the loop runs in inference mode: every step's input is an inference tensor,
            x_T = x_T.to(self.device, torch.float32).clone()  # the first one too (one compiled graph, not two)
        return denoise, x_T, plan, generator

    def generate(self, labels: Labels | None = None, *, n: int | None = None, sampler: str | None = None,
                 steps: int | None = None, eta: float | None = None, guidance_scale: float | None = None,
                 spacing: str | None = None, guidance_interval: tuple[int, int] | list[int] | None = None,
                 seed: int | None = None, x_T: Tensor | None = None, t_start: int | None = None,
                 callback: Callback | None = None) -> Tensor:
        """Sample images, (N, C, H, W) float in [0, 1].

        labels: class indices (None/-1 = no class) or (N, K) context vectors (mixes of classes); for an
        unconditional model pass n instead. sampler "ddim", "ddpm" or "dpm++" (DPM-Solver++(2M); eta applies to
        DDIM and DPM++: 0 deterministic, 1 the DDPM-like / SDE solver); steps 1..T;
        guidance_scale w (1 = conditional, 0 = unconditional, > 1 = stronger class), applied at the timesteps in
        guidance_interval (t_lo, t_hi) if one is given or saved, else at all; spacing picks the timesteps
        (samplers.timesteps; left out, DDIM uses the model's tuned grid for this step count if it has one); seed
        makes the starting noise and every sampling step reproducible; x_T (N, C, H, W) overrides the starting noise;
        t_start starts the chain at that timestep from x_T taken as x_{t_start} (SDEdit, Meng et al. 2022: a real
        image noised by `add_noise` comes back as a new sample that keeps what the noise left of it), running
        t_start and then the timesteps of the `steps`-step run below it; callback(StepInfo) is called after every
        step (x_t and x0 in model range [-1, 1]). Arguments left out take the defaults saved in config.json (eta
        only with the saved sampler: another sampler's eta defaults to 0).
        """
        denoise, x_T, plan, generator = self.prepare(labels, n=n, sampler=sampler, steps=steps, eta=eta,
                                                     guidance_scale=guidance_scale, spacing=spacing,
                                                     guidance_interval=guidance_interval, seed=seed, x_T=x_T,
                                                     t_start=t_start)
        with torch.inference_mode():
            x0 = sample(denoise, x_T, plan, generator=generator, callback=callback)
        return to_unit_range(x0)

    def add_noise(self, images: Tensor, t: int, seed: int | None = None) -> Tensor:
        """The forward process q(x_t | x_0) = N(sqrt(alpha_bar_t) x0, (1 - alpha_bar_t) I) (Ho et al. eq. 4) for
        images (N, C, H, W) in [0, 1]: x_t (N, C, H, W) in model range, with noise drawn on the CPU from `seed`.
        A stochastic sampler that continues from x_t needs another seed: with the same one, its first step's noise
        would be this noise again."""
        t = check_timestep("t", t, self.config.num_timesteps)
        x0 = self.images_to_model(images)
        return self.schedule.q_sample(x0, torch.full((len(x0),), t, device=self.device), self.noise(len(x0), seed))

    def images_to_model(self, images: Tensor) -> Tensor:
        """(N, C, H, W) float images in [0, 1] of this model's shape (what `generate` returns) -> model range
        [-1, 1] on the device."""
        if not isinstance(images, Tensor) or not images.dtype.is_floating_point:
            got = f"a tensor of {images.dtype}" if isinstance(images, Tensor) else type(images).__name__
            raise ValueError(f"images must be a float tensor with values in [0, 1] (as generate returns), got {got}")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.image_shape:
            raise ValueError(f"images must have shape (N, {', '.join(map(str, self.image_shape))}), "
                             f"got {tuple(images.shape)}")
        if not torch.isfinite(images).all() or images.min() < -1e-3 or images.max() > 1 + 1e-3:
            raise ValueError("images must hold finite values in [0, 1] (uint8 images: divide by 255 first)")
        return images.to(self.device, torch.float32).clamp(0, 1) * 2 - 1

    def prepare_for_images(self, images: Tensor, labels: Labels | None, **kwargs
                           ) -> tuple[Tensor, tuple[Denoiser, Tensor, ReversePlan, torch.Generator]]:
        """`prepare` for a method that starts from images (N, C, H, W) in [0, 1], one label each (None: no class):
        (the images in model range on the device, what `prepare` returns)."""
        x0 = self.images_to_model(images)
        prepared = self.prepare(labels, n=len(x0) if labels is None else None, **kwargs)
        if len(prepared[1]) != len(x0):
            raise ValueError(f"{len(x0)} images need {len(x0)} labels, got {len(prepared[1])}")
        return x0, prepared

    def invert(self, images: Tensor, labels: Labels | None = None, *, steps: int = 50,
               guidance_scale: float = 1.0, spacing: str | None = None,
               guidance_interval: tuple[int, int] | list[int] | None = None,
               callback: Callback | None = None) -> Tensor:
        """DDIM inversion (`samplers.ddim_inversion_plan`): the noise x_T (N, C, H, W) from which deterministic DDIM
        with the same steps, spacing, guidance and labels draws (approximately) these images (N, C, H, W) in
        [0, 1]. One network call per step. Guidance above 1 makes the inversion drift (each step's prediction stands
        in for the one at the next, unknown state, and guidance amplifies the difference; Mokady et al. 2023, sec.
        3): 1, the plain conditional model, inverts best.

            x_T = pipe.invert(images, labels, steps=50)
            again = pipe.generate(labels, sampler="ddim", eta=0, steps=50, guidance_scale=1, x_T=x_T)
        """
        x0, (denoise, _, _, _) = self.prepare_for_images(images, labels, sampler="ddim", steps=steps, eta=0.0,
                                                         guidance_scale=guidance_scale, spacing=spacing,
                                                         guidance_interval=guidance_interval, seed=0)
        plan = ddim_inversion_plan(self.schedule, self.timesteps("ddim", steps, spacing))
        with torch.inference_mode():
            return sample(denoise, x0.clone(), plan, callback=callback)

    def inpaint(self, images: Tensor, mask: Tensor, labels: Labels | None = None, *, resample: int = 1,
                callback: Callback | None = None, **kwargs) -> Tensor:
        """Fill in part of each image; returns (N, C, H, W) in [0, 1]. `images` (N, C, H, W) in [0, 1] are kept
        exactly where `mask` ((H, W), (1, 1, H, W) or (N, 1, H, W), bool or 0/1) is False / 0; where it is True / 1,
        pixels are generated to match the kept part and the labels (class indices, context vectors, or None for no
        class). Any sampler;
        the known pixels replace their part of each step's x0 prediction (`diffusion.inpainting`, DDNM). resample
        > 1 takes every step that many times, going back up in between (RePaint; DDPM and DDIM only), so the two
        parts agree better, at resample x the network calls. Other arguments as in `generate` (sampler, steps, eta,
        guidance_scale, spacing, guidance_interval, seed).

            fill = region_mask("top half", 28, 28)                      # diffusion.inpainting
            boots = pipe.inpaint(sneakers, fill, [9] * len(sneakers), sampler="ddim", steps=50, resample=5)
        """
        refuse_start_arguments("inpaint", "seed", kwargs)
        x0, (denoise, x_T, plan, generator) = self.prepare_for_images(images, labels, **kwargs)
        fill = check_mask(mask, tuple(x0.shape)).to(self.device)
        with torch.inference_mode():
            x = resampled(masked_denoiser(denoise, self.schedule, x0, fill), x_T, plan, self.schedule, resample,
                          generator=generator, callback=callback)
        return to_unit_range(x)

    def interpolate(self, start: int | Sequence[float] | None = None, end: int | Sequence[float] | None = None, *,
                    frames: int = 8, noise_seeds: tuple[int, int] = (0, 1), path: str = "slerp",
                    sampler: str = "ddim", eta: float = 0.0, **kwargs) -> Tensor:
        """Interpolation between two samples (Song et al. 2021, sec. 5.3): (frames, C, H, W) in [0, 1]. Frame k, at
        weight w = k / (frames - 1), starts from the noise at w on the `path` ("slerp", as the paper; or "lerp",
        whose middle frames start from noise of standard deviation ~0.71: `diffusion.interpolation`) between the
        noises drawn from noise_seeds[0] and noise_seeds[1], with the class context (1 - w) start + w end (each a
        class index, a context vector, or None for no class). Deterministic DDIM, the default, turns the path into a
        morph between the two ends' samples; a stochastic sampler (DDPM, eta > 0) adds fresh noise at every step
        (drawn from `seed`; give it one that is not a noise seed, or the first frame's first step would draw its
        x_T again), so its frames are not tied to their x_T. Other arguments as in `generate`.

            frames = pipe.interpolate(7, 7, noise_seeds=(0, 1), steps=20)    # one sneaker into another
            frames = pipe.interpolate(7, 5, noise_seeds=(0, 0))              # a sneaker into a sandal, same noise
        """
        if isinstance(frames, bool) or not isinstance(frames, numbers.Integral) or frames < 2:
            raise ValueError(f"frames must be an integer of at least 2, got {frames!r}")
        refuse_start_arguments("interpolate", "noise_seeds", kwargs)
        w = torch.linspace(0, 1, int(frames), dtype=torch.float64)
        x_T = self.interpolation_noise(noise_seeds, w, path)
        if self.config.num_classes == 0:
            if start is not None or end is not None:
                raise ValueError("this model is unconditional: it takes no classes; leave start and end as None")
            return self.generate(n=len(w), sampler=sampler, eta=eta, x_T=x_T, **kwargs)
        ends = [self.context([v] if v is None or isinstance(v, numbers.Integral) else [list(v)])[0]
                for v in (start, end)]
        return self.generate(lerp(*ends, w), sampler=sampler, eta=eta, x_T=x_T, **kwargs)

    def interpolation_noise(self, noise_seeds: tuple[int, int], weights: Tensor, path: str = "slerp") -> Tensor:
        """The starting noises of `interpolate`: (K, C, H, W) at `weights` (K,) in [0, 1] on the `path` from the noise
        drawn from noise_seeds[0] to that from noise_seeds[1]."""
        if not isinstance(noise_seeds, (tuple, list)) or len(noise_seeds) != 2:
            raise ValueError(f"noise_seeds must be two seeds (start, end), got {noise_seeds!r}")
        a, b = (self.noise(1, seed=check_seed("noise_seeds", s))[0] for s in noise_seeds)
        return interpolate_noise(a, b, weights, path)

    def iter_generate(self, labels: Labels | None = None, **kwargs) -> Iterator[StepInfo]:
        """`generate` one step at a time (same arguments but callback): yields a StepInfo per step; the last
        one's x_prev, through to_unit_range, is the result. Each step runs under inference mode on its own, so
        the iterator may be advanced from any thread (as Gradio does)."""
        denoise, x_T, plan, generator = self.prepare(labels, **kwargs)
        steps = iter_sample(denoise, x_T, plan, generator=generator)
        while True:
            with torch.inference_mode():
                info = next(steps, None)
            if info is None:
                return
            yield info


def check_timestep(name: str, t: object, T: int) -> int:
    """An integer timestep in [0, T-1] (Python or NumPy integer) -> int; anything else is a ValueError."""
    if not isinstance(t, numbers.Integral) or isinstance(t, bool) or not 0 <= t < T:
        raise ValueError(f"{name} must be an integer timestep in [0, {T - 1}], got {t!r}")
    return int(t)


def refuse_start_arguments(method: str, instead: str, kwargs: dict) -> None:
    """interpolate and inpaint draw their own starting noise: generate's x_T, t_start and n are not theirs."""
    given = [k for k in ("x_T", "t_start", "n") if k in kwargs]
    if given:
        raise TypeError(f"{method} makes its own starting noise (from {instead}): {', '.join(given)} is not one of "
                        f"its arguments")


def check_seed(name: str, seed: object) -> int:
    """A seed for torch.Generator: an integer in [0, 2**63); anything else is a ValueError."""
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise ValueError(f"{name} must be an integer in [0, 2**63), got {seed!r}")
    return seed


def fresh_seed() -> int:
    """A random seed that leaves torch's global RNG alone."""
    return secrets.randbits(63)


def to_unit_range(x: Tensor) -> Tensor:
    """Model range [-1, 1] -> [0, 1], clamped."""
    return ((x + 1) / 2).clamp(0.0, 1.0)

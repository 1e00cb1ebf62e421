"""The work behind the Gradio app, as plain typed functions that tests call directly: live generation, the
DDPM-vs-DDIM race, the forward-process explorer (and the way back: denoising a noised image, DDIM inversion) and model
information. Inputs are checked by diffusion.inputs.

Streaming functions are generators yielding dataclasses; app.py only maps them onto components.

Usage: for update in generate_stream(registry, OutputFiles(), "fashion-mnist", "ddim", 20, 0.0, 2.0, 0, False, 4,
                                     "class", "Trouser", "Bag", 0.5): ...
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from .evaluate import SamplerSetting
from .guidance import describe_range, make_denoiser
from .images import OutputFiles, grid_array, save_gif, save_png, side_by_side, to_8bit, to_pil
from .inpainting import NOT_MULTISTEP, REGIONS, region_mask
from .interpolation import PATHS, detail, frame_changes, path_ratio
from .inputs import (SEED_MAX, InputError, Limits, check_choice, check_float, check_int, check_sampling, check_work,
                     class_context, get_model, load_upload, plural, resolve_seed, show)
from .pipeline import Pipeline, to_unit_range
from .precision import name as precision_name
from .registry import ModelRegistry
from .samplers import StepInfo

ProgressFn = Callable[[float, str], None]
STRIP_STEPS = (5, 10, 20, 50, 100)


# ---------------------------------------------------------------------------------------------------------------
# generate


@dataclass
class GenerateUpdate:
    live: np.ndarray  # x_t | predicted x0, side by side
    status: str
    seed: int
    final: np.ndarray | None = None
    png_path: str | None = None
    gif_path: str | None = None


def stream_every(steps: int, max_frames: int = 60) -> int:
    return max(1, math.ceil(steps / max_frames))


def generate_stream(registry: ModelRegistry, outputs: OutputFiles, model: str, sampler: str, steps: int, eta: float,
                    guidance_scale: float, seed: int, random_seed: bool, num_images: int, class_mode: str,
                    class_a: str, class_b: str, mix: float, limits: Limits = Limits(),
                    progress: ProgressFn | None = None) -> Iterator[GenerateUpdate]:
    """Sample `num_images` images, yielding the live x_t | x0 view as it denoises, then the grid, PNG and GIF."""
    pipe = get_model(registry, model, limits)
    sampler, steps, eta, guidance_scale = check_sampling(pipe, sampler, steps, eta, guidance_scale)
    n = check_int("number of images", num_images, 1, limits.max_images)
    context = class_context(pipe, class_mode, class_a, class_b, mix)
    check_work(pipe, n, steps, guidance_scale, limits, has_class=any(context))
    seed = resolve_seed(seed, random_seed)
    labels = [context] * n if context else None
    every = stream_every(steps)
    frames: list[Image.Image] = []
    start = time.perf_counter()
    last: StepInfo | None = None
    live = np.zeros((1, 1, 3), np.uint8)
    for info in pipe.iter_generate(labels, n=None if context else n, sampler=sampler, steps=steps, eta=eta,
                                   guidance_scale=guidance_scale, seed=seed):
        last = info
        done = info.index + 1
        if done % every == 0 or done == steps:
            live = side_by_side(grid_array(to_unit_range(info.x_prev), limits.display_size),
                                grid_array(to_unit_range(info.x0), limits.display_size))
            frames.append(Image.fromarray(live))
            elapsed = time.perf_counter() - start
            if progress is not None:
                progress(done / steps, f"{sampler.upper()} step {done}/{steps}")
            if done < steps:
                yield GenerateUpdate(live, f"{sampler.upper()} step {done}/{steps} (t = {info.t}) · "
                                           f"{elapsed:.2f} s · seed {seed}", seed)
    elapsed = time.perf_counter() - start
    assert last is not None
    final = grid_array(to_unit_range(last.x_prev), limits.display_size)
    png = save_png(Image.fromarray(final), outputs.path("samples", ".png"))
    gif = save_gif(frames, outputs.path("denoising", ".gif"))
    yield GenerateUpdate(live,
                         f"**{sampler.upper()} · {steps} steps · {plural(n, 'image')}** in "
                         f"{elapsed:.2f} s ({steps / elapsed:.1f} steps/s) · seed {seed}", seed, final,
                         str(png), str(gif))


# ---------------------------------------------------------------------------------------------------------------
# compare DDPM vs DDIM


@dataclass
class Runner:
    """One sampler of the race: its step iterator, compute time so far, and latest step."""

    name: str
    steps: int
    iterator: Iterator[StepInfo]
    seconds: float = 0.0
    last: StepInfo | None = None
    done: bool = False

    def advance(self) -> None:
        t0 = time.perf_counter()
        info = next(self.iterator, None)
        self.seconds += time.perf_counter() - t0
        if info is None:
            self.done = True
        else:
            self.last = info
            self.done = info.index + 1 == self.steps

    def view(self, display_size: int) -> np.ndarray:
        assert self.last is not None
        return side_by_side(grid_array(to_unit_range(self.last.x_prev), display_size),
                            grid_array(to_unit_range(self.last.x0), display_size))

    def status(self) -> str:
        done = 0 if self.last is None else self.last.index + 1
        rate = f" · {done / self.seconds:.0f} steps/s" if self.seconds > 0 else ""
        return f"**{self.name}**: step {done}/{self.steps} · {self.seconds:.2f} s{rate}" + (" ✓" if self.done else "")


@dataclass
class CompareUpdate:
    ddim: np.ndarray | None
    ddpm: np.ndarray | None
    ddim_status: str
    ddpm_status: str
    readout: str
    ddim_seconds: float
    ddpm_seconds: float
    strip: list[tuple[np.ndarray, str]] = field(default_factory=list)


def compare_stream(registry: ModelRegistry, model: str, ddpm_steps: int, ddim_steps: int, eta: float,
                   guidance_scale: float, seed: int, random_seed: bool, num_images: int, class_mode: str,
                   class_a: str, class_b: str, mix: float, limits: Limits = Limits(),
                   progress: ProgressFn | None = None) -> Iterator[CompareUpdate]:
    """DDPM and DDIM from the same starting noise, racing on a shared CPU: each step goes to whichever sampler has
    used less compute so far, so both progress live at the speed each would have alone. Then a strip of DDIM
    results at 5..100 steps from the same noise."""
    pipe = get_model(registry, model, limits)
    T = pipe.config.num_timesteps
    ddpm_steps = check_int("DDPM steps", ddpm_steps, 1, T)
    _, ddim_steps, eta, guidance_scale = check_sampling(pipe, "ddim", ddim_steps, eta, guidance_scale)
    n = check_int("number of images", num_images, 1, limits.max_compare_images)
    strip_steps = [s for s in STRIP_STEPS if s <= T]
    context = class_context(pipe, class_mode, class_a, class_b, mix)
    check_work(pipe, n, ddpm_steps + ddim_steps, guidance_scale, limits, fixed_steps=sum(strip_steps),
               fixed_name="the DDIM strip", steps_name="DDPM + DDIM step", has_class=any(context))
    seed = resolve_seed(seed, random_seed)
    labels = [context] * n if context else None
    x_T = pipe.noise(n, seed=seed)
    common = dict(n=None if context else n, guidance_scale=guidance_scale, seed=seed, x_T=x_T)
    ddim = Runner(f"DDIM ({ddim_steps} steps, eta {eta:g})", ddim_steps,
                  pipe.iter_generate(labels, sampler="ddim", steps=ddim_steps, eta=eta, **common))
    ddpm = Runner(f"DDPM ({ddpm_steps} steps)", ddpm_steps,
                  pipe.iter_generate(labels, sampler="ddpm", steps=ddpm_steps, **common))
    every = stream_every(ddim_steps + ddpm_steps, 120)
    total, k = ddim_steps + ddpm_steps, 0
    while not (ddim.done and ddpm.done):
        runner = min((r for r in (ddim, ddpm) if not r.done), key=lambda r: r.seconds)
        runner.advance()
        k += 1
        if progress is not None:
            progress(k / total, "racing DDIM against DDPM")
        if k % every == 0 or runner.done:
            yield CompareUpdate(ddim.view(limits.display_size) if ddim.last else None,
                                ddpm.view(limits.display_size) if ddpm.last else None,
                                ddim.status(), ddpm.status(), "racing…", ddim.seconds, ddpm.seconds)
    speedup = ddpm.seconds / ddim.seconds
    verdict = f"{speedup:.1f}x faster" if speedup >= 1 else f"{1 / speedup:.1f}x slower"
    path = "a deterministic path (eta = 0)" if eta == 0 else f"a path with some fresh noise (eta = {eta:g})"
    readout = (f"### DDIM took {ddim.seconds:.2f} s for {ddim_steps} steps, DDPM {ddpm.seconds:.2f} s for "
               f"{ddpm_steps} steps: {verdict}\n"
               f"Both started from the same noise x_T (seed {seed}). Each DDIM step jumps over "
               f"{T / ddim_steps:.0f} of the T = {T} training timesteps along {path}; "
               f"DDPM walks {'every one' if ddpm_steps == T else f'{ddpm_steps} respaced ones'} adding fresh noise.")
    strip: list[tuple[np.ndarray, str]] = []
    for s in strip_steps:
        start = time.perf_counter()
        images = pipe.generate(labels, sampler="ddim", steps=s, eta=eta, **common)
        strip.append((grid_array(images, limits.display_size // 2),
                      f"DDIM {s} steps · {time.perf_counter() - start:.2f} s"))
        yield CompareUpdate(ddim.view(limits.display_size), ddpm.view(limits.display_size), ddim.status(),
                            ddpm.status(), readout, ddim.seconds, ddpm.seconds, list(strip))


# ---------------------------------------------------------------------------------------------------------------
# forward process


@dataclass
class ForwardResult:
    x0: np.ndarray
    x_t: np.ndarray
    predicted_x0: np.ndarray
    predicted_noise: np.ndarray  # predicted noise | true noise
    info: str
    gif_path: str


def example_choices(pipe: Pipeline) -> list[str]:
    """Names of the real example images shipped with a model (examples/<class index>_<n>.png)."""
    if pipe.directory is None:
        return []
    folder = Path(pipe.directory) / "examples"
    names = []
    for p in sorted(folder.glob("*.png")):
        k, _, i = p.stem.partition("_")
        if k.isascii() and k.isdigit() and int(k) < len(pipe.class_names):  # isdigit alone takes '²'; int() does not
            names.append(f"{pipe.class_names[int(k)]} #{i}")
    return names


def load_example(pipe: Pipeline, name: str) -> tuple[Image.Image, int | None]:
    choices = example_choices(pipe)
    if name not in choices:
        raise InputError(f"unknown example {show(name)}; choose one of {', '.join(choices) or '(none shipped)'}")
    class_name, _, i = name.rpartition(" #")
    k = pipe.class_names.index(class_name)
    return Image.open(Path(pipe.directory) / "examples" / f"{k}_{i}.png"), k


def image_to_model(pipe: Pipeline, image: Image.Image) -> Tensor:
    """A PIL image -> (1, C, H, W) in [-1, 1] at the model's size and channels (centre crop, then resize)."""
    C, H, W = pipe.image_shape
    image = to_8bit(image).convert("L" if C == 1 else "RGB")
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((W, H), Image.Resampling.LANCZOS)
    array = np.asarray(image, dtype=np.float32).reshape(H, W, C)
    return torch.from_numpy(array).permute(2, 0, 1)[None] / 127.5 - 1.0


def source_image(pipe: Pipeline, example: str | None, upload: str | None, limits: Limits) -> tuple[Tensor, int | None]:
    """The forward tab's image, an upload or else a shipped example: (1, C, H, W) in [-1, 1] on the model's device,
    and its class index when known (examples only)."""
    if upload:
        image, k = load_upload(upload, limits), None
    elif example:
        image, k = load_example(pipe, example)
    else:
        raise InputError("choose an example image or upload one")
    return image_to_model(pipe, image).to(pipe.device), k


def noised(pipe: Pipeline, x0: Tensor, t: int, seed: int) -> tuple[Tensor, Tensor]:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps with eps drawn from `seed` on the CPU: (x_t, eps). The
    forward tab and the way back share it, so the same image, t and seed give the same x_t in both."""
    noise = pipe.noise(len(x0), seed)
    return pipe.schedule.q_sample(x0, torch.full((len(x0),), t, device=pipe.device), noise), noise


def forward_process(registry: ModelRegistry, outputs: OutputFiles, model: str, example: str | None,
                    upload: str | None, t: int, seed: int, limits: Limits = Limits()) -> ForwardResult:
    """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps for a real image, the model's one-step predictions of
    x0 and eps from x_t (with the image's class when known), and a GIF of the whole forward process."""
    pipe = get_model(registry, model, limits)
    check_work(pipe, 1, 1, 1.0, limits)  # one unguided pass over one image
    T = pipe.config.num_timesteps
    t = check_int("noise level t", t, 0, T - 1)
    seed = check_int("seed", seed, 0, SEED_MAX)
    x0, k = source_image(pipe, example, upload, limits)
    x_t, noise = noised(pipe, x0, t, seed)
    s = pipe.schedule
    tt = torch.tensor([t], device=pipe.device)
    labels = None
    if pipe.class_names:
        labels = [k] if k is not None else [None]
    context = pipe.context(labels).to(pipe.device) if labels is not None else None
    denoise = make_denoiser(pipe.model, s, context, guidance_scale=1.0, prediction_type=pipe.config.prediction_type,
                            clip_x0=pipe.config.clip_x0, autocast_dtype=pipe.autocast_dtype)
    with torch.inference_mode():
        x0_hat, eps_hat = denoise(x_t, tt)
    ab = float(s.alphas_cumprod[t])
    size = limits.display_size // 2
    noise_view = side_by_side(grid_array(((eps_hat / 3 + 1) / 2).clamp(0, 1), size),
                              grid_array(((noise / 3 + 1) / 2).clamp(0, 1), size))
    info = (f"t = {t} of {T}: alpha_bar_t = {ab:.4f}, signal x{math.sqrt(ab):.3f} + noise x{math.sqrt(1 - ab):.3f}, "
            f"SNR = {ab / max(1 - ab, 1e-12):.3g}. One network call from x_t: x0 error (MSE) "
            f"{float(((x0_hat - x0) ** 2).mean()):.4f}, noise error {float(((eps_hat - noise) ** 2).mean()):.4f}"
            + (f"; class context: {pipe.class_names[k]}" if k is not None else "; no class context"))
    frames = []
    for tf in np.linspace(0, T - 1, 40).round().astype(int):
        xf = s.q_sample(x0, torch.tensor([int(tf)], device=pipe.device), noise)
        frames.append(to_pil(grid_array(to_unit_range(xf), size), 1))
    gif = save_gif(frames, outputs.path("forward", ".gif"), duration_ms=60)
    return ForwardResult(grid_array(to_unit_range(x0), size), grid_array(to_unit_range(x_t), size),
                         grid_array(to_unit_range(x0_hat), size), noise_view, info, str(gif))


# ---------------------------------------------------------------------------------------------------------------
# the way back: denoise a noised image (SDEdit), invert DDIM


OWN_CLASS, NO_CLASS = "its own class", "no class"


def toward_choices(pipe: Pipeline) -> list[str]:
    """What the way back can denoise toward: the image's own class (an example's), any class, or none."""
    return [OWN_CLASS, *pipe.class_names, NO_CLASS] if pipe.class_names else [NO_CLASS]


def toward_labels(pipe: Pipeline, toward: str, k: int | None) -> tuple[list[int | None] | None, str]:
    """The labels for one image and how to say them: an upload has no class of its own, so it goes unconditional."""
    choice = check_choice("denoise toward", toward, toward_choices(pipe))
    if not pipe.class_names:
        return None, "unconditional"
    if choice == OWN_CLASS:
        return ([k], f"toward its own class, {pipe.class_names[k]}") if k is not None else (
            [None], "with no class (an upload has no class of its own)")
    if choice == NO_CLASS:
        return [None], "with no class"
    return [pipe.class_names.index(choice)], f"toward {choice}"


def guided_toward(pipe: Pipeline, toward: str, k: int | None, guidance_scale: float
                  ) -> tuple[list[int | None] | None, str, float]:
    """`toward_labels`, and the guidance they run at: 1 when there is no class to guide toward (the denoiser then
    makes one pass at any w, guidance.has_class), so that the readout and the work cap say what runs."""
    labels, how = toward_labels(pipe, toward, k)
    return labels, how, 1.0 if labels is None or labels == [None] else guidance_scale


@dataclass
class BackResult:
    image: np.ndarray
    info: str


def denoise_back(registry: ModelRegistry, model: str, example: str | None, upload: str | None, t: int, seed: int,
                 sampler: str, steps: int, toward: str, guidance_scale: float,
                 limits: Limits = Limits()) -> BackResult:
    """SDEdit (Meng et al. 2022): the forward tab's x_t (same image, t and seed) denoised from t by `sampler`, which
    runs t and then the timesteps of its `steps`-step run below t (`Pipeline.plan`; DDIM and DPM-Solver++
    deterministically, eta 0; without a class, unguided).
    A low t keeps the image, a high one keeps only its rough layout, and a class other than the image's own steers
    what the noise erased."""
    pipe = get_model(registry, model, limits)
    T = pipe.config.num_timesteps
    t = check_int("noise level t", t, 0, T - 1)
    seed = check_int("seed", seed, 0, SEED_MAX)
    sampler, steps, _, guidance_scale = check_sampling(pipe, sampler, steps, 0.0, guidance_scale)
    plan = pipe.plan(sampler, steps, t_start=t)
    x0, k = source_image(pipe, example, upload, limits)
    labels, how, guidance_scale = guided_toward(pipe, toward, k, guidance_scale)
    check_work(pipe, 1, len(plan), guidance_scale, limits)
    x_t, _ = noised(pipe, x0, t, seed)
    start = time.perf_counter()
    # DDPM's fresh noise must not be the noise in x_t: the sampler's generator gets the next seed, not x_t's
    out = pipe.generate(labels, n=1 if labels is None else None, sampler=sampler, steps=steps, eta=0.0,
                        guidance_scale=guidance_scale, x_T=x_t, t_start=t, seed=(seed + 1) % (SEED_MAX + 1))
    seconds = time.perf_counter() - start
    change = float((out * 2 - 1 - x0).abs().mean()) * 127.5
    info = (f"**{sampler.upper()} from t = {t}** {how}, guidance {guidance_scale:g}: {plural(len(plan), 'step')} "
            f"down from t = {t} on the timesteps of a {steps}-step run, in {seconds:.2f} s. The result differs "
            f"from the original image by {change:.1f} grey levels (of 255) on average.")
    return BackResult(grid_array(out, limits.display_size // 2), info)


@dataclass
class RoundTripResult:
    noise: np.ndarray  # the inverted x_T, shown as (x_T / 3 + 1) / 2
    reconstruction: np.ndarray
    info: str


def ddim_round_trip(registry: ModelRegistry, model: str, example: str | None, upload: str | None, steps: int,
                    toward: str, seed: int, limits: Limits = Limits()) -> RoundTripResult:
    """DDIM inversion: the image run up DDIM's deterministic path to the noise x_T it comes from, then DDIM from that
    x_T back down, with the plain conditional model (guidance 1, which inverts best). The reconstruction error is
    set against DDIM from fresh noise (`seed`) with the same class: what the inversion recovered."""
    pipe = get_model(registry, model, limits)
    steps = check_int("steps", steps, 2, pipe.config.num_timesteps)
    seed = check_int("seed", seed, 0, SEED_MAX)
    check_work(pipe, 1, steps, 1.0, limits, runs=3, runs_name="up to noise, down, and down from fresh noise")
    x0, k = source_image(pipe, example, upload, limits)
    labels, how = toward_labels(pipe, toward, k)
    run = dict(n=1 if labels is None else None, sampler="ddim", steps=steps, eta=0.0, guidance_scale=1.0)
    start = time.perf_counter()
    x_T = pipe.invert(to_unit_range(x0), labels, steps=steps, guidance_scale=1.0)
    back = pipe.generate(labels, x_T=x_T, **run)
    seconds = time.perf_counter() - start
    fresh = pipe.generate(labels, seed=seed, **run)
    err, err_fresh = (float((y * 2 - 1 - x0).abs().mean()) * 127.5 for y in (back, fresh))
    size = limits.display_size // 2
    info = (f"**DDIM inversion, {steps} steps** {how}, guidance 1: {plural(steps, 'network call')} from the image "
            f"up to x_T (mean {float(x_T.mean()):+.2f}, standard deviation {float(x_T.std()):.2f}, against 0 and 1 for "
            f"the noise sampling starts from; the image's layout can survive in it), "
            f"then DDIM {steps} from that x_T back down, {seconds:.2f} s in all. The reconstruction is off by "
            f"{err:.1f} grey levels (of 255) on average; DDIM from fresh noise (seed {seed}) with the same class "
            f"lands {err_fresh:.1f} away. DDPM cannot do this: every one of its steps adds fresh noise, so no single "
            f"x_T leads to a given image.")
    return RoundTripResult(grid_array(((x_T / 3 + 1) / 2).clamp(0, 1), size), grid_array(back, size), info)


@dataclass
class FillResult:
    masked: np.ndarray  # the kept part, the region to fill in grey
    filled: np.ndarray
    info: str


def fill_in(registry: ModelRegistry, model: str, example: str | None, upload: str | None, region: str, sampler: str,
            steps: int, resample: int, toward: str, guidance_scale: float, seed: int,
            limits: Limits = Limits()) -> FillResult:
    """Inpainting (`Pipeline.inpaint`): a preset region of the forward tab's image generated anew by `sampler` (DDIM
    and DPM-Solver++ deterministic, eta 0) from fresh noise (`seed`), every step taken `resample` times (RePaint),
    to match the rest of the image and `toward`'s class; the rest is kept exactly."""
    pipe = get_model(registry, model, limits)
    region = check_choice("region to fill", region, REGIONS)
    sampler, steps, _, guidance_scale = check_sampling(pipe, sampler, steps, 0.0, guidance_scale)
    resample = check_int("resample", resample, 1, limits.max_resample)
    if resample > 1 and pipe.plan(sampler, steps).is_multistep:
        raise InputError(NOT_MULTISTEP)
    seed = check_int("seed", seed, 0, SEED_MAX)
    x0, k = source_image(pipe, example, upload, limits)
    labels, how, guidance_scale = guided_toward(pipe, toward, k, guidance_scale)
    check_work(pipe, 1, steps, guidance_scale, limits, runs=resample, runs_name="resampling")
    _, H, W = pipe.image_shape
    fill = region_mask(region, H, W).to(pipe.device)  # one pattern of scattered pixels: the seed changes the noise
    image = to_unit_range(x0)
    start = time.perf_counter()
    out = pipe.inpaint(image, fill, labels, sampler=sampler, steps=steps, eta=0.0, guidance_scale=guidance_scale,
                       seed=seed, resample=resample)
    seconds = time.perf_counter() - start
    kept = float((out - image).abs().amax(dim=1)[0][~fill[0, 0]].max()) * 255
    changed = float((out - image).abs().mean(dim=1)[0][fill[0, 0]].mean()) * 255
    size = limits.display_size // 2
    taken = ("each taken once" if resample == 1
             else f"each but the last (to clean data) taken {resample} times (RePaint resampling)")
    info = (f"**{sampler.upper()} {steps} steps** {how}, guidance {guidance_scale:g}, {taken}: the {region} "
            f"({float(fill.float().mean()):.0%} of the pixels) filled in, in {seconds:.2f} s. At every step the kept "
            f"pixels replace their part of the network's x0 prediction (DDNM), so the chain keeps them on the "
            f"forward process of this image and ends on them exactly (off by {kept:.2g} grey levels at most); the "
            f"filled pixels differ from the original's by {changed:.1f} grey levels (of 255) on average."
            + (" Resample more than once (DDIM or DDPM) if the two parts do not agree (seams, speckles)."
               if resample == 1 else ""))
    return FillResult(grid_array(torch.where(fill, 0.5, image), size), grid_array(out, size), info)


# ---------------------------------------------------------------------------------------------------------------
# interpolation: DDIM's x_T is a code for its image, DDPM's is not


@dataclass
class InterpolateResult:
    ddim: np.ndarray  # the frames in one row
    ddpm: np.ndarray | None  # the same x_T's through DDPM; None when DDPM steps is 0
    info: str
    gif_path: str  # the DDIM morph there and back


def end_choices(pipe: Pipeline) -> list[str]:
    """What an interpolation's end can be: a class, or no class (the only choice of an unconditional model)."""
    return [*pipe.class_names, NO_CLASS]


def end_label(pipe: Pipeline, name: str, which: str) -> int | None:
    choice = check_choice(which, name, end_choices(pipe))
    return None if choice == NO_CLASS else pipe.class_names.index(choice)


def interpolate(registry: ModelRegistry, outputs: OutputFiles, model: str, class_from: str, seed_from: int,
                class_to: str, seed_to: int, frames: int, path: str, ddim_steps: int, ddpm_steps: int,
                guidance_scale: float, limits: Limits = Limits()) -> InterpolateResult:
    """Interpolation (DDIM paper, sec. 5.3; `Pipeline.interpolate`): `frames` starting noises on the `path` between
    the noises of the two seeds, with the class context going from one end's class to the other's, through
    deterministic DDIM (a morph) and, unless `ddpm_steps` is 0, through DDPM from the same x_T's, which jumps. The
    readout measures both paths in grey levels."""
    pipe = get_model(registry, model, limits)
    T = pipe.config.num_timesteps
    k = check_int("frames", frames, 2, limits.max_frames)
    path = check_choice("noise path", path, PATHS)
    ddim_steps = check_int("DDIM steps", ddim_steps, 1, T)
    ddpm_steps = check_int("DDPM steps", ddpm_steps, 0, T)
    seeds = (check_int("seed of the first end", seed_from, 0, SEED_MAX),
             check_int("seed of the last end", seed_to, 0, SEED_MAX))
    guidance_scale = check_float("guidance scale", guidance_scale, 0.0, 20.0)
    start, end = end_label(pipe, class_from, "first end's class"), end_label(pipe, class_to, "last end's class")
    if start is None and end is None:  # no class at either end: one pass at any w (guidance.has_class)
        guidance_scale = 1.0
    check_work(pipe, k, ddim_steps + ddpm_steps, guidance_scale, limits, steps_name="DDIM + DDPM step")
    run = dict(frames=k, noise_seeds=seeds, path=path, guidance_scale=guidance_scale)
    began = time.perf_counter()
    ddim = pipe.interpolate(start, end, sampler="ddim", eta=0.0, steps=ddim_steps, **run)
    seconds = time.perf_counter() - began
    width = 3 * limits.display_size
    changes = frame_changes(ddim)
    ends = "no class" if start is None and end is None else (
        f"{pipe.class_names[start] if start is not None else 'no class'} to "
        f"{pipe.class_names[end] if end is not None else 'no class'}")
    info = (f"**DDIM {ddim_steps} (eta 0)**, {k} frames from seed {seeds[0]} to seed {seeds[1]} along a {path} path, "
            f"{ends}, guidance {guidance_scale:g}: {seconds:.2f} s. Neighbouring frames differ by "
            f"{float(changes.mean()):.1f} grey levels (of 255) on average, {float(changes.max()):.1f} at most; the "
            f"path through the frames is {path_ratio(ddim):.2f}x as long as the direct change from the first to the "
            f"last. Deterministic DDIM maps each x_T to one image, so nearby x_T's give nearby images: a morph.")
    ddpm_row = None
    if ddpm_steps:
        began = time.perf_counter()
        # DDPM's step noise from a seed above the seed box's range: never one of the x_T seeds, whose first draw
        # would be the first frame's x_T again
        ddpm = pipe.interpolate(start, end, sampler="ddpm", steps=ddpm_steps, seed=seeds[0] + SEED_MAX + 1, **run)
        seconds = time.perf_counter() - began
        changes = frame_changes(ddpm)
        info += (f"\n\n**DDPM {ddpm_steps}** from the same x_T's: {seconds:.2f} s; neighbouring frames differ by "
                 f"{float(changes.mean()):.1f} on average, {float(changes.max()):.1f} at most, a path "
                 f"{path_ratio(ddpm):.2f}x the direct change. Each DDPM step adds fresh noise, and the first one all "
                 f"but forgets x_T (alpha_bar at t = {T - 1} is {float(pipe.schedule.alphas_cumprod[-1]):.1e}: x_T "
                 f"says next to nothing about the image), so the noise drawn on the way down, not x_T, decides "
                 f"DDPM's frames: they jump.")
        ddpm_row = grid_array(ddpm, width, cols=k)
    if k >= 3:  # the middle frame (with an even count, the two middle frames) against the ends
        middle, kept = detail(ddim[(k - 1) // 2:k // 2 + 1]).mean(), detail(ddim[[0, -1]]).mean()
        info += (f"\n\nThe middle frame{'s have' if k % 2 == 0 else ' has'} "
                 f"{float(middle / kept) if kept > 0 else 1.0:.2f}x the ends' detail (mean change between "
                 f"neighbouring pixels). ")
        if path == "slerp":
            info += "Slerp keeps every x_T at the norm of a draw from N(0, I)."
        else:
            halfway = float(pipe.interpolation_noise(seeds, torch.tensor([0.5]), "lerp").std())
            info += (f"Lerp's x_T halfway has standard deviation {halfway:.2f}, not 1: noise the network never "
                     f"starts from, so the middle images come out flatter, with less detail. Slerp avoids it.")
    frames_pil = [to_pil(grid_array(ddim[i:i + 1], limits.display_size // 2), 1) for i in range(k)]
    gif = save_gif(frames_pil + frames_pil[-2:0:-1], outputs.path("interpolation", ".gif"), duration_ms=250,
                   final_hold_ms=250)
    return InterpolateResult(grid_array(ddim, width, cols=k), ddpm_row, info, str(gif))


# ---------------------------------------------------------------------------------------------------------------
# model information


def evaluation_rows(pipe: Pipeline) -> list[dict]:
    """The model card's evaluation table (evaluation.json in the model directory) as plot rows; [] if none."""
    if pipe.directory is None:
        return []
    path = Path(pipe.directory) / "evaluation.json"
    try:
        rows = json.loads(path.read_text())["rows"]
    except (OSError, ValueError, KeyError, TypeError):
        return []
    if not isinstance(rows, list):
        return []
    out = []
    for r in rows:
        try:
            label = SamplerSetting(r["sampler"], int(r["steps"]), float(r["eta"])).short_label
            out.append({"setting": label, "sampler": r["sampler"].upper(), "steps": int(r["steps"]),
                        "guidance": float(r["guidance_scale"]), "ms per image": 1000 * float(r["seconds_per_image"]),
                        "FD / floor": float(r["fd_ratio"]), "class accuracy": float(r["accuracy"])})
        except (KeyError, TypeError, ValueError, AttributeError):  # a malformed row is skipped, not fatal
            continue
    return out


def model_summary(pipe: Pipeline) -> str:
    c = pipe.config
    params = sum(p.numel() for p in pipe.model.parameters())
    s = c.sampling
    where = f" at t in [{s.guidance_interval[0]}, {s.guidance_interval[1]}]" if s.guidance_interval else ""
    grid = "tuned" if s.sampler == "ddim" and str(s.steps) in (s.tuned_timesteps or {}) else s.spacing
    r = c.unet.guidance_range
    distilled = f" · {describe_range(r)}" if r else ""
    return (f"**{c.dataset or 'model'}** · {c.unet.image_size}x{c.unet.image_size}x{c.unet.in_channels} · "
            f"{params / 1e6:.1f} M parameters · T = {c.num_timesteps}, {c.schedule} schedule, "
            f"{c.prediction_type}-prediction · {len(c.class_names)} classes · defaults: {s.sampler.upper()} "
            f"{s.steps} steps ({grid} timesteps), guidance {s.guidance_scale:g}{where}{distilled} · "
            f"{precision_name(pipe.autocast_dtype)} on {pipe.device} "
            f"({pipe.precision_reason.split(': ', 1)[-1]})")

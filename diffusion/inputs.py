"""Validation of user input for the app: every check names the allowed values in its message, and a bad value
raises InputError (shown to the user as an error; the server keeps serving).

Usage: steps = check_int("steps", value, 1, 1000)
"""

from __future__ import annotations

import math
import re
import secrets
import struct
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .checkpoint import CheckpointError
from .config import SAMPLER_NAMES
from .guidance import passes_per_guided_step
from .pipeline import Pipeline
from .registry import ModelNotFound, ModelRegistry

CLASS_MODES = ("class", "mix", "none")
SAMPLERS = SAMPLER_NAMES
SEED_MAX = 2**31 - 1


class InputError(ValueError):
    """Bad input from a user; the message says what is allowed. The app shows it as an error, never crashes."""


@dataclass(frozen=True)
class Limits:
    """Caps that keep a 2-vCPU server responsive: one request holds the CPU for well under half a minute with the
    shipped models (about 1 ms per image per network pass in bf16)."""

    max_images: int = 16
    max_compare_images: int = 4
    max_frames: int = 16  # frames of an interpolation
    max_resample: int = 10  # takes of every step when filling in (RePaint)
    # network FLOPs per request: images x steps x passes (2 when guided) x FLOPs per pass. About 16,200 image-passes of
    # the shipped 0.52-GFLOP network (16 guided images x 500 steps fit); a bigger network gets proportionally fewer
    max_tflop: float = 8.4
    max_upload_bytes: int = 10 * 2**20
    max_upload_pixels: int = 4096 * 4096
    max_hub_id_length: int = 96
    display_size: int = 320  # pixels of the longer side of a live image


# ---------------------------------------------------------------------------------------------------------------
# input validation


def check_int(name: str, value, lo: int, hi: int) -> int:
    """An integer in [lo, hi]; accepts integral floats (what JSON clients send), rejects bools, NaN, strings."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"{name} must be an integer from {lo} to {hi}, got {show(value)}")
    if isinstance(value, float) and (not math.isfinite(value) or value != int(value)):
        raise InputError(f"{name} must be an integer from {lo} to {hi}, got {show(value)}")
    if not lo <= int(value) <= hi:
        raise InputError(f"{name} must be an integer from {lo} to {hi}, got {show(value)}")
    return int(value)


def check_float(name: str, value, lo: float, hi: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
            or not lo <= value <= hi:
        raise InputError(f"{name} must be a number from {lo:g} to {hi:g}, got {show(value)}")
    return float(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise InputError(f"{name} must be true or false, got {show(value)}")
    return value


def check_choice(name: str, value, choices) -> str:
    if not isinstance(value, str) or value not in choices:
        raise InputError(f"{name} must be one of {', '.join(map(str, choices))}; got {show(value)}")
    return value


def show(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def get_model(registry: ModelRegistry, name, limits: Limits) -> Pipeline:
    if not isinstance(name, str) or not name.strip():
        raise InputError(f"choose a model: {', '.join(registry.names()) or '(none found)'}")
    if len(name) > limits.max_hub_id_length:
        raise InputError(f"model name too long ({len(name)} characters; at most {limits.max_hub_id_length})")
    try:
        return registry.get(name)
    except (ModelNotFound, CheckpointError) as e:
        raise InputError(hide_paths(str(e))) from e


def hide_paths(message: str) -> str:
    """Absolute server file paths in an error message reduced to their last two parts (what the user needs to know);
    relative names such as Hub repo ids ('owner/name') are left as they are."""
    return re.sub(r"(?<![\w.~-])/[^\s:'\"()]+", lambda m: "/".join(Path(m.group(0)).parts[-2:]), message)


def resolve_seed(seed, random_seed: bool) -> int:
    if check_bool("random seed", random_seed):
        return secrets.randbelow(SEED_MAX + 1)
    return check_int("seed", seed, 0, SEED_MAX)


def class_context(pipe: Pipeline, mode: str, class_a, class_b, mix) -> list[float]:
    """One context vector from the UI's class panel: a class, a mix (1 - w) a + w b, or no class."""
    names = pipe.class_names
    if not names:
        return []
    mode = check_choice("class mode", mode, CLASS_MODES)
    w = check_float("mix weight", mix, 0.0, 1.0)
    vector = [0.0] * len(names)
    if mode == "none":
        return vector
    a = check_choice("class", class_a, names)
    if mode == "class":
        vector[names.index(a)] = 1.0
        return vector
    b = check_choice("second class", class_b, names)
    vector[names.index(a)] += 1.0 - w
    vector[names.index(b)] += w
    return vector


def check_sampling(pipe: Pipeline, sampler, steps, eta, guidance_scale) -> tuple[str, int, float, float]:
    T = pipe.config.num_timesteps
    return (check_choice("sampler", sampler, SAMPLERS), check_int("steps", steps, 1, T),
            check_float("eta", eta, 0.0, 1.0), check_float("guidance scale", guidance_scale, 0.0, 20.0))


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def check_work(pipe: Pipeline, images: int, steps: int, guidance_scale: float, limits: Limits, *,
               fixed_steps: int = 0, fixed_name: str = "", steps_name: str = "step", runs: int = 1,
               runs_name: str = "", has_class: bool = True) -> None:
    """Work = network FLOPs: images x steps x FLOPs per pass, twice per step when a class-conditional model guides
    (conditional + unconditional; not when the request asks for no class, `has_class` False: see
    guidance.has_class). `fixed_steps` are steps the request adds that the user does not set (the comparison's DDIM
    strip, `fixed_name`); the error counts the user's steps (`steps_name`) apart from them. A request that runs the
    user's steps `runs` times (`runs_name` says which) is charged for each run."""
    # an upper bound when the model guides over an interval only
    passes = passes_per_guided_step(guidance_scale, has_class and pipe.config.num_classes > 0,
                                    pipe.config.unet.guidance_range)
    cap = limits.max_tflop * 1e12
    guided = " x 2 (guidance)" if passes == 2 else ""
    if passes * pipe.flops_per_image > cap:
        raise InputError(f"this model is too large for this server: one step over one image{guided} is "
                         f"{passes * pipe.flops_per_image / 1e12:,.1f} TFLOP, over the cap of {limits.max_tflop:g} "
                         f"TFLOP per request")
    per_step = images * passes * pipe.flops_per_image  # one step over the whole batch
    flops = (runs * steps + fixed_steps) * per_step
    if flops <= cap:
        return
    counted = (f"({plural(steps, steps_name)} + {fixed_steps} for {fixed_name})" if fixed_steps
               else plural(steps, steps_name))
    if runs > 1:
        counted += f" x {runs} runs ({runs_name})"
    most = (int(cap // per_step) - fixed_steps) // runs
    advice = (f"with this model, at most {plural(most, steps_name)} for {plural(images, 'image')}" if most >= 1
              else f"with this model, {plural(images, 'image')} leave no room for even one {steps_name}")
    raise InputError(f"{plural(images, 'image')} x {counted}{guided} x "
                     f"{pipe.flops_per_image / 1e9:,.3f} GFLOP per image pass = {flops / 1e12:,.3f} TFLOP is too "
                     f"much work for this server: keep it at or below {limits.max_tflop:g} TFLOP ({advice}; fewer "
                     f"images, or fewer steps)")


def load_upload(path, limits: Limits) -> Image.Image:
    """Open an uploaded file as an image, refusing non-images, huge files and decompression bombs."""
    if not isinstance(path, (str, Path)) or not Path(path).is_file():
        raise InputError("the upload is not a readable file")
    size = Path(path).stat().st_size
    if size > limits.max_upload_bytes:
        raise InputError(f"the upload is {size / 2**20:.1f} MB; at most {limits.max_upload_bytes / 2**20:.0f} MB")
    try:
        image = Image.open(path)
        if image.width * image.height > limits.max_upload_pixels:
            raise InputError(f"the upload is {image.width}x{image.height} pixels; at most "
                             f"{limits.max_upload_pixels} pixels")
        image.load()
    except InputError:
        raise
    except Image.DecompressionBombError as e:
        raise InputError(f"the upload has too many pixels (decompression bomb guard); at most "
                         f"{limits.max_upload_pixels} pixels") from e
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError, IndexError, struct.error) as e:
        # Pillow's decoders raise any of these for broken files (SyntaxError: e.g. a PNG with a corrupt chunk)
        raise InputError(f"the upload is not an image this app can read (PNG, JPEG, WebP, GIF, BMP): "
                         f"{e.__class__.__name__}") from e
    return image



"""The model configuration that travels with the weights as config.json: network, noise schedule, prediction type,
the data it was trained on (image shape, class names) and the sampling defaults that evaluated best.

Usage: cfg = DiffusionConfig.from_json_file("checkpoints/fashion-mnist/config.json"); cfg.unet.image_size
"""

from __future__ import annotations

import argparse
import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, get_args

from .schedules import PREDICTION_TYPES, SCHEDULE_NAMES, PredictionType, ScheduleName
from .unet import UNetConfig

FORMAT_VERSION = 1
# Bounds that keep a hostile or mistyped config.json (e.g. from a Hub repo) from allocating the machine away.
MAX_TIMESTEPS, MAX_IMAGE_SIZE, MAX_CLASSES, MAX_LEVELS, MAX_RES_BLOCKS, MAX_WIDTH = 10_000, 256, 1000, 6, 8, 1024
ARCHITECTURES = ("unet",)
SamplerName = Literal["ddim", "ddpm", "dpm++"]
Spacing = Literal["leading", "trailing", "linspace", "quadratic"]
SAMPLER_NAMES: tuple[str, ...] = get_args(SamplerName)
SPACINGS: tuple[str, ...] = get_args(Spacing)


class ConfigError(ValueError):
    """config.json is malformed or names something this version cannot build."""


@dataclass
class SamplingDefaults:
    """What Pipeline.generate uses when an argument is left out."""

    sampler: SamplerName = "ddim"
    steps: int = 20
    eta: float = 0.0
    guidance_scale: float = 1.0
    spacing: Spacing = "trailing"
    # [t_lo, t_hi]: guidance only at timesteps in this range, plain conditional passes elsewhere (Kynkaenniemi et
    # al. 2024, arXiv:2404.07724); None = at every step.
    guidance_interval: list[int] | None = None
    # DDIM timestep grids tuned for this model, by step count ({"20": [t_1, ..., t_20]}), written by
    # `python -m diffusion.tune_steps`; DDIM uses one when run with that many steps and no explicit spacing.
    tuned_timesteps: dict[str, list[int]] | None = None


@dataclass
class DiffusionConfig:
    unet: UNetConfig = field(default_factory=UNetConfig)
    architecture: str = "unet"
    num_timesteps: int = 1000
    schedule: ScheduleName = "cosine"
    beta_start: float = 1e-4  # linear schedule only
    beta_end: float = 0.02  # linear schedule only
    prediction_type: PredictionType = "v"
    clip_x0: bool = True  # clip the predicted x0 to the data range [-1, 1] while sampling
    dataset: str = ""
    class_names: list[str] = field(default_factory=list)
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    format_version: int = FORMAT_VERSION

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return self.unet.in_channels, self.unet.image_size, self.unet.image_size

    @property
    def num_classes(self) -> int:
        return self.unet.num_classes

    def validate(self) -> None:
        """Raise ConfigError naming the first problem (wrong types included)."""
        try:
            self._check()
        except ConfigError:
            raise
        except (TypeError, ValueError) as e:
            raise ConfigError(f"invalid value: {e}") from e

    def _check(self) -> None:
        if self.format_version != FORMAT_VERSION:
            raise ConfigError(f"format_version {self.format_version} is not supported (this code reads "
                              f"{FORMAT_VERSION})")
        if self.architecture not in ARCHITECTURES:
            raise ConfigError(f"unknown architecture {self.architecture!r}; this version builds {ARCHITECTURES}")
        self.unet.validate()
        if not isinstance(self.num_timesteps, int) or not 1 <= self.num_timesteps <= MAX_TIMESTEPS:
            raise ConfigError(f"num_timesteps must be an integer in [1, {MAX_TIMESTEPS}], got {self.num_timesteps!r}")
        u = self.unet
        if (u.image_size > MAX_IMAGE_SIZE or u.num_classes > MAX_CLASSES or len(u.channel_mult) > MAX_LEVELS
                or u.num_res_blocks > MAX_RES_BLOCKS or u.base_channels * max(u.channel_mult, default=1) > MAX_WIDTH):
            raise ConfigError(f"network too large for this tool: image_size <= {MAX_IMAGE_SIZE}, num_classes <= "
                              f"{MAX_CLASSES}, <= {MAX_LEVELS} levels, <= {MAX_RES_BLOCKS} blocks per level, width "
                              f"<= {MAX_WIDTH}")
        if not isinstance(self.class_names, list) or not all(isinstance(c, str) for c in self.class_names):
            raise ConfigError("class_names must be a list of strings")
        if self.schedule not in SCHEDULE_NAMES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; choose one of {SCHEDULE_NAMES}")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ConfigError(f"unknown prediction_type {self.prediction_type!r}; choose one of {PREDICTION_TYPES}")
        if len(self.class_names) != self.unet.num_classes:
            raise ConfigError(f"{len(self.class_names)} class_names for a model with {self.unet.num_classes} classes")
        s = self.sampling
        if s.sampler not in SAMPLER_NAMES or s.spacing not in SPACINGS:
            raise ConfigError(f"sampling defaults: sampler must be one of {SAMPLER_NAMES} and spacing one of "
                              f"{SPACINGS}, got {s.sampler!r}, {s.spacing!r}")
        if not (isinstance(s.steps, int) and 1 <= s.steps <= self.num_timesteps):
            raise ConfigError(f"sampling defaults: steps must be in [1, {self.num_timesteps}], got {s.steps!r}")
        if not (0.0 <= s.eta <= 1.0) or not math.isfinite(s.guidance_scale):
            raise ConfigError(f"sampling defaults: eta must be in [0, 1] and guidance_scale finite, got "
                              f"{s.eta!r}, {s.guidance_scale!r}")
        if s.guidance_interval is not None:
            check_guidance_interval(s.guidance_interval, self.num_timesteps)
        if s.tuned_timesteps is not None:
            if not isinstance(s.tuned_timesteps, dict):
                raise ConfigError(f"sampling defaults: tuned_timesteps must map step counts to grids, got "
                                  f"{s.tuned_timesteps!r}")
            for steps, grid in s.tuned_timesteps.items():
                try:
                    check_grid(grid, self.num_timesteps, int(steps) if str(steps).isdecimal() else -1)
                except ValueError as e:
                    raise ConfigError(f"sampling defaults: tuned_timesteps[{steps!r}]: {e}") from e

    def override_sampling(self, *, spacing: str | None = None, guidance_interval: list[int] | None = None,
                          clip_x0: bool | None = None) -> None:
        """Replace the sampling settings that are given (None = keep), then validate (ConfigError if bad)."""
        if spacing is not None:
            self.sampling.spacing = spacing
        if guidance_interval is not None:
            self.sampling.guidance_interval = list(guidance_interval)
        if clip_x0 is not None:
            self.clip_x0 = clip_x0
        self.validate()

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json_file(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DiffusionConfig:
        """Build and validate; unknown keys are an error (a typo must not be silently ignored)."""
        if not isinstance(data, dict):
            raise ConfigError(f"expected a JSON object, got {type(data).__name__}")
        data = dict(data)
        try:
            unet = UNetConfig(**_known(UNetConfig, data.pop("unet", {}), "unet"))
            sampling = SamplingDefaults(**_known(SamplingDefaults, data.pop("sampling", {}), "sampling"))
            config = cls(unet=unet, sampling=sampling, **_known(cls, data, "top level"))
        except TypeError as e:  # a missing or misspelt constructor argument
            raise ConfigError(str(e)) from e
        config.validate()
        return config

    @classmethod
    def from_json_file(cls, path: str | Path) -> DiffusionConfig:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from e
        try:
            return cls.from_dict(data)
        except ConfigError as e:
            raise ConfigError(f"{path}: {e}") from e


def check_grid(grid: object, T: int, steps: int | None = None) -> list[int]:
    """A given timestep grid (e.g. one found by `diffusion.tune_steps`): strictly increasing integers in [0, T-1]
    (and `steps` of them if given) -> the list; anything else is a ValueError naming the problem."""
    ok = (isinstance(grid, (list, tuple)) and len(grid) >= 1
          and all(isinstance(t, int) and not isinstance(t, bool) for t in grid)
          and all(b > a for a, b in zip(grid, grid[1:])) and 0 <= grid[0] and grid[-1] <= T - 1)
    if not ok:
        raise ValueError(f"a timestep grid must be strictly increasing integers in [0, {T - 1}], got {grid!r}")
    if steps is not None and len(grid) != steps:
        raise ValueError(f"a grid of {len(grid)} timesteps cannot run {steps} steps")
    return list(grid)


def check_guidance_interval(interval: Any, num_timesteps: int) -> tuple[int, int]:
    """[t_lo, t_hi] with integers 0 <= t_lo <= t_hi < T -> (t_lo, t_hi); anything else is a ConfigError."""
    ok = (isinstance(interval, (list, tuple)) and len(interval) == 2
          and all(isinstance(t, int) and not isinstance(t, bool) for t in interval)
          and 0 <= interval[0] <= interval[1] <= num_timesteps - 1)
    if not ok:
        raise ConfigError(f"guidance_interval must be two timesteps [t_lo, t_hi] with 0 <= t_lo <= t_hi <= "
                          f"{num_timesteps - 1}, got {interval!r}")
    return int(interval[0]), int(interval[1])


def add_sampling_arguments(parser: argparse.ArgumentParser) -> None:
    """--spacing, --guidance-interval and --clip-x0 for the CLIs that sample a saved model (sample, evaluate,
    release); read them back with `sampling_overrides(args)`."""
    parser.add_argument("--spacing", default=None, choices=SPACINGS,
                        help="timestep spacing (default: the model's); DDIM keeps the model's tuned timesteps at the "
                             "step counts it has them for")
    parser.add_argument("--guidance-interval", type=int, nargs=2, default=None, metavar=("T_LO", "T_HI"),
                        help="guide only at timesteps T_LO..T_HI (default: the model's, usually every step)")
    parser.add_argument("--clip-x0", default=None, choices=("on", "off"),
                        help="clip the predicted x0 to [-1, 1] while sampling (default: the model's)")


def sampling_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of `DiffusionConfig.override_sampling` from `add_sampling_arguments`' flags."""
    return {"spacing": args.spacing, "guidance_interval": args.guidance_interval,
            "clip_x0": None if args.clip_x0 is None else args.clip_x0 == "on"}


def _known(kind: type, data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
    allowed = {f.name for f in fields(kind)}
    unknown = sorted(set(data) - allowed)
    if unknown:
        raise ConfigError(f"{where}: unknown keys {unknown}; allowed: {sorted(allowed)}")
    return data

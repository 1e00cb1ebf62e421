"""The training loop: the denoising loss of diffusion.losses, classifier-free-guidance context dropout (Ho &
Salimans 2022), AdamW with warm-up and cosine decay, gradient clipping, EMA weights, bf16 autocast, data-parallel
training under torchrun (DDP), atomic resumable checkpoints and the exported model directory with its card.

Randomness is a pure function of (seed, step, rank): each step draws its noise, timesteps, context drops and flips
from a generator seeded with those, and each epoch's data order from (seed, epoch). A resumed run therefore
continues exactly where it stopped.

Usage: train(TrainConfig(dataset="digits", max_steps=200, output_dir="runs/digits"))
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import torch
import torch.distributed as dist
from torch import Tensor, nn

from .checkpoint import (CONFIG_NAME, TRAINING_NAME, WEIGHTS_NAME, CheckpointError, atomic_write,
                         load_model_dir, save_model_dir)
from .ema import EMA
from .losses import diffusion_loss
from .model_card import write_model_card
from .config import DiffusionConfig, SamplingDefaults
from .data import ImageDataset, load_dataset, save_examples, to_model_range
from .images import make_grid, save_gif, save_png
from .pipeline import Pipeline
from .precision import hardware_name, name as precision_name, resolve
from .schedules import NoiseSchedule
from .unet import UPSAMPLES, SelfAttention, UNet, UNetConfig

STATE_NAME = "state.pt"
MODEL_DIR_NAME = "model"
LOG_NAME = "log.jsonl"
# Settings that define a run: a resumed run must use the same ones (the loop reproduces the same steps).
RUN_DEFINING = ("dataset", "epochs", "max_steps", "batch_size", "lr", "lr_schedule", "warmup_steps", "weight_decay",
                "grad_clip", "num_timesteps", "schedule", "beta_start", "beta_end", "prediction_type",
                "loss_weighting", "snr_gamma", "base_channels", "channel_mult", "num_res_blocks", "attention_levels",
                "patch_size", "upsample", "dropout", "norm_groups", "ema_decay", "p_uncond", "input_perturbation",
                "hflip", "seed")


class TrainingError(RuntimeError):
    """Training cannot start or continue; the message says why and what was kept."""


@dataclass
class TrainConfig:
    # data
    dataset: str = "fashion-mnist"
    data_dir: str | None = None
    download: bool = False
    hflip: bool | None = None  # None: the data set's default (flips on where a mirrored image is as likely)
    # length and optimisation
    epochs: int | None = None
    max_steps: int | None = 20_000  # used when epochs is None
    batch_size: int = 128  # global batch, split over DDP processes
    lr: float = 1e-3
    lr_schedule: Literal["cosine", "constant"] = "cosine"
    warmup_steps: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    # diffusion
    num_timesteps: int = 1000
    schedule: Literal["linear", "cosine", "sigmoid"] = "cosine"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    prediction_type: Literal["epsilon", "v"] = "v"
    loss_weighting: Literal["none", "min_snr"] = "min_snr"
    snr_gamma: float = 5.0
    p_uncond: float = 0.1  # probability of dropping the class context (classifier-free guidance)
    input_perturbation: float = 0.0  # gamma of DDPM-IP (Ning et al. 2023): the network input's extra noise
    # network
    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = 2
    attention_levels: list[int] = field(default_factory=list)
    patch_size: int = 2
    upsample: Literal["nearest_conv", "subpixel"] = "nearest_conv"
    dropout: float = 0.0
    norm_groups: int = 32
    # EMA, precision, hardware
    ema_decay: float = 0.999
    precision: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast if a timed step is faster here
    device: str = "cpu"
    num_threads: int | None = None
    compile: bool = False  # torch.compile the training forward and backward
    seed: int = 0
    # output
    output_dir: str = "runs/fashion-mnist"
    log_every: int = 50
    save_every: int = 1000
    sample_every: int = 2000
    resume: bool = False
    init_from: str | None = None  # start a new run from another run's weights or from a model directory
    push_to_hub: str | None = None
    progress: bool = True

    def validate(self) -> None:
        positive = ["batch_size", "num_timesteps", "base_channels", "num_res_blocks", "patch_size", "norm_groups",
                    "log_every", "save_every", "sample_every"]
        for name in positive:
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise TrainingError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        if (self.epochs is None) == (self.max_steps is None):
            raise TrainingError("give exactly one of --epochs and --max-steps")
        for name in ("epochs", "max_steps"):
            v = getattr(self, name)
            if v is not None and (not isinstance(v, int) or v < 1):
                raise TrainingError(f"--{name.replace('_', '-')} must be a positive integer, got {v!r}")
        checks = [(self.lr > 0 and math.isfinite(self.lr), "--lr must be a positive number"),
                  (self.warmup_steps >= 0, "--warmup-steps must be >= 0"),
                  (self.weight_decay >= 0, "--weight-decay must be >= 0"),
                  (self.grad_clip > 0, "--grad-clip must be > 0"),
                  (0.0 <= self.p_uncond < 1.0, "--p-uncond must be in [0, 1)"),
                  (0.0 <= self.ema_decay < 1.0, "--ema-decay must be in [0, 1)"),
                  (self.snr_gamma > 0, "--snr-gamma must be > 0"),
                  (0.0 <= self.input_perturbation <= 1.0,
                   "--input-perturbation must be in [0, 1] (the paper uses 0.1)"),
                  (self.precision in ("auto", "fp32", "bf16"), "--precision must be auto, fp32 or bf16"),
                  (self.lr_schedule in ("cosine", "constant"), "--lr-schedule must be cosine or constant"),
                  (self.loss_weighting in ("none", "min_snr"), "--loss-weighting must be none or min_snr"),
                  (self.upsample in UPSAMPLES, f"--upsample must be one of {UPSAMPLES}")]
        for ok, message in checks:
            if not ok:
                raise TrainingError(message)

    def unet_config(self, dataset: ImageDataset) -> UNetConfig:
        C, H, W = dataset.image_shape
        if H != W:
            raise TrainingError(f"{dataset.name}: square images required, got {H}x{W}")
        return UNetConfig(image_size=H, in_channels=C, num_classes=len(dataset.class_names),
                          base_channels=self.base_channels, channel_mult=list(self.channel_mult),
                          num_res_blocks=self.num_res_blocks, attention_levels=list(self.attention_levels),
                          patch_size=self.patch_size, upsample=self.upsample, dropout=self.dropout,
                          norm_groups=self.norm_groups)


# ----------------------------------------------------------------------------------------------------------------
# learning rate and randomness


def train_command(cfg: TrainConfig) -> str:
    """The `python train.py ...` command that reproduces cfg (flags that differ from the defaults)."""
    defaults, parts = TrainConfig(), ["python train.py"]
    for f in dataclasses.fields(cfg):
        value, flag = getattr(cfg, f.name), "--" + f.name.replace("_", "-")
        if value == getattr(defaults, f.name) or f.name == "progress":
            continue
        if isinstance(value, bool):
            parts.append(flag if value else "--no-" + flag[2:])
        elif isinstance(value, list):
            parts.append(" ".join([flag, *map(str, value)]))
        elif value is not None:
            parts.append(f"{flag} {value}")
    return " ".join(parts)


def learning_rate(step: int, cfg: TrainConfig, total_steps: int) -> float:
    """Linear warm-up to cfg.lr, then constant or cosine decay to 0 at total_steps."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    if cfg.lr_schedule == "constant":
        return cfg.lr
    progress = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def step_generator(seed: int, step: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + step) * 1024 + rank)


def epoch_order(n: int, seed: int, epoch: int) -> Tensor:
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed * 7919 + epoch))


# ----------------------------------------------------------------------------------------------------------------
# distributed helpers


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: str) -> Dist:
    """torchrun sets RANK/WORLD_SIZE/LOCAL_RANK; nccl on GPUs, gloo on CPUs."""
    if "RANK" not in os.environ or int(os.environ.get("WORLD_SIZE", "1")) == 1:
        return Dist()
    backend = "nccl" if device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
    dist.init_process_group(backend)
    return Dist(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


# ----------------------------------------------------------------------------------------------------------------
# checkpoints


def load_state(output_dir: Path) -> dict:
    path = output_dir / STATE_NAME
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - any unreadable file is reported the same way
        raise TrainingError(f"{path}: cannot read the training state ({e.__class__.__name__}: {e})") from e


def save_state(output_dir: Path, state: dict) -> None:
    atomic_write(output_dir / STATE_NAME, lambda p: torch.save(state, p))


def model_config(cfg: TrainConfig, dataset: ImageDataset, sampling: SamplingDefaults | None = None) -> DiffusionConfig:
    return DiffusionConfig(unet=cfg.unet_config(dataset), num_timesteps=cfg.num_timesteps, schedule=cfg.schedule,
                           beta_start=cfg.beta_start, beta_end=cfg.beta_end, prediction_type=cfg.prediction_type,
                           dataset=dataset.name, class_names=list(dataset.class_names),
                           sampling=sampling or SamplingDefaults())


# ----------------------------------------------------------------------------------------------------------------
# the loop



def grow_from(model: nn.Module, source: dict[str, Tensor]) -> list[str]:
    """Load `source` into `model`, which may have self-attention layers the source lacks; returns their keys.

    Anything else missing, left over or of another shape raises RuntimeError (as a strict load does)."""
    result = model.load_state_dict(source, strict=False)
    attention_prefixes = tuple(name + "." for name, m in model.named_modules() if isinstance(m, SelfAttention))
    foreign = [k for k in result.missing_keys if not k.startswith(attention_prefixes)]
    if foreign or result.unexpected_keys:
        raise RuntimeError(f"missing {foreign[:4]}, unexpected {result.unexpected_keys[:4]}")
    return list(result.missing_keys)


class Trainer:
    """Holds one run: data, model, EMA, optimiser; `run()` trains to the last step, saving as it goes."""

    def __init__(self, cfg: TrainConfig):
        cfg.validate()
        self.cfg = cfg
        self.dist = init_distributed(cfg.device)
        if self.dist.world_size > 1 and cfg.device.startswith("cuda"):
            self.device = torch.device(f"cuda:{self.dist.local_rank}")  # torchrun: each process its own GPU
        else:
            self.device = torch.device(cfg.device)
        if cfg.num_threads or self.dist.world_size > 1:  # processes on one machine share its cores
            torch.set_num_threads(cfg.num_threads or max(1, (os.cpu_count() or 1) // self.dist.world_size))
        self.out = Path(cfg.output_dir)
        self.train_set = load_dataset(cfg.dataset, "train", cfg.data_dir, cfg.download)
        try:
            self.val_set = load_dataset(cfg.dataset, "test", cfg.data_dir, cfg.download)
        except Exception:  # noqa: BLE001 - validation loss is optional
            self.val_set = None
        self.hflip = self.train_set.hflip if cfg.hflip is None else cfg.hflip
        self.diffusion_config = model_config(cfg, self.train_set)
        self.schedule = NoiseSchedule.from_name(cfg.schedule, cfg.num_timesteps, cfg.beta_start, cfg.beta_end)

        torch.manual_seed(cfg.seed)
        self.model = UNet(self.diffusion_config.unet).to(self.device)
        self.ema = EMA(self.model, cfg.ema_decay)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.step = 0
        self.last_val_loss: float | None = None
        self.elapsed = 0.0  # training seconds over all sessions of this run
        self.resumed_precision: str | None = None  # "fp32" or "bf16": what the run being resumed trained in

        if cfg.batch_size % self.dist.world_size:
            raise TrainingError(f"--batch-size {cfg.batch_size} must be divisible by the {self.dist.world_size} "
                                f"processes")
        self.local_batch = cfg.batch_size // self.dist.world_size
        self.steps_per_epoch = len(self.train_set) // self.dist.world_size // self.local_batch
        if self.steps_per_epoch < 1:
            raise TrainingError(f"{cfg.dataset} has {len(self.train_set)} training images, fewer than one batch "
                                f"of {cfg.batch_size}; lower --batch-size")
        self.total_steps = cfg.max_steps if cfg.max_steps is not None else cfg.epochs * self.steps_per_epoch

        if self.dist.is_main:  # temp files of writes cut short by a kill
            for stale in [*self.out.glob(".*.tmp"), *(self.out / MODEL_DIR_NAME).glob(".*.tmp")]:
                stale.unlink(missing_ok=True)
        if cfg.resume and (self.out / STATE_NAME).exists():
            self._restore(load_state(self.out))
        elif cfg.init_from:
            self._init_weights(Path(cfg.init_from))
        elif cfg.resume:
            self.log_print(f"--resume: no {STATE_NAME} in {self.out}, starting a new run")
        self.autocast_dtype, self.precision_reason = self._choose_precision()
        if cfg.precision == "auto":
            self.log_print(f"--precision auto: {self.precision_reason}")
        self.ddp_model = (nn.parallel.DistributedDataParallel(self.model, device_ids=[self.device.index]
                                                              if self.device.type == "cuda" else None)
                          if self.dist.world_size > 1 else self.model)
        if cfg.compile:  # the first step compiles (about a minute on a 2-core CPU); the weights stay self.model's
            self.ddp_model = torch.compile(self.ddp_model)

    def _choose_precision(self) -> tuple[torch.dtype | None, str]:
        """(torch.bfloat16 or None for fp32, why): as asked; with "auto", what the resumed run trained in, else
        whatever a timed forward and backward pass shows faster on this hardware (diffusion.precision). The
        processes of a run take rank 0's choice."""
        choice = [resolve(self.cfg.precision, self.model, self.diffusion_config.unet, self.device, training=True,
                          kept=self.resumed_precision) if self.dist.is_main else None]
        if self.dist.world_size > 1:
            dist.broadcast_object_list(choice, src=0)
        return choice[0]

    def _restore(self, state: dict) -> None:
        saved = {**dataclasses.asdict(TrainConfig()), **state["config"]}  # a setting newer than the run: its default
        differing = [f"{k}: run has {saved.get(k)!r}, given {getattr(self.cfg, k)!r}"
                     for k in RUN_DEFINING if saved.get(k) != getattr(self.cfg, k)]
        if state.get("world_size", 1) != self.dist.world_size:  # data shards and per-rank noise depend on it
            differing.append(f"processes: run has {state.get('world_size', 1)}, given {self.dist.world_size}")
        if differing:
            raise TrainingError(f"--resume: settings differ from the run in {self.out}: {'; '.join(differing)}. "
                                f"Resume with the same settings or start a new --output-dir")
        self.model.load_state_dict(state["model"], strict=True)
        self.ema.model.load_state_dict(state["ema"], strict=True)
        self.resumed_precision = state.get("precision", saved.get("precision"))  # older states: their setting
        self.optimizer.load_state_dict(state["optimizer"])
        self.step = int(state["step"])
        self.elapsed = float(state.get("elapsed", 0.0))
        torch.set_rng_state(state["torch_rng"])
        if "cuda_rng" in state and self.device.type == "cuda":
            torch.cuda.set_rng_state(state["cuda_rng"], self.device)
        if self.dist.is_main:  # records written after the checkpoint are redone: drop them from the log
            log = self.out / LOG_NAME
            if log.exists():
                kept = [line for line in log.read_text().splitlines() if line.strip()
                        and json.loads(line).get("step", 0) <= self.step]
                atomic_write(log, lambda p: p.write_text("".join(k + "\n" for k in kept)))
        self.log_print(f"resumed {self.out} at step {self.step}/{self.total_steps}")

    def _init_weights(self, source: Path) -> None:
        """Fine-tuning: start from the weights of another run (its state.pt: network and EMA) or of an exported
        model directory (config.json + model.safetensors, e.g. a shipped checkpoint: its EMA weights start both the
        network and the EMA); a fresh optimiser, step 0.

        The architecture is the same, or it grows the source by self-attention layers (`--attention-levels`): every
        other weight is taken over and the new layers start as the identity (their output projection is zero, see
        `SelfAttention`), so the grown network computes the source's function at step 0 and training adds capacity
        to a trained model instead of starting over."""
        flag = f"--init-from {source}"
        if (source / STATE_NAME).is_file():
            state = load_state(source)
            weights, ema_weights, origin = state["model"], state["ema"], f"its step {state.get('step')}"
        elif (source / CONFIG_NAME).is_file():
            try:
                config, network = load_model_dir(source)
            except CheckpointError as e:
                raise TrainingError(f"{flag}: {e}") from e
            mine = self.diffusion_config
            differing = [f"{k}: model has {getattr(config, k)!r}, this run {getattr(mine, k)!r}"
                         for k in ("num_timesteps", "schedule", "beta_start", "beta_end", "prediction_type",
                                   "class_names") if getattr(config, k) != getattr(mine, k)]
            if differing:
                raise TrainingError(f"{flag}: the model was trained for another diffusion: {'; '.join(differing)}")
            weights = ema_weights = network.state_dict()
            origin = "its exported EMA weights"
        else:
            raise TrainingError(f"{flag}: neither a run directory ({STATE_NAME}) nor a model directory "
                                f"({CONFIG_NAME} + {WEIGHTS_NAME})")
        try:
            new_keys = grow_from(self.model, weights)
            grow_from(self.ema.model, ema_weights)
        except (KeyError, RuntimeError) as e:
            raise TrainingError(f"{flag}: its weights do not fit this architecture ({e})") from e
        grown = f"; {len(new_keys)} new self-attention tensors start as the identity" if new_keys else ""
        self.log_print(f"initialised from {source} ({origin}){grown}")

    def log_print(self, message: str) -> None:
        if self.dist.is_main:
            print(message, file=sys.stderr, flush=True)

    def batch(self, step: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """The local batch of `step`: images (b, C, H, W) in [-1, 1] and context (b, K), both on the device."""
        epoch, i = divmod(step, self.steps_per_epoch)
        order = epoch_order(len(self.train_set), self.cfg.seed, epoch)[self.dist.rank::self.dist.world_size]
        idx = order[i * self.local_batch:(i + 1) * self.local_batch]
        x = to_model_range(self.train_set.images[idx])
        if self.hflip:
            flip = torch.rand(len(idx), generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(-1), x)
        context = self.train_set.context[idx].clone()
        drop = torch.rand(len(idx), generator=generator) < self.cfg.p_uncond
        context[drop] = 0.0
        return x.to(self.device), context.to(self.device)

    def train_step(self, step: int) -> float:
        cfg = self.cfg
        g = step_generator(cfg.seed, step, self.dist.rank)
        x0, context = self.batch(step, g)
        t = torch.randint(0, cfg.num_timesteps, (x0.shape[0],), generator=g).to(self.device)
        noise = torch.randn(x0.shape, generator=g).to(self.device)
        input_noise = None
        if cfg.input_perturbation > 0:
            input_noise = noise + cfg.input_perturbation * torch.randn(x0.shape, generator=g).to(self.device)
        lr = learning_rate(step, cfg, self.total_steps)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None):
            loss = diffusion_loss(self.ddp_model, self.schedule, x0, context, t, noise, cfg.prediction_type,
                                  cfg.loss_weighting, cfg.snr_gamma, input_noise)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip))
        value = float(loss.detach()) if math.isfinite(grad_norm) else math.nan
        if not math.isfinite(value):
            return value  # the caller stops before this step touches the weights
        self.optimizer.step()
        if self.dist.is_main:
            self.ema.update(self.model, step)
        return value

    @torch.no_grad()
    def validation_loss(self, n: int = 2000) -> float | None:
        """EMA model's loss on a fixed subset of the test split with fixed noise and timesteps (comparable over
        steps and runs)."""
        if self.val_set is None:
            return None
        g = torch.Generator().manual_seed(1234)
        n = min(n, len(self.val_set))
        idx = torch.randperm(len(self.val_set), generator=g)[:n]
        total = 0.0
        for start in range(0, n, 500):
            b = idx[start:start + 500]
            x0 = to_model_range(self.val_set.images[b]).to(self.device)
            t = torch.randint(0, self.cfg.num_timesteps, (len(b),), generator=g).to(self.device)
            noise = torch.randn(x0.shape, generator=g).to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.autocast_dtype is not None):
                loss = diffusion_loss(self.ema.model, self.schedule, x0, self.val_set.context[b].to(self.device), t,
                                      noise, self.cfg.prediction_type, self.cfg.loss_weighting, self.cfg.snr_gamma)
            total += float(loss) * len(b)
        return total / n

    def save(self) -> None:
        """Training state (resumable) and the exported EMA model directory, each written atomically."""
        state = {"config": dataclasses.asdict(self.cfg), "model": self.model.state_dict(),
                 "ema": self.ema.model.state_dict(), "optimizer": self.optimizer.state_dict(), "step": self.step,
                 "elapsed": self.elapsed, "torch_rng": torch.get_rng_state(), "world_size": self.dist.world_size,
                 "precision": precision_name(self.autocast_dtype)}
        if self.device.type == "cuda":  # dropout on the GPU draws from the device's generator
            state["cuda_rng"] = torch.cuda.get_rng_state(self.device)
        save_state(self.out, state)
        model_dir = self.out / MODEL_DIR_NAME
        save_model_dir(model_dir, self.diffusion_config, self.ema.model.state_dict())
        launched_by_cli = Path(sys.argv[0]).name == "train.py"
        record = {"command": "python " + " ".join(sys.argv) if launched_by_cli else train_command(self.cfg),
                  "steps": self.step,
                  "epochs": self.step / self.steps_per_epoch, "batch_size": self.cfg.batch_size,
                  "wall_time_min": self.elapsed / 60, "hardware": hardware_name(self.device),
                  "processes": self.dist.world_size, "parameters": sum(p.numel() for p in self.model.parameters()),
                  "val_loss": self.last_val_loss, "horizontal_flips": self.hflip,
                  "precision": self.precision_reason,
                  "train_config": dataclasses.asdict(self.cfg)}
        if self.cfg.init_from:  # the run this one continued from, so the whole history travels with the model
            source = Path(self.cfg.init_from)
            source = (source if (source / CONFIG_NAME).is_file() else source / MODEL_DIR_NAME) / TRAINING_NAME
            record["init_from"] = json.loads(source.read_text()) if source.exists() else self.cfg.init_from
        atomic_write(model_dir / TRAINING_NAME, lambda p: p.write_text(json.dumps(record, indent=2) + "\n"))

    def write_samples(self) -> None:
        """A grid of EMA samples, one row per class (DDIM 20 steps), and a GIF of its reverse process."""
        pipe = Pipeline(self.ema.model, self.diffusion_config, device=self.device, precision="fp32")
        K = self.diffusion_config.num_classes
        per_class = 8
        labels = [k for k in range(K) for _ in range(per_class)] if K else None
        frames = []
        images = pipe.generate(labels, n=None if K else 64, sampler="ddim", steps=20, guidance_scale=2.0 if K else 1.0,
                               seed=0, callback=lambda s: frames.append(make_grid((s.x0 + 1) / 2, nrow=per_class,
                                                                                  scale=2)))
        folder = self.out / "samples"
        save_png(make_grid(images, nrow=per_class, scale=2), folder / f"step_{self.step:07d}.png")
        save_gif(frames, folder / f"step_{self.step:07d}.gif")
        self.ema.model.train(False)

    def run(self) -> Path:
        """Train from self.step to total_steps; returns the exported model directory."""
        cfg = self.cfg
        if self.dist.is_main:
            self.out.mkdir(parents=True, exist_ok=True)
            atomic_write(self.out / "train_config.json",
                         lambda p: p.write_text(json.dumps(dataclasses.asdict(cfg), indent=2)))
        self.model.train()
        progress = None
        if self.dist.is_main and cfg.progress:
            from tqdm import tqdm

            progress = tqdm(total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
                            file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30.0)
        log = open(self.out / LOG_NAME, "a") if self.dist.is_main else None
        window_start, window_images = time.perf_counter(), 0
        last = time.perf_counter()
        try:
            while self.step < self.total_steps:
                loss = self.train_step(self.step)
                if not math.isfinite(loss):
                    raise TrainingError(
                        f"loss became {loss} at step {self.step}; stopped without saving, so the last good "
                        f"checkpoint in {self.out} is intact. Lower --lr or use --precision fp32, then --resume")
                self.step += 1
                now = time.perf_counter()
                self.elapsed += now - last  # the whole iteration: step, logging, saving, sample grids
                last = now
                window_images += cfg.batch_size
                if not self.dist.is_main:
                    continue
                if progress is not None:
                    progress.update(1)
                sample_now = self.step % cfg.sample_every == 0 or self.step == self.total_steps
                if sample_now:
                    self.last_val_loss = self.validation_loss()
                if self.step % cfg.log_every == 0 or sample_now:
                    now = time.perf_counter()
                    img_s = window_images / (now - window_start)
                    window_start, window_images = now, 0
                    record = {"step": self.step, "epoch": self.step / self.steps_per_epoch, "loss": loss,
                              "lr": learning_rate(self.step - 1, cfg, self.total_steps), "img_per_s": img_s,
                              "elapsed_s": self.elapsed}
                    if sample_now:
                        record["val_loss"] = self.last_val_loss
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                    if progress is not None:
                        progress.set_postfix(loss=f"{loss:.4f}", img_s=f"{img_s:.0f}")
                if self.step % cfg.save_every == 0 or self.step == self.total_steps:
                    self.save()
                if sample_now:
                    self.write_samples()
                    self.model.train()
        finally:
            if progress is not None:
                progress.close()
            if log is not None:
                log.close()
            if self.dist.world_size > 1 and dist.is_initialized():
                dist.destroy_process_group()
        model_dir = self.out / MODEL_DIR_NAME
        if self.dist.is_main:
            save_examples(self.val_set or self.train_set, model_dir / "examples")
            write_model_card(model_dir)  # without evaluation; diffusion.release adds it
            self.log_print(f"done: {self.step} steps, {self.elapsed / 60:.1f} min of training; model in {model_dir}")
        return model_dir


def train(cfg: TrainConfig) -> Path:
    """Train (or resume) a run; returns the exported model directory (config.json + model.safetensors)."""
    return Trainer(cfg).run()

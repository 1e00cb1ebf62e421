"""Train a class-conditional DDPM on a real data set and export the model directory the app serves.

Usage: python train.py --dataset fashion-mnist --epochs 30 --output-dir runs/fmnist
       torchrun --nproc_per_node=2 train.py ...   (data-parallel; gloo on CPU, nccl on GPUs)
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

from diffusion.data import DATASETS, DatasetError
from diffusion.training import RUN_DEFINING, STATE_NAME, TrainConfig, TrainingError, load_state, train
from diffusion.unet import UPSAMPLES

HELP = {
    "dataset": "data set to train on",
    "data_dir": "directory holding the data set files (searched before the default locations)",
    "download": "download the data set first (needs internet; mnist, fashion-mnist, cifar10)",
    "hflip": "random horizontal flips (default: on where a mirrored image is as likely as the original: "
             "cifar10, sprites; off for fashion-mnist, whose shoes all face left, and the digits)",
    "epochs": "number of passes over the training set (overrides --max-steps)",
    "max_steps": "number of optimiser steps (used unless --epochs is given)",
    "batch_size": "global batch size (split over torchrun processes)",
    "lr": "peak learning rate of AdamW",
    "lr_schedule": "learning-rate decay after warm-up",
    "warmup_steps": "linear learning-rate warm-up steps",
    "weight_decay": "AdamW weight decay",
    "grad_clip": "gradient-norm clipping threshold",
    "num_timesteps": "diffusion steps T",
    "schedule": "beta schedule",
    "beta_start": "first beta of the linear schedule (for T = 1000; rescaled for other T)",
    "beta_end": "last beta of the linear schedule (for T = 1000; rescaled for other T)",
    "prediction_type": "what the network predicts: the noise (epsilon) or v = sqrt(ab) eps - sqrt(1 - ab) x0",
    "loss_weighting": "per-timestep loss weights: none, or Min-SNR-gamma (Hang et al. 2023)",
    "snr_gamma": "gamma of Min-SNR weighting",
    "p_uncond": "probability of dropping the class context (trains the unconditional model for guidance)",
    "input_perturbation": "gamma of input perturbation (DDPM-IP, Ning et al. 2023; 0 = off, the paper uses 0.1): "
                          "the network sees x_t made with noise + gamma * extra noise, the target stays the same",
    "base_channels": "channels of the first U-Net level",
    "channel_mult": "width multiplier per U-Net level (one level per entry)",
    "num_res_blocks": "residual blocks per level",
    "attention_levels": "levels (0-based) with self-attention",
    "patch_size": "pixel-unshuffle stem: 2 runs the first level at half resolution (faster on CPUs)",
    "upsample": "decoder upsampling: nearest resize then a 3x3 conv (DDPM), or a 3x3 conv at the low resolution "
                "then a pixel shuffle (sub-pixel convolution: a quarter of the FLOPs or less)",
    "dropout": "dropout inside residual blocks",
    "norm_groups": "GroupNorm groups",
    "ema_decay": "decay of the exponential moving average of the weights (the exported model)",
    "precision": "fp32, bf16 autocast, or auto: bf16 autocast where a timed training step shows it faster than fp32 "
                 "(on GPUs with bf16 and most CPUs with AVX512-BF16/AMX, not all)",
    "device": "cpu, cuda, or cuda:N",
    "num_threads": "torch CPU threads per process (default: cores / processes)",
    "compile": "torch.compile the network for training (the first step compiles; benchmarks/training_throughput.py "
               "measures the gain)",
    "seed": "random seed (data order, noise and timesteps are functions of seed and step)",
    "output_dir": "run directory: state.pt, model/, log.jsonl, samples/",
    "log_every": "steps between log.jsonl records",
    "save_every": "steps between checkpoints (state.pt and model/)",
    "sample_every": "steps between sample grids and GIFs in samples/ (and validation loss)",
    "resume": "continue the run in --output-dir from its last checkpoint",
    "init_from": "start from the model and EMA weights of another run directory, or from a model directory "
                 "(config.json + model.safetensors, e.g. checkpoints/fashion-mnist); fine-tuning, new optimiser; "
                 "with more --attention-levels than it has, the new layers start as the identity",
    "push_to_hub": "after training, upload the model directory to this Hugging Face Hub repo (owner/name)",
    "progress": "show a progress bar",
}
CHOICES = {"dataset": DATASETS, "lr_schedule": ("cosine", "constant"), "schedule": ("linear", "cosine", "sigmoid"),
           "prediction_type": ("epsilon", "v"), "loss_weighting": ("none", "min_snr"),
           "precision": ("auto", "fp32", "bf16"), "upsample": UPSAMPLES}


def build_parser(suppress_defaults: bool = False) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter,
                                     argument_default=argparse.SUPPRESS if suppress_defaults else None)
    defaults = TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = getattr(defaults, f.name)
        kwargs = {} if suppress_defaults else {"default": default}
        if isinstance(default, bool) or f.name == "hflip":
            parser.add_argument(flag, action=argparse.BooleanOptionalAction, help=HELP[f.name], **kwargs)
        elif isinstance(default, list):
            parser.add_argument(flag, type=int, nargs="*", help=HELP[f.name], **kwargs)
        else:
            kind = {"epochs": int, "max_steps": int, "num_threads": int}.get(f.name, type(default))
            if default is None and kind is type(None):
                kind = str
            parser.add_argument(flag, type=kind, choices=CHOICES.get(f.name), help=HELP[f.name], **kwargs)
    return parser


def config_from_args(argv: list[str]) -> TrainConfig:
    args = vars(build_parser().parse_args(argv))
    given = vars(build_parser(suppress_defaults=True).parse_args(argv))
    if "epochs" in given and "max_steps" not in given:
        args["max_steps"] = None
    if args["resume"]:
        # Settings not given on the command line come from the run being resumed.
        state_path = Path(args["output_dir"]) / STATE_NAME
        if state_path.exists():
            saved = load_state(Path(args["output_dir"]))["config"]
            for key in RUN_DEFINING:
                if key not in given and key in saved:
                    args[key] = saved[key]
    return TrainConfig(**args)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    try:
        cfg = config_from_args(argv)
        model_dir = train(cfg)
        if cfg.push_to_hub:
            from diffusion.hub import push_model_dir

            url = push_model_dir(model_dir, cfg.push_to_hub)
            print(f"uploaded {model_dir} to {url}", file=sys.stderr)
    except (TrainingError, DatasetError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

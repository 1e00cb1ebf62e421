"""The model card (README.md in Hugging Face format: YAML metadata header + Markdown) of a model directory,
built from config.json, training.json (how it was trained) and evaluation.json (how it scored).

Usage: write_model_card("checkpoints/fashion-mnist")
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from .checkpoint import TRAINING_NAME, atomic_write, load_config
from .evaluate import EVALUATION_NAME
from .unet import UNet, UNetConfig

DATASET_META = {
    "fashion-mnist": ("zalando-datasets/fashion_mnist", "MIT", "https://github.com/zalandoresearch/fashion-mnist"),
    "mnist": ("ylecun/mnist", "CC BY-SA 3.0", "http://yann.lecun.com/exdb/mnist/"),
    "cifar10": ("uoft-cs/cifar10", "unknown", "https://www.cs.toronto.edu/~kriz/cifar.html"),
    "sprites": ("", "unknown", "https://www.deeplearning.ai/short-courses/how-diffusion-models-work/"),
    "digits": ("", "CC BY 4.0", "https://archive.ics.uci.edu/dataset/80"),
}


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def evaluation_table(evaluation: dict) -> str:
    """Markdown table of an evaluation.json."""
    floor = evaluation["floor"]
    lines = ["| sampler | steps | eta | guidance | class accuracy | Frechet distance | FD / floor | ms per image |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in evaluation["rows"]:
        eta = f"{r['eta']:g}" if r["sampler"] != "ddpm" else "-"
        lines.append(f"| {r['sampler'].upper()} | {r['steps']} | {eta} | {r['guidance_scale']:g} | "
                     f"{r['accuracy']:.3f} | {r['frechet_distance']:.3f} | {r['fd_ratio']:.2f} | "
                     f"{1000 * r['seconds_per_image']:.1f} |")
    lines.append(f"| real train images (floor) | | | | {floor['real_test_accuracy']:.3f} (real test) | "
                 f"{floor['frechet_distance']:.3f} ± {floor['std']:.3f} | 1.00 | |")
    return "\n".join(lines)


def training_lines(training: dict) -> list[str]:
    """Markdown lines of a training.json, earlier runs it was initialised from (fine-tuning) first."""
    lines = []
    if isinstance(training.get("init_from"), dict):
        lines += training_lines(training["init_from"]) + ["", "Then, starting from those weights:", ""]
    lines.append(f"Command: `{training.get('command', '?')}`")
    distilled = training.get("distillation")
    if isinstance(distilled, dict):  # a diffusion.distill record
        steps = " and ".join(str(k) for k in distilled.get("student_steps", [])) or "?"
        w_range = distilled.get("guidance_range")
        what = (f"Guidance distillation (Meng et al. 2023) for guidance scales {w_range[0]:g} to {w_range[1]:g}, the "
                f"guided output learnt in one network pass" if isinstance(w_range, list) and len(w_range) == 2 else
                f"Progressive distillation (Salimans & Ho 2022) for DDIM {steps} steps, one student step learning two "
                f"teacher steps")
        lines += ["", f"{what}: {distilled.get('steps', '?')} steps of batch "
                  f"{distilled.get('config', {}).get('batch_size', '?')} in {distilled.get('wall_time_min', 0):.0f} "
                  f"minutes on {distilled.get('hardware', '?')}."]
    else:
        val = training.get("val_loss")
        flips = {True: "; random horizontal flips.", False: "; no flips."}.get(training.get("horizontal_flips"), ".")
        lines += ["", f"{training.get('steps', '?')} steps ({training.get('epochs', 0):.1f} epochs) of batch "
                      f"{training.get('batch_size', '?')} in {training.get('wall_time_min', 0):.0f} minutes on "
                      f"{training.get('hardware', '?')}; validation loss at the end "
                      f"{'n/a' if val is None else f'{val:.4f}'}{flips}"]
    if training.get("wall_time_note"):
        lines += ["", f"({training['wall_time_note']})"]
    return lines


def parameter_count(config: UNetConfig) -> int:
    """Parameters of the network `config` builds, counted on the meta device (no memory, no arithmetic)."""
    with torch.device("meta"):
        return sum(p.numel() for p in UNet(config).parameters())


def model_card(directory: str | Path) -> str:
    directory = Path(directory)
    config = load_config(directory)
    training = _read_json(directory / TRAINING_NAME) or {}
    evaluation = _read_json(directory / EVALUATION_NAME)
    hub_id, licence, homepage = DATASET_META.get(config.dataset, ("", "unknown", ""))
    u, s = config.unet, config.sampling
    header = ["---", "license: mit", "library_name: pytorch", "pipeline_tag: unconditional-image-generation",
              "tags:", "- diffusion", "- ddpm", "- ddim", "- class-conditional", "- classifier-free-guidance"]
    if hub_id:
        header += ["datasets:", f"- {hub_id}"]
    header.append("---")
    body = [
        f"# Class-conditional DDPM on {config.dataset}",
        "",
        f"A {u.image_size}x{u.image_size}x{u.in_channels} class-conditional diffusion model (U-Net, "
        f"{config.prediction_type}-prediction, {config.schedule} schedule, T = {config.num_timesteps}) trained with "
        f"classifier-free guidance on the {config.dataset} data set ({homepage}, licence: {licence}). "
        "Load it with this project's `Pipeline`:",
        "",
        "```python",
        "from diffusion import Pipeline",
        f'pipe = Pipeline.from_pretrained("{directory.as_posix()}")',
        "images = pipe.generate([0, 1, 2], seed=0)  # (3, C, H, W) in [0, 1]",
        "```",
        "",
        f"Classes: {', '.join(config.class_names) or '(unconditional)'}.",
        "",
        f"Defaults (the settings that evaluated best): {s.sampler.upper()} {s.steps} steps, eta {s.eta:g}, "
        f"guidance scale {s.guidance_scale:g} "
        + (f"at timesteps {s.guidance_interval[0]}..{s.guidance_interval[1]} (unguided above)"
           if s.guidance_interval else "at every step")
        + f", {s.spacing} timestep spacing"
        + (f" (DDIM at {', '.join(sorted(s.tuned_timesteps, key=int))} steps: the model's tuned timesteps, "
           "`diffusion.tune_steps`)" if s.tuned_timesteps else "")
        + f", predicted x0 {'clipped' if config.clip_x0 else 'not clipped'} to "
        "[-1, 1] while sampling.",
        "",
        "![samples](samples.png)" if (directory / "samples.png").exists() else "",
        "",
        "## Network",
        "",
        f"U-Net, base width {u.base_channels}, channel multipliers {u.channel_mult}, {u.num_res_blocks} residual "
        f"blocks per level, patch size {u.patch_size}, attention at levels {u.attention_levels or 'none'}"
        + (f", a guidance-scale input for w in [{u.guidance_range[0]:g}, {u.guidance_range[1]:g}] (guidance-distilled: "
           f"one network pass per guided step, where classifier-free guidance takes two)" if u.guidance_range else "")
        + f"; {training.get('parameters') or parameter_count(u)} parameters; exported weights are the EMA.",
    ]
    if training:
        body += ["", "## Training", ""] + training_lines(training)
    if evaluation:
        cls = evaluation["classifier"]
        body += ["", "## Evaluation", "",
                 f"`python -m diffusion.evaluate` with a classifier trained on the {config.dataset} train split "
                 f"(test accuracy {cls['test_accuracy']}); {evaluation['per_class']} generated images per class "
                 f"against {evaluation['per_class']} real test images per class; the Frechet distance uses the "
                 f"classifier's {cls['feature_dim']}-d penultimate features. The floor is the distance between real "
                 f"train and real test draws of the same size. Wall time on "
                 f"{evaluation.get('hardware') or training.get('hardware', 'this machine')}, batch "
                 f"{evaluation['batch_size']}, "
                 f"{evaluation['precision']}.", "",
                 evaluation_table(evaluation)]
        if evaluation.get("command"):
            body += ["", f"Evaluated (and the defaults picked) by `{evaluation['command']}`."]
    return "\n".join(header + [""] + body) + "\n"


def write_model_card(directory: str | Path) -> Path:
    path = Path(directory) / "README.md"
    text = model_card(directory)
    atomic_write(path, lambda p: p.write_text(text))
    return path

"""Honest evaluation without Inception weights: a classifier trained on the data set (diffusion.classifier) scores
generated images by (a) accuracy against the requested class and (b) the Frechet distance (Heusel et al. 2017,
arXiv:1706.08500, eq. 6) between its penultimate features of generated and of real test images, reported next to
the same distance between real train and real test images of the same count (the floor).

Usage: python -m diffusion.evaluate --model checkpoints/fashion-mnist --per-class 100 --out eval.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from .checkpoint import CheckpointError, atomic_write
from .classifier import Classifier, load_classifier
from .config import SAMPLER_NAMES, add_sampling_arguments, sampling_overrides
from .data import ImageDataset, load_dataset, to_model_range
from .images import to_uint8
from .pipeline import COMPILE_HELP, CompileError, Pipeline
from .precision import hardware_name, name as precision_name

DEFAULT_CONFIGS = ["ddim:10:0", "ddim:20:0", "ddim:50:0", "ddim:100:0", "ddim:50:1", "ddpm:1000", "ddpm:100"]
EVALUATION_NAME = "evaluation.json"


def frechet_distance(a: Tensor, b: Tensor) -> float:
    """||mu_a - mu_b||^2 + tr(S_a + S_b - 2 (S_a^1/2 S_b S_a^1/2)^1/2) of two (N, D) feature sets, in float64.
    The matrix square roots come from symmetric eigendecompositions, so the result is real and exact up to
    rounding (no scipy.linalg.sqrtm iterations)."""
    a, b = a.double(), b.double()
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = torch.cov(a.T), torch.cov(b.T)
    evals_a, evecs_a = torch.linalg.eigh(cov_a)
    sqrt_a = evecs_a @ torch.diag(evals_a.clamp(min=0).sqrt()) @ evecs_a.T
    middle = sqrt_a @ cov_b @ sqrt_a
    tr_sqrt = torch.linalg.eigvalsh((middle + middle.T) / 2).clamp(min=0).sqrt().sum()
    return float(((mu_a - mu_b) ** 2).sum() + torch.trace(cov_a) + torch.trace(cov_b) - 2 * tr_sqrt)


def balanced_subset(data: ImageDataset, per_class: int, seed: int) -> tuple[Tensor, Tensor]:
    """`per_class` images of each class drawn with a seed: (K * per_class, C, H, W) uint8 and labels."""
    g = torch.Generator().manual_seed(seed)
    idx = []
    for k in range(len(data.class_names)):
        members = (data.labels == k).nonzero().flatten()
        if len(members) < per_class:
            raise ValueError(f"{data.name}: class {k} has {len(members)} images, fewer than --per-class {per_class}")
        idx.append(members[torch.randperm(len(members), generator=g)[:per_class]])
    idx = torch.cat(idx)
    return data.images[idx], data.labels[idx]


@torch.no_grad()
def score(classifier: Classifier, images_uint8: Tensor, labels: Tensor) -> tuple[float, Tensor]:
    """Class accuracy of (N, C, H, W) uint8 images against `labels`, and their (N, D) features."""
    feats, correct = [], 0
    for start in range(0, len(images_uint8), 500):
        x = to_model_range(images_uint8[start:start + 500])
        f = classifier.features(x)
        correct += int((classifier.head(f).argmax(1) == labels[start:start + 500]).sum())
        feats.append(f)
    return correct / len(images_uint8), torch.cat(feats)


@dataclass
class SamplerSetting:
    sampler: str
    steps: int
    eta: float = 0.0

    @classmethod
    def parse(cls, text: str) -> SamplerSetting:
        """'ddim:50:0' (sampler:steps[:eta]; eta for ddim and dpm++) -> SamplerSetting."""
        parts = text.split(":")
        if parts[0] not in SAMPLER_NAMES or len(parts) not in (2, 3) or (parts[0] == "ddpm" and len(parts) == 3):
            raise ValueError(f"sampler setting {text!r}: expected ddim:STEPS[:ETA], ddpm:STEPS or dpm++:STEPS[:ETA]")
        return cls(parts[0], int(parts[1]), float(parts[2]) if len(parts) == 3 else 0.0)

    @property
    def label(self) -> str:
        if self.sampler == "ddpm":
            return f"DDPM {self.steps}" + (" (respaced)" if self.steps < 1000 else "")
        if self.sampler == "dpm++":
            return f"DPM-Solver++(2M) {self.steps}" + (f", eta {self.eta:g}" if self.eta else "")
        return f"DDIM {self.steps}, eta {self.eta:g}"

    @property
    def short_label(self) -> str:
        """'DDPM 1000', 'DDIM 20', 'DDIM 50 eta 1', 'DPM++ 20': for charts (eta only where it is not 0)."""
        if self.sampler == "ddpm" or not self.eta:
            return f"{self.sampler.upper()} {self.steps}"
        return f"{self.sampler.upper()} {self.steps} eta {self.eta:g}"


@dataclass
class EvalRow:
    sampler: str
    steps: int
    eta: float
    guidance_scale: float
    accuracy: float
    frechet_distance: float
    fd_ratio: float  # frechet_distance / floor
    seconds_per_image: float
    num_images: int


def generate_images(pipe: Pipeline, labels: Tensor, setting: SamplerSetting, guidance_scale: float, seed: int,
                    batch_size: int) -> tuple[Tensor, float]:
    """(N, C, H, W) uint8 samples for `labels`, in batches, each batch seeded by (seed, batch index); and seconds."""
    out, start_time = [], time.perf_counter()
    for b, start in enumerate(range(0, len(labels), batch_size)):
        images = pipe.generate(labels[start:start + batch_size].tolist(), sampler=setting.sampler,
                               steps=setting.steps, eta=setting.eta, guidance_scale=guidance_scale,
                               seed=seed * 100_003 + b)
        out.append(torch.from_numpy(to_uint8(images)).permute(0, 3, 1, 2))
    return torch.cat(out), time.perf_counter() - start_time


@dataclass
class Floor:
    frechet_distance: float
    std: float
    real_test_accuracy: float


def real_floor(classifier: Classifier, train: ImageDataset, test_images: Tensor, test_labels: Tensor,
               per_class: int, repeats: int = 3) -> tuple[Floor, Tensor]:
    """FD between `repeats` balanced draws of real train images and the fixed real test draw; returns the floor and
    the test features."""
    test_acc, test_feats = score(classifier, test_images, test_labels)
    fds = []
    for r in range(repeats):
        images, labels = balanced_subset(train, per_class, seed=1000 + r)
        fds.append(frechet_distance(score(classifier, images, labels)[1], test_feats))
    return Floor(float(np.mean(fds)), float(np.std(fds)), test_acc), test_feats


def evaluate(pipe: Pipeline, classifier: Classifier, settings: list[SamplerSetting], guidance_scales: list[float],
             *, per_class: int = 100, seed: int = 0, batch_size: int = 50, data_dir: str | None = None,
             sample_seed: int | None = None, log=print) -> dict:
    """The evaluation table of `pipe` for every (setting, guidance scale): accuracy, FD, FD / floor, s per image.
    `seed` draws the real test images (and the floor's reference) and, unless `sample_seed` is given, the samples'
    noise: other sample seeds at one `seed` measure how much the draw of the samples alone moves the figures."""
    sample_seed = seed if sample_seed is None else sample_seed
    dataset = pipe.config.dataset
    train = load_dataset(dataset, "train", data_dir)
    test = load_dataset(dataset, "test", data_dir)
    test_images, test_labels = balanced_subset(test, per_class, seed=seed)
    floor, test_feats = real_floor(classifier, train, test_images, test_labels, per_class)
    log(f"real train vs real test: FD {floor.frechet_distance:.3f} +- {floor.std:.3f}; classifier accuracy on the "
        f"real test draw {floor.real_test_accuracy:.4f}")
    labels = torch.arange(len(pipe.class_names)).repeat_interleave(per_class)
    rows = []
    for setting in settings:
        for w in guidance_scales:
            images, seconds = generate_images(pipe, labels, setting, w, sample_seed, batch_size)
            acc, feats = score(classifier, images, labels)
            fd = frechet_distance(feats, test_feats)
            row = EvalRow(setting.sampler, setting.steps, setting.eta, w, round(acc, 4), round(fd, 4),
                          round(fd / floor.frechet_distance, 3), round(seconds / len(labels), 5), len(labels))
            rows.append(row)
            log(f"{setting.label:<24} w={w:<4g} accuracy {acc:.4f}  FD {fd:.3f} ({row.fd_ratio:.2f}x floor)  "
                f"{1000 * row.seconds_per_image:.1f} ms/image")
    return {"dataset": dataset, "per_class": per_class, "seed": seed, "sample_seed": sample_seed,
            "batch_size": batch_size,
            "precision": precision_name(pipe.autocast_dtype),
            "precision_reason": pipe.precision_reason, "hardware": hardware_name(pipe.device),
            "classifier": {"test_accuracy": classifier.config.test_accuracy,
                           "feature_dim": classifier.config.feature_dim},
            "floor": asdict(floor), "rows": [asdict(r) for r in rows], "torch_threads": torch.get_num_threads(),
            "spacing": pipe.config.sampling.spacing, "guidance_interval": pipe.config.sampling.guidance_interval,
            "clip_x0": pipe.config.clip_x0, "tuned_timesteps": pipe.config.sampling.tuned_timesteps}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--model", required=True, help="model directory or Hugging Face Hub repo id")
    parser.add_argument("--classifier", default=None,
                        help="classifier directory (default: checkpoints/classifiers/<dataset>)")
    parser.add_argument("--samplers", nargs="+", default=DEFAULT_CONFIGS,
                        help="settings to evaluate, each ddim:STEPS[:ETA], ddpm:STEPS or dpm++:STEPS")
    parser.add_argument("--guidance-scale", type=float, nargs="+", default=None,
                        help="guidance scales to evaluate (default: the model's saved default)")
    add_sampling_arguments(parser)
    parser.add_argument("--untuned", action="store_true",
                        help="ignore the model's tuned DDIM timesteps (diffusion.tune_steps): DDIM follows the spacing")
    parser.add_argument("--per-class", type=int, default=100, help="generated and real images per class")
    parser.add_argument("--batch-size", type=int, default=50, help="images per generate call")
    parser.add_argument("--seed", type=int, default=0, help="seed of the noise and of the real test draw")
    parser.add_argument("--sample-seed", type=int, default=None,
                        help="seed of the samples' noise alone (default: --seed); the real test draw keeps --seed")
    parser.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16"),
                        help="sampling precision (auto: bf16 autocast where one timed call shows it faster than fp32)")
    parser.add_argument("--compile", action="store_true",
                        help=COMPILE_HELP)
    parser.add_argument("--data-dir", default=None, help="directory holding the data set files")
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    parser.add_argument("--save-to-model", action="store_true",
                        help=f"also write {EVALUATION_NAME} into the model directory (read by the model card "
                             f"and the app)")
    args = parser.parse_args(argv)
    try:
        settings = [SamplerSetting.parse(s) for s in args.samplers]
    except ValueError as e:
        parser.error(str(e))
    try:  # a missing or broken model or classifier, or bad settings: a usage error, not a traceback
        pipe = Pipeline.from_pretrained(args.model, precision=args.precision, compile=args.compile)
        pipe.config.override_sampling(**sampling_overrides(args))
        if args.untuned:
            pipe.config.sampling.tuned_timesteps = None
        classifier = load_classifier(args.classifier or Path("checkpoints/classifiers") / pipe.config.dataset)
        if args.compile:
            print(f"compiled the network in {pipe.warm_up():.0f} s", file=sys.stderr)
    except (CheckpointError, CompileError, ValueError) as e:
        parser.error(str(e))
    scales = args.guidance_scale or [pipe.config.sampling.guidance_scale]
    results = evaluate(pipe, classifier, settings, scales, per_class=args.per_class, seed=args.seed,
                       batch_size=args.batch_size, data_dir=args.data_dir, sample_seed=args.sample_seed,
                       log=lambda m: print(m, file=sys.stderr, flush=True))
    results["command"] = "python -m diffusion.evaluate " + " ".join(argv if argv is not None else sys.argv[1:])
    results["model"] = args.model
    text = json.dumps(results, indent=2) + "\n"
    if args.out:
        atomic_write(Path(args.out), lambda p: p.write_text(text))
    if args.save_to_model:
        atomic_write(Path(pipe.directory) / EVALUATION_NAME, lambda p: p.write_text(text))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

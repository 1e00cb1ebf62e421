"""A small CNN classifier per data set, the feature extractor of `diffusion.evaluate` (no Inception weights needed).

Its penultimate layer (global-average-pooled, `feature_dim` values) gives the features of the Frechet distance;
its logits give the class accuracy of generated images. Trained on the data set's train split, saved as
classifier.json + model.safetensors, its test accuracy recorded in the json.

Usage: python -m diffusion.classifier --dataset fashion-mnist --out checkpoints/classifiers/fashion-mnist
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

from .checkpoint import CheckpointError, atomic_write
from .data import DATASETS, ImageDataset, load_dataset, to_model_range

CONFIG_NAME = "classifier.json"
WEIGHTS_NAME = "model.safetensors"


@dataclass
class ClassifierConfig:
    dataset: str
    image_size: int
    in_channels: int
    num_classes: int
    width: int = 32
    test_accuracy: float | None = None
    train_command: str = ""
    hflip: bool | None = None  # random horizontal flips in training (None: recorded before this field existed)

    @property
    def feature_dim(self) -> int:
        return 4 * self.width


def conv_block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU())


class Classifier(nn.Module):
    """(B, C, H, W) in [-1, 1] -> logits (B, K); `features` gives the (B, 4 * width) penultimate activations."""

    def __init__(self, config: ClassifierConfig):
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            conv_block(config.in_channels, w), conv_block(w, w), nn.MaxPool2d(2),  # H/2
            conv_block(w, 2 * w), conv_block(2 * w, 2 * w), nn.MaxPool2d(2),  # H/4
            conv_block(2 * w, 4 * w), conv_block(4 * w, 4 * w),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),  # (B, 4w)
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(4 * w, config.num_classes)

    def features(self, x: Tensor) -> Tensor:
        return self.body(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.dropout(self.body(x)))


def save_classifier(directory: str | Path, model: Classifier) -> Path:
    directory = Path(directory)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(directory / WEIGHTS_NAME, lambda p: save_file(tensors, str(p)))
    atomic_write(directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(asdict(model.config), indent=2) + "\n"))
    return directory


def load_classifier(directory: str | Path, device: str | torch.device = "cpu") -> Classifier:
    directory = Path(directory)
    try:
        data = json.loads((directory / CONFIG_NAME).read_text())
        config = ClassifierConfig(**data)
    except FileNotFoundError as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: missing; train one with python -m diffusion.classifier "
                              f"--dataset NAME --out {directory}") from e
    except (json.JSONDecodeError, TypeError) as e:
        raise CheckpointError(f"{directory / CONFIG_NAME}: not a classifier config ({e})") from e
    model = Classifier(config)
    try:
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)), strict=True)
    except (SafetensorError, OSError, RuntimeError) as e:
        raise CheckpointError(f"{directory / WEIGHTS_NAME}: cannot load classifier weights ({e})") from e
    return model.to(device).eval()


def augment(x: Tensor, hflip: bool, generator: torch.Generator) -> Tensor:
    """Random translation by up to 2 pixels (pad + crop) and, where allowed, horizontal flips. (B, C, H, W)."""
    B, C, H, W = x.shape
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    dx, dy = torch.randint(0, 5, (2,), generator=generator).tolist()
    x = padded[:, :, dy:dy + H, dx:dx + W]
    if hflip:
        flip = torch.rand(B, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x


@torch.no_grad()
def accuracy(model: Classifier, data: ImageDataset, batch_size: int = 500) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(data), batch_size):
        x = to_model_range(data.images[start:start + batch_size])
        correct += int((model(x).argmax(1) == data.labels[start:start + batch_size]).sum())
    return correct / len(data)


def train_classifier(train: ImageDataset, test: ImageDataset, *, epochs: int = 8, batch_size: int = 128,
                     lr: float = 2e-3, width: int = 32, seed: int = 0, hflip: bool | None = None,
                     log=print) -> Classifier:
    """AdamW + one-cycle cosine schedule, light augmentation (flips: the data set's default unless given); returns
    the model with test accuracy recorded."""
    torch.manual_seed(seed)
    C, H, W = train.image_shape
    hflip = train.hflip if hflip is None else hflip
    config = ClassifierConfig(train.name, H, C, len(train.class_names), width, hflip=hflip)
    model = Classifier(config)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = max(1, len(train) // batch_size)
    total = epochs * steps_per_epoch
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=total, pct_start=0.15)
    g = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(train), generator=g)
        t0, total_loss = time.perf_counter(), 0.0
        for i in range(steps_per_epoch):
            idx = order[i * batch_size:(i + 1) * batch_size]
            x = augment(to_model_range(train.images[idx]), hflip, g)
            loss = F.cross_entropy(model(x), train.labels[idx], label_smoothing=0.05)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total_loss += float(loss.detach())
        log(f"epoch {epoch + 1}/{epochs}: loss {total_loss / steps_per_epoch:.4f}, "
            f"test accuracy {accuracy(model, test):.4f} ({time.perf_counter() - t0:.0f} s)")
    config.test_accuracy = round(accuracy(model, test), 4)
    return model.eval()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Train the evaluation classifier of a data set.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dataset", default="fashion-mnist", choices=DATASETS, help="data set")
    parser.add_argument("--data-dir", default=None, help="directory holding the data set files")
    parser.add_argument("--out", required=True, help="output directory (classifier.json + model.safetensors)")
    parser.add_argument("--epochs", type=int, default=8, help="training epochs")
    parser.add_argument("--width", type=int, default=32, help="channels of the first stage (features: 4x this)")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--hflip", action=argparse.BooleanOptionalAction, default=None,
                        help="random horizontal flips (default: the data set's, as in train.py); the shipped "
                             "Fashion-MNIST classifier was trained with --hflip")
    args = parser.parse_args(argv)
    train = load_dataset(args.dataset, "train", args.data_dir)
    test = load_dataset(args.dataset, "test", args.data_dir)
    model = train_classifier(train, test, epochs=args.epochs, width=args.width, seed=args.seed, hflip=args.hflip,
                             log=lambda m: print(m, file=sys.stderr, flush=True))
    model.config.train_command = "python -m diffusion.classifier " + " ".join(
        a for a in (argv if argv is not None else sys.argv[1:]))
    save_classifier(args.out, model)
    print(f"test accuracy {model.config.test_accuracy:.4f}; saved to {args.out}", file=sys.stderr)
    return 0 if math.isfinite(model.config.test_accuracy) else 1


if __name__ == "__main__":
    sys.exit(main())

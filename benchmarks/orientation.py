"""Why Fashion-MNIST trains without flips: which way its shoes face, in the data and in a model's samples, and what
mirroring half of the real images costs on diffusion.evaluate's Frechet distance.

An image "faces like its class" when it correlates more with the class's mean training image than with that mean
mirrored. Real shoes nearly all do; a model trained on randomly flipped images draws about half of them mirrored.

Usage: python benchmarks/orientation.py [--models checkpoints/fashion-mnist ...] [--per-class 100]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, write_result  # noqa: E402
from diffusion import Pipeline  # noqa: E402
from diffusion.classifier import load_classifier  # noqa: E402
from diffusion.data import facing_fraction, load_dataset  # noqa: E402
from diffusion.evaluate import balanced_subset, frechet_distance, score  # noqa: E402
from diffusion.images import to_uint8  # noqa: E402

ASYMMETRIC = {5: "Sandal", 7: "Sneaker", 9: "Ankle boot", 8: "Bag", 1: "Trouser"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="*", default=["checkpoints/fashion-mnist", "checkpoints/fashion-mnist-fast"],
                        help="model directories whose samples are checked")
    parser.add_argument("--per-class", type=int, default=100, help="generated images per class")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    members = {k: train.images[train.labels == k] for k in ASYMMETRIC}  # (N_k, 1, 28, 28) uint8
    means = {k: x.float().mean(0) for k, x in members.items()}  # (1, 28, 28)
    result = {"real": {name: facing_fraction(members[k], means[k]) for k, name in ASYMMETRIC.items()}}
    print("real training images facing like their class: "
          + ", ".join(f"{name} {v:.3f}" for name, v in result["real"].items()))

    classifier = load_classifier("checkpoints/classifiers/fashion-mnist")
    result["half_flipped_fd"] = []
    for seed in (0, 1):
        test_images, test_labels = balanced_subset(test, 100, seed=seed)
        test_feats = score(classifier, test_images, test_labels)[1]
        images, labels = balanced_subset(train, 100, seed=1000 + seed)
        flip = torch.rand(len(images), generator=torch.Generator().manual_seed(seed)) < 0.5
        flipped = torch.where(flip[:, None, None, None], images.flip(-1), images)
        plain = frechet_distance(score(classifier, images, labels)[1], test_feats)
        mirrored = frechet_distance(score(classifier, flipped, labels)[1], test_feats)
        result["half_flipped_fd"].append({"seed": seed, "real_train": plain, "half_flipped": mirrored})
        print(f"seed {seed}: FD real train vs test {plain:.3f}; with half of the train images mirrored {mirrored:.3f} "
              f"({mirrored / plain:.2f}x)")

    result["models"] = {}
    for model in args.models:
        pipe = Pipeline.from_pretrained(model)
        fractions = {}
        for k, name in ASYMMETRIC.items():
            samples = torch.from_numpy(to_uint8(pipe.generate([k] * args.per_class, seed=0))).permute(0, 3, 1, 2)
            fractions[name] = facing_fraction(samples, means[k])
        result["models"][model] = fractions
        print(f"{model} samples facing like their class: " + ", ".join(f"{n} {v:.2f}" for n, v in fractions.items()))
    write_result("orientation", result)


if __name__ == "__main__":
    main()

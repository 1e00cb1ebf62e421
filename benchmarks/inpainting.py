"""How well `Pipeline.inpaint` fills in, measured on real test images: for each preset region and sampler, how far
the filled pixels land from the original's, and how often the evaluation classifier names the completed image's own
class, next to a baseline that ignores the kept pixels (a fresh sample of the same class from the same sampler,
pasted into the region); and for the scattered mask, the classical fill (normalized convolution).

Usage: python benchmarks/inpainting.py [--model checkpoints/fashion-mnist] [--per-class 10]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, write_result  # noqa: E402
from diffusion import Pipeline  # noqa: E402
from diffusion.classifier import load_classifier  # noqa: E402
from diffusion.data import load_dataset  # noqa: E402
from diffusion.evaluate import balanced_subset, score  # noqa: E402
from diffusion.images import to_uint8  # noqa: E402
from diffusion.inpainting import REGIONS, region_mask  # noqa: E402

SAMPLERS = {"DDIM 50": dict(sampler="ddim", steps=50, eta=0.0),
            "DDIM 20, resample 5": dict(sampler="ddim", steps=20, eta=0.0, resample=5),
            "DDPM 20, resample 5": dict(sampler="ddpm", steps=20, resample=5),
            "DPM++ SDE 20": dict(sampler="dpm++", steps=20, eta=1.0)}


def normalized_convolution(images: torch.Tensor, keep: torch.Tensor, sigma: float = 0.7) -> torch.Tensor:
    """The classical fill for scattered pixels: a Gaussian blur of the kept pixels over the blur of the mask
    (Knutsson & Westin 1993). images (N, C, H, W), keep (1, 1, H, W) float."""
    r = 4
    k = torch.exp(-torch.arange(-r, r + 1.0) ** 2 / (2 * sigma ** 2))
    kernel = (k[:, None] * k[None, :])[None, None]
    blur = torch.nn.functional.conv2d(images * keep, kernel, padding=r)
    return torch.where(keep.bool(), images, blur / torch.nn.functional.conv2d(keep, kernel, padding=r).clamp_min(1e-6))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/fashion-mnist", help="model directory or Hub repo id")
    parser.add_argument("--classifier", default="checkpoints/classifiers/fashion-mnist")
    parser.add_argument("--per-class", type=int, default=10, help="real test images per class")
    parser.add_argument("--seed", type=int, default=0, help="seed of the test draw and of the samplers")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or auto")
    args = parser.parse_args()
    pipe = Pipeline.from_pretrained(args.model, precision=args.precision)
    classifier = load_classifier(args.classifier)
    print(f"machine: {machine()}\nmodel: {args.model} ({pipe.precision_reason}), guidance "
          f"{pipe.config.sampling.guidance_scale:g} (the model's), {args.per_class} test images per class")
    test = load_dataset(pipe.config.dataset, "test")
    uint8, labels = balanced_subset(test, args.per_class, seed=args.seed)  # (N, C, H, W) uint8, (N,)
    images = uint8.float() / 255
    _, H, W = pipe.image_shape
    real_accuracy = score(classifier, uint8, labels)[0]
    print(f"the untouched test images: accuracy {real_accuracy:.2f}")
    rows, started = [], time.perf_counter()
    for name, setting in SAMPLERS.items():
        fresh = pipe.generate(labels.tolist(), seed=args.seed + 1,  # the baseline's samples
                              **{k: v for k, v in setting.items() if k != "resample"})
        for region in REGIONS:
            fill = region_mask(region, H, W, seed=args.seed)
            began = time.perf_counter()
            out = pipe.inpaint(images, fill, labels.tolist(), seed=args.seed + 1, **setting)
            seconds = time.perf_counter() - began
            pasted = torch.where(fill, fresh, images)
            row = dict(sampler=name, region=region, seconds=seconds)
            for kind, result in (("inpaint", out), ("pasted", pasted)):
                row[f"{kind}_error"] = float((result - images).abs()[fill.expand_as(images)].mean()) * 255
                row[f"{kind}_accuracy"] = score(classifier, torch.from_numpy(to_uint8(result)).permute(0, 3, 1, 2),
                                                labels)[0]
            row["kept_max_error"] = float((out - images).abs()[~fill.expand_as(images)].max()) * 255
            rows.append(row)
            print(f"{name:>12}, {region:>13}: filled pixels off by {row['inpaint_error']:5.1f} grey levels "
                  f"(pasted sample {row['pasted_error']:5.1f}); accuracy {row['inpaint_accuracy']:.2f} (pasted "
                  f"{row['pasted_accuracy']:.2f}); kept pixels off by at most {row['kept_max_error']:.1e}; "
                  f"{seconds:.1f} s", flush=True)
    scattered = region_mask("3 in 4 pixels", H, W, seed=args.seed)
    classical = normalized_convolution(images, (~scattered).float())
    classical_error = float((classical - images).abs()[scattered.expand_as(images)].mean()) * 255
    print(f"3 in 4 pixels filled by normalized convolution (a Gaussian of sigma 0.7 pixels): off by "
          f"{classical_error:.1f} grey levels")
    print(f"{time.perf_counter() - started:.0f} s in all")
    path = write_result(f"inpainting-{Path(args.model).name}", dict(
        model=args.model, precision=pipe.precision_reason, per_class=args.per_class, seed=args.seed,
        guidance_scale=pipe.config.sampling.guidance_scale, samplers=SAMPLERS, rows=rows,
        normalized_convolution_error_3_in_4=classical_error, untouched_accuracy=real_accuracy,
        command="python " + " ".join(sys.argv)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

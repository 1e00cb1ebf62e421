"""What the Interpolate tab shows, measured over every class of a model: DDIM's frames morph while DDPM's jump,
lerp's middle frames lose detail, and DDPM's images do not depend on x_T.

For each class, `--frames` frames between the samples of two seeds' noises (same class at both ends):
- the path ratio (`diffusion.interpolation.path_ratio`: the summed change between neighbouring frames over the direct
  change between the ends; 1 for a steady morph) for DDIM (eta 0, slerp) and for DDPM from the same x_T's;
- the middle frame's detail (mean change between neighbouring pixels) over the ends' mean, on the slerp and the lerp
  path (with an odd frame count the middle frame is exactly halfway);
then, for one image per class, how far swapping x_T for other noise moves DDPM's and DDIM's images (same step noise).

Usage: python benchmarks/interpolation.py [--model checkpoints/fashion-mnist] [--frames 9] [--seeds 0 1 2 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path


sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, write_result  # noqa: E402
from diffusion import Pipeline  # noqa: E402
from diffusion.interpolation import detail, path_ratio  # noqa: E402


def spread(values: list[float]) -> str:
    return f"mean {statistics.mean(values):.2f} (min {min(values):.2f}, max {max(values):.2f})"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/fashion-mnist", help="model directory or Hub repo id")
    parser.add_argument("--frames", type=int, default=9, help="frames per path (odd: a frame exactly halfway)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3],
                        help="seeds of the ends' noises, taken in pairs: (0, 1), (2, 3), ...")
    parser.add_argument("--ddim-steps", type=int, default=20)
    parser.add_argument("--ddpm-steps", type=int, nargs="+", default=[100, 1000],
                        help="DDPM steps: the first for the paths, each for the x_T swap")
    parser.add_argument("--precision", default="fp32", help="fp32, bf16 or auto")
    args = parser.parse_args()
    if len(args.seeds) % 2:
        parser.error("--seeds takes pairs of seeds")
    pipe = Pipeline.from_pretrained(args.model, precision=args.precision)
    print(f"machine: {machine()}\nmodel: {args.model} ({pipe.precision_reason})")
    pairs = list(zip(args.seeds[::2], args.seeds[1::2]))
    guidance = pipe.config.sampling.guidance_scale
    rows, started = [], time.perf_counter()
    mid = args.frames // 2
    for k, name in enumerate(pipe.class_names or ["(unconditional)"]):
        label = k if pipe.class_names else None
        for pair in pairs:
            run = dict(frames=args.frames, noise_seeds=pair, guidance_scale=guidance)
            ddim = pipe.interpolate(label, label, steps=args.ddim_steps, **run)
            lerped = pipe.interpolate(label, label, steps=args.ddim_steps, path="lerp", **run)
            ddpm = pipe.interpolate(label, label, sampler="ddpm", steps=args.ddpm_steps[0], seed=2**31 + pair[0],
                                    **run)  # step noise seeded apart from the x_T seeds, as the app does
            ends = float(detail(ddim[[0, -1]]).mean())
            row = dict(cls=name, seeds=list(pair), ddim_path_ratio=path_ratio(ddim), ddpm_path_ratio=path_ratio(ddpm),
                       slerp_middle_detail=float(detail(ddim[mid:mid + 1])) / ends,
                       lerp_middle_detail=float(detail(lerped[mid:mid + 1])) / ends)
            rows.append(row)
            print(f"{name:>12} seeds {pair}: path ratio DDIM {row['ddim_path_ratio']:.2f}, DDPM "
                  f"{row['ddpm_path_ratio']:.2f}; middle frame's detail over the ends' slerp "
                  f"{row['slerp_middle_detail']:.2f}, lerp {row['lerp_middle_detail']:.2f}", flush=True)
    summary = {key: spread([r[key] for r in rows]) for key in
               ("ddim_path_ratio", "ddpm_path_ratio", "slerp_middle_detail", "lerp_middle_detail")}
    for key, text in summary.items():
        print(f"{key}: {text}")

    labels = list(range(len(pipe.class_names))) if pipe.class_names else None
    n = None if labels else 10
    swap = {}
    for sampler, steps in [("ddim", args.ddim_steps), *(("ddpm", s) for s in args.ddpm_steps)]:
        a, b = (pipe.generate(labels, n=n, sampler=sampler, steps=steps, eta=0.0, guidance_scale=guidance,
                              x_T=pipe.noise(len(labels or range(n)), seed=s), seed=7) for s in (0, 1))
        moved = (a - b).abs() * 255
        swap[f"{sampler} {steps}"] = dict(mean=float(moved.mean()), max=float(moved.max()))
        print(f"{sampler.upper()} {steps}: swapping x_T (seed 0 -> 1) moves the images by {moved.mean():.2f} grey "
              f"levels on average, {moved.max():.1f} at most", flush=True)
    print(f"alpha_bar at t = {pipe.config.num_timesteps - 1}: {float(pipe.schedule.alphas_cumprod[-1]):.2e}; "
          f"{time.perf_counter() - started:.0f} s in all")
    path = write_result(f"interpolation-{Path(args.model).name}", dict(
        model=args.model, precision=pipe.precision_reason, frames=args.frames, ddim_steps=args.ddim_steps,
        ddpm_steps=args.ddpm_steps, guidance_scale=guidance, rows=rows, summary=summary, x_T_swap=swap,
        command="python " + " ".join(sys.argv)))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

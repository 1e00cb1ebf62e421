"""Sampling speed of the shipped model against the diffusers peer, in one run.

Measures wall time and images/s for DDIM 10/20/50 and DDPM 1000 at batch 1, 16 and 64 (the model's default guidance,
i.e. conditional + unconditional passes batched into one network call, over the model's guidance interval), time per
network call, achieved GFLOP/s (FLOPs counted with torch.utils.flop_counter) against the matmul ceiling of the
precision the network runs in (precision "auto": diffusion/precision.py), the DDPM-1000 / DDIM-50 ratio of wall time
(batch 16, from alternating runs) next to its ratio of network work, and the peer (diffusers UNet2DModel 32/64/64 +
DDIMScheduler, batch 16, 50 steps) in fp32 and bf16 autocast.

Usage: python benchmarks/sampling.py [--model checkpoints/fashion-mnist] [--quick] [--compile]
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ceiling import measure as measure_ceiling  # noqa: E402
from common import machine, peer_unet, timeit, write_result  # noqa: E402
from diffusion import Pipeline  # noqa: E402
from diffusion import guidance  # noqa: E402
from diffusion.precision import name as precision_name  # noqa: E402


def peer_ddim_seconds(bf16: bool, batch: int = 16, steps: int = 50) -> tuple[float, int]:
    """diffusers' UNet2DModel + DDIMScheduler loop as a user runs it (torch.no_grad), random weights (speed only)."""
    from diffusers import DDIMScheduler

    torch.manual_seed(0)
    unet = peer_unet().eval()
    scheduler = DDIMScheduler(num_train_timesteps=1000)
    labels = torch.arange(batch) % 10
    x_T = torch.randn(batch, 1, 28, 28)

    def run():
        scheduler.set_timesteps(steps)
        x = x_T
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            for t in scheduler.timesteps:
                out = unet(x, t, class_labels=labels).sample
                x = scheduler.step(out.float(), t, x).prev_sample
        return x

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        unet(x_T[:1], torch.tensor([10]), class_labels=labels[:1])
    return timeit(run, repeats=3), counter.get_total_flops()


def passes_per_image(pipe: Pipeline, sampler: str, steps: int) -> int:
    """Network passes over one image in a run with the model's defaults (guidance scale, interval, timesteps)."""
    d = pipe.config.sampling
    return guidance.passes_per_image(pipe.plan(sampler, steps), d.guidance_scale, d.guidance_interval,
                                     pipe.config.unet.guidance_range)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="checkpoints/fashion-mnist", help="model directory")
    parser.add_argument("--quick", action="store_true", help="batch 16 only, skip DDPM 1000 at batch 64")
    parser.add_argument("--compile", action="store_true",
                        help="run our network through torch.compile (compiled once before timing; the peer stays "
                             "eager, as users run it); results go to sampling-<model>-compiled.json")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    ceiling = measure_ceiling()
    print(f"ceiling: fp32 {ceiling['fp32_gflops']:.0f} GFLOP/s, bf16 {ceiling['bf16_gflops']:.0f} GFLOP/s")

    pipe = Pipeline.from_pretrained(args.model, compile=args.compile)  # precision "auto": bf16 if timed faster
    if args.compile:
        print(f"torch.compile: compiled in {pipe.warm_up():.0f} s (once per process, not in the timings below)")
    d = pipe.config.sampling
    w = d.guidance_scale
    flops_per_image = pipe.flops_per_image
    precision = precision_name(pipe.autocast_dtype)
    where = f"at t in {d.guidance_interval}" if d.guidance_interval else "at every step"
    r = pipe.config.unet.guidance_range
    if guidance.distilled_for(w, r):
        guided_passes = guidance.describe_range(r)
    elif guidance.passes_per_guided_step(w, pipe.config.num_classes > 0) == 2:
        guided_passes = "2 passes per guided step, batched"
    else:
        guided_passes = "unguided: 1 pass per step"
    print(f"model: {args.model}, {precision}, guidance {w:g} {where} ({guided_passes}), "
          f"{d.spacing} spacing, {flops_per_image / 1e6:.0f} MFLOP per image per pass")

    def cycle_labels(batch: int) -> list[int]:
        return [i % pipe.config.num_classes for i in range(batch)]

    rows = []
    batches = [16] if args.quick else [1, 16, 64]
    for sampler, steps in [("ddim", 10), ("ddim", 20), ("ddim", 50), ("ddpm", 1000)]:
        for batch in batches:
            labels = cycle_labels(batch)
            repeats = 1 if steps == 1000 else 3
            def run(labels=labels, sampler=sampler, steps=steps):
                return pipe.generate(labels, sampler=sampler, steps=steps, seed=0)

            seconds = timeit(run, repeats=repeats, warmup=0 if steps == 1000 else 1)
            passes = passes_per_image(pipe, sampler, steps)
            gflops = passes * batch * flops_per_image / seconds / 1e9
            row = {"sampler": sampler, "steps": steps, "batch": batch, "seconds": seconds, "passes_per_image": passes,
                   "images_per_s": batch / seconds, "ms_per_call": 1000 * seconds / steps, "gflops": gflops,
                   "precision": precision, "fraction_of_ceiling": gflops / ceiling[f"{precision}_gflops"]}
            rows.append(row)
            print(f"{sampler.upper():4s} {steps:4d} steps, batch {batch:2d}: {seconds:7.3f} s, "
                  f"{row['images_per_s']:7.1f} img/s, {row['ms_per_call']:6.2f} ms/call, {gflops:5.0f} GFLOP/s "
                  f"({100 * row['fraction_of_ceiling']:.0f}% of the {precision} matmul ceiling)")

    def find(sampler, steps, batch):
        return next(r["seconds"] for r in rows if (r["sampler"], r["steps"], r["batch"]) == (sampler, steps, batch))

    # The ratio from runs that alternate (DDIM 50, DDPM 1000) three times: a shared machine's speed drifts by 10%
    # over the minutes between the table's rows, which would otherwise land in the ratio.
    ddim_times, ddpm_times = [], []
    for _ in range(3):
        for sampler, steps, times in (("ddim", 50, ddim_times), ("ddpm", 1000, ddpm_times)):
            times.append(timeit(lambda sampler=sampler, steps=steps: pipe.generate(
                cycle_labels(16), sampler=sampler, steps=steps, seed=0), repeats=1, warmup=0))
    ratio = statistics.median(ddpm_times) / statistics.median(ddim_times)
    work_ratio = passes_per_image(pipe, "ddpm", 1000) / passes_per_image(pipe, "ddim", 50)
    single = timeit(lambda: pipe.generate(cycle_labels(16), sampler="ddim", steps=50, guidance_scale=1.0, seed=0),
                    repeats=3)
    peer_fp32, peer_flops = peer_ddim_seconds(bf16=False)
    peer_bf16, _ = peer_ddim_seconds(bf16=True)
    ours = find("ddim", 50, 16)
    eager = {}
    if args.compile:  # the same two runs with the uncompiled network, in this process: the gain of compiling
        pipe.use_eager()
        eager = {"eager_ddim50_b16_s": timeit(lambda: pipe.generate(cycle_labels(16), sampler="ddim", steps=50,
                                                                     seed=0), repeats=3),
                 "eager_ddim50_b16_no_guidance_s": timeit(lambda: pipe.generate(
                     cycle_labels(16), sampler="ddim", steps=50, guidance_scale=1.0, seed=0), repeats=3)}
        print(f"uncompiled, same run: {eager['eager_ddim50_b16_s']:.3f} s with guidance "
              f"({eager['eager_ddim50_b16_s'] / ours:.2f}x the compiled time), "
              f"{eager['eager_ddim50_b16_no_guidance_s']:.3f} s without "
              f"({eager['eager_ddim50_b16_no_guidance_s'] / single:.2f}x)")
    print(f"DDPM 1000 / DDIM 50 wall time (batch 16, median of 3 alternating runs each): {ratio:.1f}, for "
          f"{work_ratio:.1f}x the network passes")
    print(f"peer (diffusers UNet2DModel 32/64/64, {peer_flops / 1e6:.0f} MFLOP/image, DDIMScheduler) 16 images x 50 "
          f"steps: fp32 {peer_fp32:.3f} s, bf16 {peer_bf16:.3f} s")
    print(f"ours 16 images x DDIM 50: {ours:.3f} s with guidance {w:g} (peer fp32 / ours = {peer_fp32 / ours:.1f}x), "
          f"{single:.3f} s without guidance ({peer_fp32 / single:.1f}x)")
    write_result(f"sampling-{Path(args.model).name}" + ("-compiled" if args.compile else ""), {
        "model": args.model, "precision": precision, "compiled": args.compile, "guidance_scale": w,
        "flops_per_image_pass": flops_per_image, "ceiling": ceiling, "rows": rows, "ddpm1000_over_ddim50": ratio,
        "ddpm1000_over_ddim50_passes": work_ratio, "ratio_runs_s": {"ddim50": ddim_times, "ddpm1000": ddpm_times},
        "guidance_interval": d.guidance_interval, "guidance_range": r, "spacing": d.spacing,
        "peer_fp32_s": peer_fp32, "peer_bf16_s": peer_bf16, "peer_flops_per_image": peer_flops,
        "ours_ddim50_b16_s": ours,
        "ours_ddim50_b16_no_guidance_s": single, "speedup_vs_peer_fp32": peer_fp32 / ours, **eager})


if __name__ == "__main__":
    main()

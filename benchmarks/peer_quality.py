"""Quality per CPU-second: train our default model and the diffusers peer for the same wall-clock budget on
Fashion-MNIST, then score both with diffusion.evaluate's classifier (class accuracy, Frechet distance / floor) at
DDIM 50 steps, in one run.

Peer recipe (what a diffusers user runs): UNet2DModel 32/64/64 with class embeddings, DDPMScheduler (linear betas,
epsilon), AdamW 1e-3 with warm-up and cosine decay, EMA 0.999, bf16 autocast, batch 128; sampled with diffusers'
DDIMScheduler. Ours: the architecture of checkpoints/fashion-mnist-fast (`--ours default`: that of
checkpoints/fashion-mnist) in our loop for the same time; `--save-ours DIR` keeps our run (its model/ is what ships
as checkpoints/fashion-mnist-fast).

`--ours-model DIR` trains the peer only and scores a model that already exists (e.g. a shipped one whose training
took longer than one run should) against it, at DDIM 50 with the model's saved guidance: give `--minutes` the time
that model's training took on this machine. `--peer-precision fp32` trains and samples the peer without autocast,
for CPUs where bf16 is the slower choice.

Usage: python benchmarks/peer_quality.py [--minutes 20] [--ours fast|default] [--save-ours runs/fmnist-fast]
       python benchmarks/peer_quality.py --ours-model checkpoints/fashion-mnist-fast-gd --minutes 49 \
           --peer-precision fp32
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import DEFAULT, FAST, PeerTrainer, machine, write_result  # noqa: E402
from diffusion import Pipeline  # noqa: E402
from diffusion.checkpoint import TRAINING_NAME, atomic_write  # noqa: E402
from diffusion.classifier import load_classifier  # noqa: E402
from diffusion.data import load_dataset  # noqa: E402
from diffusion.evaluate import balanced_subset, frechet_distance, real_floor, score  # noqa: E402
from diffusion.images import to_uint8  # noqa: E402
from diffusion.precision import name as precision_name  # noqa: E402
from diffusion.training import TrainConfig, Trainer  # noqa: E402


def steps_for(budget_s: float, step_fn, probe_steps: int = 30, warmup: int = 5) -> int:
    """How many steps fit in the budget, timed on `probe_steps` steps after `warmup` (all count as training)."""
    for i in range(warmup):
        step_fn(i)
    t0 = time.perf_counter()
    for i in range(warmup, warmup + probe_steps):
        step_fn(i)
    per_step = (time.perf_counter() - t0) / probe_steps
    return max(warmup + probe_steps + 1, int(budget_s / per_step))


def train_ours(budget_s: float, out: str, architecture: dict) -> tuple[Pipeline, int, float]:
    # bf16 autocast as the peer (and as the shipped fast model was trained), not the loop's default "auto"
    probe = Trainer(TrainConfig(output_dir=out + "-probe", progress=False, max_steps=10_000, precision="bf16",
                                **architecture))
    total = steps_for(budget_s, probe.train_step)
    cfg = TrainConfig(output_dir=out, progress=False, max_steps=total, sample_every=total, save_every=total,
                      precision="bf16", **architecture)
    trainer = Trainer(cfg)
    t0 = time.perf_counter()
    trainer.run()
    return Pipeline(trainer.ema.model, trainer.diffusion_config, precision="bf16"), total, time.perf_counter() - t0


def train_own(args: argparse.Namespace, budget_s: float) -> tuple[Pipeline, int, float]:
    """Train our model for the budget; with --save-ours keep the run and say in its record how long it trained."""
    with tempfile.TemporaryDirectory() as tmp:
        out = args.save_ours or str(Path(tmp) / "ours")
        ours, steps, seconds = train_ours(budget_s, out, FAST if args.ours == "fast" else DEFAULT)
        if args.save_ours:  # say in the model's training record how its step count was chosen
            record_path = Path(out) / "model" / TRAINING_NAME
            record = json.loads(record_path.read_text())
            record["wall_time_note"] = (f"trained by `python {' '.join(sys.argv)}`: the step count is what fits in "
                                        f"{args.minutes:g} minutes, the budget the diffusers peer got in the same run")
            atomic_write(record_path, lambda tmp: tmp.write_text(json.dumps(record, indent=2) + "\n"))
    return ours, steps, seconds


def train_peer(budget_s: float, precision: str = "bf16", batch: int = 128) -> tuple[torch.nn.Module, int, float]:
    peer = PeerTrainer(precision, batch)
    t0 = time.perf_counter()
    peer.total_steps = steps_for(budget_s, peer.step)
    for i in range(35, peer.total_steps):
        peer.step(i)
    return peer.ema.eval(), peer.total_steps, time.perf_counter() - t0


@torch.no_grad()
def sample_peer(unet, labels: torch.Tensor, steps: int, seed: int, precision: str = "bf16",
                batch: int = 50) -> torch.Tensor:
    from diffusers import DDIMScheduler

    scheduler = DDIMScheduler(num_train_timesteps=1000)
    out = []
    for b, start in enumerate(range(0, len(labels), batch)):
        y = labels[start:start + batch]
        g = torch.Generator().manual_seed(seed * 100_003 + b)
        x = torch.randn(len(y), 1, 28, 28, generator=g)
        scheduler.set_timesteps(steps)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            for t in scheduler.timesteps:
                x = scheduler.step(unet(x, t, class_labels=y).sample.float(), t, x).prev_sample
        out.append(torch.from_numpy(to_uint8(((x + 1) / 2).clamp(0, 1))).permute(0, 3, 1, 2))
    return torch.cat(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=15.0, help="training budget of each model")
    parser.add_argument("--per-class", type=int, default=100, help="evaluation images per class")
    parser.add_argument("--ours", choices=("fast", "default"), default="fast", help="our architecture")
    parser.add_argument("--save-ours", default=None, help="keep our training run in this directory")
    parser.add_argument("--ours-model", default=None,
                        help="score this model directory instead of training ours (the peer still trains)")
    parser.add_argument("--peer-precision", choices=("bf16", "fp32"), default="bf16",
                        help="the peer's training and sampling precision (bf16 autocast, as its users run it)")
    args = parser.parse_args()
    if args.ours_model and args.save_ours:
        parser.error("--save-ours keeps a training run; with --ours-model nothing of ours is trained")
    budget = 60 * args.minutes
    classifier = load_classifier("checkpoints/classifiers/fashion-mnist")
    train, test = load_dataset("fashion-mnist", "train"), load_dataset("fashion-mnist", "test")
    test_images, test_labels = balanced_subset(test, args.per_class, seed=0)
    floor, test_feats = real_floor(classifier, train, test_images, test_labels, args.per_class)
    labels = torch.arange(10).repeat_interleave(args.per_class)

    if args.ours_model:
        ours, our_steps, our_time = Pipeline.from_pretrained(args.ours_model), None, None
        our_name = Path(args.ours_model).name
        settings = [(f"ours ({our_name}), guidance {ours.config.sampling.guidance_scale:g}", {})]
    else:
        ours, our_steps, our_time = train_own(args, budget)
        our_name = args.ours
        settings = [("ours, guidance 1", {"guidance_scale": 1.0}), ("ours, guidance 2", {"guidance_scale": 2.0})]
    peer, peer_steps, peer_time = train_peer(budget, args.peer_precision)
    rows = {}
    for name, kwargs in [*settings, ("peer", None)]:
        t0 = time.perf_counter()
        if kwargs is None:
            images = sample_peer(peer, labels, 50, seed=0, precision=args.peer_precision)
        else:
            images = torch.from_numpy(to_uint8(ours.generate(labels.tolist(), sampler="ddim", steps=50, eta=0.0,
                                                             seed=0, **kwargs))).permute(0, 3, 1, 2)
        seconds = time.perf_counter() - t0
        acc, feats = score(classifier, images, labels)
        fd = frechet_distance(feats, test_feats)
        rows[name] = {"accuracy": acc, "fd": fd, "fd_ratio": fd / floor.frechet_distance, "sample_s": seconds,
                      "seconds_per_image": seconds / len(labels)}
    print(f"machine: {machine()}")
    ours_line = (f"ours: {args.ours_model} (not trained in this run)" if args.ours_model
                 else f"ours ({args.ours}) {our_steps} steps in {our_time / 60:.1f} min")
    print(f"budget {args.minutes:g} min each: {ours_line}, peer {peer_steps} steps in {peer_time / 60:.1f} min "
          f"(batch 128, {args.peer_precision}); floor FD {floor.frechet_distance:.3f}")
    for name, r in rows.items():
        print(f"{name:18s} DDIM 50: accuracy {r['accuracy']:.3f}, FD {r['fd']:.3f} ({r['fd_ratio']:.2f}x floor), "
              f"sampling {r['sample_s']:.1f} s for {len(labels)} images")
    d = ours.config.sampling
    our_grid = "tuned" if d.tuned_timesteps and "50" in d.tuned_timesteps else d.spacing
    write_result("peer_quality" + (f"-{our_name}" if args.ours_model else ""),
                 {"minutes": args.minutes, "ours": args.ours_model or args.ours, "ours_steps": our_steps,
                  "ours_precision": precision_name(ours.autocast_dtype), "ours_ddim50_timesteps": our_grid,
                  "peer_steps": peer_steps, "peer_precision": args.peer_precision, "ours_train_s": our_time,
                  "peer_train_s": peer_time, "floor": floor.frechet_distance, "rows": rows})


if __name__ == "__main__":
    main()

"""Plot evaluated quality against sampling wall time for every sampler and step count of the shipped models
(their evaluation.json, plus further `diffusion.evaluate --out benchmarks/results/eval-*.json` rows of the same
models, e.g. other samplers), with the diffusers peer from benchmarks/results/peer_quality.json when present.

Usage: python benchmarks/plot_quality.py [--out docs/quality_vs_time.png]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from diffusion.evaluate import SamplerSetting  # noqa: E402


def label(row: dict) -> str:
    return SamplerSetting(row["sampler"], row["steps"], row["eta"]).short_label


def plot_rows(ax_fd, ax_acc, rows: list[dict], colour: str, markers: dict[str, str]) -> None:
    for r in rows:
        ms = 1000 * r["seconds_per_image"]
        for ax, y in ((ax_fd, r["fd_ratio"]), (ax_acc, r["accuracy"])):
            ax.scatter(ms, y, color=colour, marker=markers[r["sampler"]], s=36)
            ax.annotate(label(r), (ms, y), fontsize=7, xytext=(4, 3), textcoords="offset points")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "quality_vs_time.png"), help="PNG to write")
    args = parser.parse_args()
    fig, (ax_fd, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2))
    markers = {"ddim": "o", "ddpm": "s", "dpm++": "^"}
    colours = {}
    palette = [f"C{i}" for i in range(10) if i != 3]  # C3 marks the peer
    for model_dir, colour in zip(sorted((ROOT / "checkpoints").glob("*/evaluation.json")), palette):
        evaluation = json.loads(model_dir.read_text())
        name = model_dir.parent.name
        colours[name] = colour
        plot_rows(ax_fd, ax_acc, evaluation["rows"], colour, markers)
        # times come from each model's card, measured where it was released: the precision tells the machines apart
        ax_fd.scatter([], [], color=colour, label=f"{name} (guidance {evaluation['rows'][0]['guidance_scale']:g}, "
                                                  f"timed in {evaluation.get('precision', '?')})")
    for extra in sorted((ROOT / "benchmarks" / "results").glob("eval-*.json")):
        evaluation = json.loads(extra.read_text())
        colour = colours.get(Path(evaluation.get("model", "")).name)
        if colour is not None:
            plot_rows(ax_fd, ax_acc, evaluation["rows"], colour, markers)
    for sampler, marker in markers.items():
        ax_acc.scatter([], [], color="grey", marker=marker, label=sampler.upper())
    ax_acc.legend(fontsize=8)
    peer = ROOT / "benchmarks" / "results" / "peer_quality.json"
    if peer.exists():
        p = json.loads(peer.read_text())["rows"].get("peer")
        if p:
            ms = 1000 * p["seconds_per_image"]
            ax_fd.scatter(ms, p["fd_ratio"], color="C3", marker="x", s=50, label="diffusers peer, DDIM 50")
            ax_acc.scatter(ms, p["accuracy"], color="C3", marker="x", s=50)
    ax_fd.set_yscale("log")  # the peer sits an order of magnitude above our models
    ax_fd.axhline(1.5, color="grey", lw=0.8, ls="--")
    ax_fd.annotate("1.5x floor (target)", (0.01, 1.5), xycoords=("axes fraction", "data"), va="bottom", fontsize=7,
                   color="grey")
    ax_acc.axhline(0.95, color="grey", lw=0.8, ls="--")
    for ax, title in ((ax_fd, "Frechet distance / real-data floor (lower is better, log scale)"),
                      (ax_acc, "class accuracy of generated images")):
        ax.set_xscale("log")
        ax.set_xlabel("sampling wall time per image, ms (log scale, batch 50, 2 CPU cores)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
    ax_fd.legend(fontsize=8)
    fig.tight_layout()
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

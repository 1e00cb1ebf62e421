"""App latency: time from a /generate call (DDIM 20 steps, 16 images) to the first streamed image and to the
final result, through gradio_client against a local server running the shipped model.

Usage: python benchmarks/app_latency.py [--repeats 5]
       DIFFUSION_LAB_COMPILE=1 python benchmarks/app_latency.py   (the app with torch.compile; compiles untimed)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import machine, write_result  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed requests")
    args = parser.parse_args()
    from gradio_client import Client

    from app import demo

    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    model = demo_model = None
    try:
        client = Client(demo.local_url, verbose=False)
        demo_model = client.predict("fashion-mnist", api_name="/select_model")[0]
        model = "fashion-mnist"
        firsts, lasts = [], []
        for r in range(args.repeats + 1):
            t0 = time.perf_counter()
            job = client.submit(model, "ddim", 20, 0.0, 2.0, r, False, 16, "class", "Trouser", "Bag", 0.5,
                                api_name="/generate")
            first = None
            while not job.done():
                if first is None and job.outputs():
                    first = time.perf_counter() - t0
                time.sleep(0.002)
            job.result()
            last = time.perf_counter() - t0
            if r:  # the first request warms up
                firsts.append(first if first is not None else last)
                lasts.append(last)
        compiled = os.environ.get("DIFFUSION_LAB_COMPILE", "") == "1"
        result = {"first_image_s": statistics.median(firsts), "final_s": statistics.median(lasts),
                  "repeats": args.repeats, "compiled": compiled}
        print(f"machine: {machine()}")
        print(f"/generate DDIM 20 steps x 16 images via gradio_client: first streamed image after "
              f"{result['first_image_s']:.3f} s, final result after {result['final_s']:.3f} s (median of "
              f"{args.repeats}; {demo_model}{', torch.compile' if compiled else ''})")
        write_result("app_latency" + ("-compiled" if compiled else ""), result)
    finally:
        demo.close()


if __name__ == "__main__":
    main()

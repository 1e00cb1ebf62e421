"""Load test driver: N concurrent gradio_client clients, each making several /generate requests against a local
server. Every request must complete or be refused by the queue limit ("Queue is full"); anything else is an error.
Reports throughput, latency percentiles and the server's peak memory.

Usage: python benchmarks/load.py [--clients 32] [--requests 3]     (starts the app on the shipped model)
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@dataclass
class LoadResult:
    completed: int = 0
    busy: int = 0
    errors: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    wall_s: float = 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

    def summary(self) -> dict:
        return {"completed": self.completed, "busy": self.busy, "errors": len(self.errors),
                "throughput_req_s": self.completed / self.wall_s if self.wall_s else 0.0,
                "p50_s": self.percentile(50), "p90_s": self.percentile(90), "p99_s": self.percentile(99),
                "max_s": max(self.latencies, default=float("nan")),
                "mean_s": statistics.mean(self.latencies) if self.latencies else float("nan"), "wall_s": self.wall_s}


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM) in MB."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_load(url: str, args: list, clients: int = 32, requests: int = 3, api_name: str = "/generate",
             timeout_s: float = 600.0) -> LoadResult:
    """`clients` threads, each with its own gradio_client.Client, each sending `requests` requests with `args`."""
    from gradio_client import Client
    from gradio_client.utils import QueueError

    result = LoadResult()
    lock = threading.Lock()
    start_barrier = threading.Barrier(clients)
    deadline = time.monotonic() + timeout_s

    def worker() -> None:
        try:
            client = Client(url, verbose=False, download_files=False)
        except Exception as e:  # noqa: BLE001 - recorded as an error
            with lock:
                result.errors.append(f"connect: {e!r}")
            start_barrier.abort()
            return
        try:
            start_barrier.wait(timeout=120)
        except threading.BrokenBarrierError:
            pass
        for _ in range(requests):
            if time.monotonic() > deadline:
                with lock:
                    result.errors.append("timed out")
                return
            t0 = time.perf_counter()
            try:
                client.predict(*args, api_name=api_name)
                with lock:
                    result.completed += 1
                    result.latencies.append(time.perf_counter() - t0)
            except QueueError:
                with lock:
                    result.busy += 1
                time.sleep(0.5)
            except Exception as e:  # noqa: BLE001 - recorded as an error
                with lock:
                    result.errors.append(repr(e)[:300])

    threads = [threading.Thread(target=worker, daemon=True) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=max(1.0, deadline - time.monotonic()))
    result.wall_s = time.perf_counter() - t0
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=32, help="concurrent clients")
    parser.add_argument("--requests", type=int, default=3, help="requests per client")
    parser.add_argument("--images", type=int, default=4, help="images per request")
    parser.add_argument("--steps", type=int, default=20, help="DDIM steps per request")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from app import demo
    from common import machine, write_result

    demo.launch(server_name="127.0.0.1", prevent_thread_lock=True, quiet=True)
    try:
        rss_before = peak_rss_mb()
        request = ["fashion-mnist", "ddim", args.steps, 0.0, 2.0, 0, True, args.images, "class", "Trouser", "Bag", 0.5]
        result = run_load(demo.local_url, request, args.clients, args.requests)
        s = result.summary()
        print(f"machine: {machine()}")
        print(f"{args.clients} clients x {args.requests} requests (DDIM {args.steps} steps, {args.images} images): "
              f"{s['completed']} completed, {s['busy']} refused as busy, {s['errors']} errors in {s['wall_s']:.1f} s; "
              f"{s['throughput_req_s']:.2f} requests/s; latency p50 {s['p50_s']:.2f} s, p90 {s['p90_s']:.2f} s, "
              f"p99 {s['p99_s']:.2f} s; peak RSS {peak_rss_mb():.0f} MB (before: {rss_before:.0f} MB)")
        for e in result.errors[:5]:
            print("error:", e)
        write_result("load", {**s, "clients": args.clients, "requests_per_client": args.requests,
                              "images": args.images, "steps": args.steps, "peak_rss_mb": peak_rss_mb(),
                              "rss_before_mb": rss_before})
    finally:
        demo.close()


if __name__ == "__main__":
    main()

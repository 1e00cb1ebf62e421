"""The machine's ceiling: dense matmul GFLOP/s in fp32 and bf16 (2 n^3 FLOPs per n x n matmul).

Usage: python benchmarks/ceiling.py
"""

from __future__ import annotations

import torch

from common import machine, timeit, write_result


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 5) -> float:
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    seconds = timeit(lambda: torch.mm(a, b), repeats=repeats, warmup=2)
    return 2 * n**3 / seconds / 1e9


def measure() -> dict:
    return {"fp32_gflops": matmul_gflops(torch.float32), "bf16_gflops": matmul_gflops(torch.bfloat16)}


if __name__ == "__main__":
    result = measure()
    print(f"machine: {machine()}")
    print(f"matmul 2048x2048: fp32 {result['fp32_gflops']:.0f} GFLOP/s, bf16 {result['bf16_gflops']:.0f} GFLOP/s")
    write_result("ceiling", result)

"""Arithmetic lower bounds for the benchmarks: FLOPs of the minimal forward work divided by this
machine's measured matmul throughput (a small GEMM probe, run in the same process and conditions)."""

from __future__ import annotations

import statistics
import time

import torch

from causaleval.model.loading import ModelBundle
from causaleval.model.sites import get_module


def gemm_flops_per_s(m: int = 512, k: int = 576, n: int = 1536, repeats: int = 7) -> float:
    """Median throughput (FLOP/s) of an (m, k) @ (k, n) float32 matmul, the shape of a block's MLP."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(2):
        a @ b
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(5):
            a @ b
        rates.append(5 * 2 * m * k * n / (time.perf_counter() - t0))
    return statistics.median(rates)


def block_matmul_params(bundle: ModelBundle) -> int:
    """Weights of one block's matmuls (2-D parameters): 2 × this is the block's FLOPs per token."""
    block = get_module(bundle.model, bundle.family.layer_path(0))
    return sum(p.numel() for p in block.parameters() if p.dim() == 2)


def unembed_flops(bundle: ModelBundle) -> int:
    """FLOPs of the unembedding of one position."""
    return 2 * bundle.model.get_output_embeddings().weight.numel()


def block_token_flops(bundle: ModelBundle, context: int) -> int:
    """FLOPs of one block on one token attending to ``context`` positions (matmuls + scores + mixing)."""
    d = bundle.model.get_input_embeddings().weight.shape[1]
    return 2 * block_matmul_params(bundle) + 4 * context * d

#!/usr/bin/env python3
"""Peer figures for packages/core-tensor/bench/bench-tensor.ts: the same measurements in PyTorch on the CPU.

  python3 scripts/bench_peer_torch.py [--json] [--quick] [--no-block] [--budget SECONDS] [--max-runs N]

Measures, with torch.set_num_threads(os.cpu_count()):
  * f32 matmul GFLOP/s at M×K×N = 1024³, 2048³ (skipped by --quick) and 64×576×1536;
  * the step time of one Llama-style transformer block forward + backward (the SmolLM2-135M block: d=576, 9 heads,
    3 KV heads, head dim 64, ffn 1536, seq 128, batch 4), loss = mean of the output squares, gradients w.r.t. the
    block's weights — the same block bench-tensor.ts builds from bdvax ops.

Timing: one warm-up run, then timed runs until `max-runs` runs or (≥ 1 run and ≥ `budget` seconds); the median is
reported. Falls back to NumPy (matmul only) when torch cannot be imported; prints "peer unavailable" (or
{"available": false, ...} with --json) when neither can, and exits 0 either way.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time

MATMUL_SHAPES = [(1024, 1024, 1024), (2048, 2048, 2048), (64, 576, 1536)]
QUICK_SKIP = {(2048, 2048, 2048)}

# SmolLM2-135M block.
D, HEADS, KV_HEADS, HEAD_DIM, FFN, SEQ, BATCH = 576, 9, 3, 64, 1536, 128, 4
ROPE_THETA, RMS_EPS = 10000.0, 1e-5


def shape_key(m: int, k: int, n: int) -> str:
    return f"{m}x{k}x{n}"


def measure(fn, budget: float, max_runs: int) -> dict:
    """Warm-up run, then timed runs until max_runs, or ≥ 1 run and ≥ budget seconds; median in ms."""
    fn()
    times = []
    start = time.perf_counter()
    while len(times) < max_runs:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        if time.perf_counter() - start >= budget:
            break
    return {"ms": statistics.median(times), "min_ms": min(times), "runs": len(times)}


def bench_matmul_torch(torch, shapes, budget, max_runs):
    out = {}
    g = torch.Generator().manual_seed(0)
    for m, k, n in shapes:
        a = torch.randn(m, k, generator=g, dtype=torch.float32)
        b = torch.randn(k, n, generator=g, dtype=torch.float32)
        with torch.no_grad():
            r = measure(lambda: torch.matmul(a, b), budget, max_runs)
        r["gflops"] = 2.0 * m * k * n / (r["ms"] * 1e6)
        out[shape_key(m, k, n)] = r
    return out


def bench_matmul_numpy(np, shapes, budget, max_runs):
    out = {}
    rng = np.random.default_rng(0)
    for m, k, n in shapes:
        a = rng.standard_normal((m, k), dtype=np.float32)
        b = rng.standard_normal((k, n), dtype=np.float32)
        r = measure(lambda: a @ b, budget, max_runs)
        r["gflops"] = 2.0 * m * k * n / (r["ms"] * 1e6)
        out[shape_key(m, k, n)] = r
    return out


def rope_tables(torch, t: int, dh: int):
    """Hugging Face LlamaRotaryEmbedding (default rope type): cos/sin [T, Dh] of cat(freqs, freqs)."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def bench_block_torch(torch, budget, max_runs):
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)

    def w(*shape, std=0.02):
        return (torch.randn(*shape, generator=g) * std).requires_grad_(True)

    p = {
        "attn_norm": torch.ones(D, requires_grad=True),
        "wq": w(HEADS * HEAD_DIM, D),
        "wk": w(KV_HEADS * HEAD_DIM, D),
        "wv": w(KV_HEADS * HEAD_DIM, D),
        "wo": w(D, HEADS * HEAD_DIM),
        "mlp_norm": torch.ones(D, requires_grad=True),
        "wg": w(FFN, D),
        "wu": w(FFN, D),
        "wd": w(D, FFN),
    }
    x = torch.randn(BATCH, SEQ, D, generator=g)
    cos, sin = rope_tables(torch, SEQ, HEAD_DIM)

    def rms_norm(h, weight):  # LlamaRMSNorm
        var = h.pow(2).mean(-1, keepdim=True)
        return weight * (h * torch.rsqrt(var + RMS_EPS))

    def rotate_half(h):
        h1, h2 = h[..., : h.shape[-1] // 2], h[..., h.shape[-1] // 2 :]
        return torch.cat((-h2, h1), dim=-1)

    def rope(h):
        return h * cos + rotate_half(h) * sin

    try:
        F.scaled_dot_product_attention(torch.zeros(1, 2, 1, 4), torch.zeros(1, 1, 1, 4), torch.zeros(1, 1, 1, 4), enable_gqa=True)
        gqa_native = True
    except (TypeError, RuntimeError):
        gqa_native = False

    def attention(q, k, v):
        if gqa_native:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        rep = HEADS // KV_HEADS
        return F.scaled_dot_product_attention(q, k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1), is_causal=True)

    def step():
        for t in p.values():
            t.grad = None
        h = rms_norm(x, p["attn_norm"])
        q = F.linear(h, p["wq"]).view(BATCH, SEQ, HEADS, HEAD_DIM).transpose(1, 2)
        k = F.linear(h, p["wk"]).view(BATCH, SEQ, KV_HEADS, HEAD_DIM).transpose(1, 2)
        v = F.linear(h, p["wv"]).view(BATCH, SEQ, KV_HEADS, HEAD_DIM).transpose(1, 2)
        a = attention(rope(q), rope(k), v).transpose(1, 2).reshape(BATCH, SEQ, HEADS * HEAD_DIM)
        x1 = x + F.linear(a, p["wo"])
        h2 = rms_norm(x1, p["mlp_norm"])
        out = x1 + F.linear(F.silu(F.linear(h2, p["wg"])) * F.linear(h2, p["wu"]), p["wd"])
        loss = out.pow(2).mean()
        loss.backward()
        return loss

    r = measure(step, budget, max_runs)
    r["attention"] = "sdpa(enable_gqa)" if gqa_native else "sdpa(repeat_interleave)"
    return r


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    ap.add_argument("--quick", action="store_true", help="fewer runs, skip 2048^3")
    ap.add_argument("--no-block", action="store_true", help="skip the transformer block")
    ap.add_argument("--budget", type=float, default=None, help="seconds per measurement after warm-up")
    ap.add_argument("--max-runs", type=int, default=None, help="timed runs per measurement at most")
    args = ap.parse_args()
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 3.0)
    max_runs = args.max_runs if args.max_runs is not None else (5 if args.quick else 20)
    shapes = [s for s in MATMUL_SHAPES if not (args.quick and s in QUICK_SKIP)]
    threads = os.cpu_count() or 1

    result: dict = {
        "available": False,
        "python": platform.python_version(),
        "executable": sys.executable,
        "threads": threads,
        "budget_s": budget,
        "max_runs": max_runs,
    }
    errors = []
    try:
        import torch

        torch.set_num_threads(threads)
        result.update(available=True, library="torch", version=torch.__version__, name=f"torch {torch.__version__} cpu")
        result["matmul"] = bench_matmul_torch(torch, shapes, budget, max_runs)
        if not args.no_block:
            block = bench_block_torch(torch, budget, max_runs)
            result["block_ms"] = block["ms"]
            result["block"] = block
    except ImportError as e:
        errors.append(f"torch: {e}")
        try:
            import numpy as np

            result.update(available=True, library="numpy", version=np.__version__, name=f"numpy {np.__version__}")
            result["matmul"] = bench_matmul_numpy(np, shapes, budget, max_runs)
            result["block_ms"] = None
            result["block"] = {"error": "needs torch (numpy fallback measures matmul only)"}
        except ImportError as e2:
            errors.append(f"numpy: {e2}")
    if errors:
        result["errors"] = errors

    if args.json:
        print(json.dumps(result))
        return 0
    if not result["available"]:
        print("peer unavailable: " + "; ".join(errors))
        return 0
    print(f"peer: {result['name']}, {threads} threads (python {result['python']})")
    for key, r in result["matmul"].items():
        print(f"  matmul {key:>16}  {r['gflops']:9.2f} GFLOP/s  {r['ms']:9.2f} ms  ({r['runs']} runs)")
    block = result.get("block")
    if block and "ms" in block:
        print(f"  block fwd+bwd     {block['ms']:9.2f} ms  ({block['runs']} runs, {block['attention']})")
    elif block:
        print(f"  block: {block['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Peer figures for packages/core-tensor/bench/bench-tensor.ts: the same workloads in PyTorch (CPU) and NumPy.

  python3 scripts/bench_peer_torch.py [--json] [--quick] [--budget SECONDS] [--max-runs N] [--min-time SECONDS]
                                     [--cold-limit SECONDS]
                                      [--no-torch] [--no-numpy] [--no-transposed] [--no-mlp] [--no-block]

PyTorch, with torch.set_num_threads(os.cpu_count()):
  * f32 matmul GFLOP/s at M×K×N = 1024³, 2048³ (skipped by --quick) and 64×576×1536;
  * the transpose variants NT, TN, TT at 1024³ and 64×576×1536: the transposed operand is stored transposed and
    passed as a `.t()` view (no copy; torch hands the transpose to its BLAS);
  * one training step of the MLP 1024→4096→1024 (ReLU), batch 64: forward, MSE loss to a fixed target, backward,
    torch.optim.Adam (lr 1e-3, no weight decay) — on the same numbers as the JavaScript libraries (`hash_data`);
  * the forward + backward step of one Llama-style transformer block (the SmolLM2-135M block: d=576, 9 heads,
    3 KV heads, head dim 64, ffn 1536, seq 128, batch 4), loss = mean of the output squares, gradients w.r.t. the
    block's weights — the same block bench-tensor.ts builds from bdvax ops — and its peak memory: what was resident
    before the step (parameters, input, rope tables) plus the high-water mark of the step's own allocations, from
    torch.profiler's memory events (profile_memory=True; tracemalloc does not see torch's allocator).
NumPy (its own BLAS threads): matmul and the transpose variants (`.T` views, handed to BLAS without a copy).

Timing: one warm-up run, then timed runs until (≥ `max-runs` runs and ≥ `min-time` seconds of them) or (≥ 1 run and
≥ `budget` seconds) or 1000 runs; the median is reported — the same rule as bench/shared.ts `measure`. With --json, every stdout line is the whole result so far as one JSON object (the last line is final), so
a run that dies half-way still reports what it measured; progress goes to stderr as "[peer] …" lines. Exits 0 when
neither torch nor numpy can be imported ("available": false).
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
TRANSPOSE_SHAPES = [(1024, 1024, 1024), (64, 576, 1536)]
T_VARIANTS = ["NT", "TN", "TT"]

# The MLP of bench/shared.ts (MLP).
MLP = dict(batch=64, din=1024, hidden=4096, dout=1024, lr=1e-3, beta1=0.9, beta2=0.999, eps=1e-8, init_std=0.02)
MLP_SEEDS = dict(w1=11, w2=12, x=13, target=14)
MLP_FLOPS = 2 * MLP["batch"] * (2 * MLP["din"] * MLP["hidden"] + 3 * MLP["hidden"] * MLP["dout"])

# SmolLM2-135M block.
D, HEADS, KV_HEADS, HEAD_DIM, FFN, SEQ, BATCH = 576, 9, 3, 64, 1536, 128, 4
ROPE_THETA, RMS_EPS = 10000.0, 1e-5


def shape_key(m: int, k: int, n: int) -> str:
    return f"{m}x{k}x{n}"


def progress(msg: str) -> None:
    print(f"[peer] {msg}", file=sys.stderr, flush=True)


def err_text(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:400]


MAX_TIMED_RUNS = 1000


def measure(fn, budget: float, max_runs: int, cold_limit: float | None = None, min_time: float = 0.0) -> dict:
    """Warm-up run, then timed runs until (≥ max_runs and ≥ min_time s) or (≥ 1 run and ≥ budget s); median in ms.

    With cold_limit (--quick), a warm-up that alone takes ≥ cold_limit seconds is reported as the single run."""
    w0 = time.perf_counter()
    fn()
    warm = (time.perf_counter() - w0) * 1e3
    if cold_limit is not None and warm >= cold_limit * 1e3:
        return {"ms": warm, "min_ms": warm, "runs": 1, "all_ms": [round(warm, 2)], "cold": True}
    times = []
    start = time.perf_counter()
    while True:
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
        elapsed = time.perf_counter() - start
        if elapsed >= budget or len(times) >= MAX_TIMED_RUNS:
            break
        if len(times) >= max_runs and elapsed >= min_time:
            break
    return {"ms": statistics.median(times), "min_ms": min(times), "runs": len(times), "all_ms": [round(t, 2) for t in times]}


def hash_data(np, n: int, seed: int, std: float = 1.0):
    """bench/shared.ts hashData, bit for bit: element i is lowbias32(i + lowbias32(seed)), scaled to uniform with
    mean 0 and standard deviation `std`."""

    def hash32(x):
        x = x ^ (x >> np.uint32(16))
        x = np.multiply(x, np.uint32(0x7FEB352D), dtype=np.uint32)
        x = x ^ (x >> np.uint32(15))
        x = np.multiply(x, np.uint32(0x846CA68B), dtype=np.uint32)
        return x ^ (x >> np.uint32(16))

    mix = int(hash32(np.array([seed], dtype=np.uint32))[0])
    keys = ((np.arange(n, dtype=np.uint64) + np.uint64(mix)) & np.uint64(0xFFFFFFFF)).astype(np.uint32)
    h = hash32(keys).astype(np.float64)
    return ((((h + 0.5) * 2.3283064365386963e-10) * 2 - 1) * (math.sqrt(3) * std)).astype(np.float32)


def operand_shapes(m: int, k: int, n: int, v: str):
    return ((k, m) if v[0] == "T" else (m, k)), ((n, k) if v[1] == "T" else (k, n))


# ---- torch ----------------------------------------------------------------------------------------------------------


def bench_matmul_torch(torch, shape, v, opts):
    m, k, n = shape
    g = torch.Generator().manual_seed(m + k + n)
    sa, sb = operand_shapes(m, k, n, v)
    a = torch.randn(*sa, generator=g, dtype=torch.float32)
    b = torch.randn(*sb, generator=g, dtype=torch.float32)
    av = a.t() if v[0] == "T" else a
    bv = b.t() if v[1] == "T" else b
    with torch.no_grad():
        r = measure(lambda: torch.matmul(av, bv), *opts)
    r["gflops"] = 2.0 * m * k * n / (r["ms"] * 1e6)
    return r


def bench_mlp_torch(torch, np, opts):
    import torch.nn.functional as F

    B, din, H, dout = MLP["batch"], MLP["din"], MLP["hidden"], MLP["dout"]

    def t(data, *shape, grad=False):
        x = torch.from_numpy(data).reshape(*shape)
        return x.requires_grad_(True) if grad else x

    w1 = t(hash_data(np, din * H, MLP_SEEDS["w1"], MLP["init_std"]), din, H, grad=True)
    b1 = torch.zeros(H, requires_grad=True)
    w2 = t(hash_data(np, H * dout, MLP_SEEDS["w2"], MLP["init_std"]), H, dout, grad=True)
    b2 = torch.zeros(dout, requires_grad=True)
    x = t(hash_data(np, B * din, MLP_SEEDS["x"]), B, din)
    target = t(hash_data(np, B * dout, MLP_SEEDS["target"]), B, dout)
    opt = torch.optim.Adam([w1, b1, w2, b2], lr=MLP["lr"], betas=(MLP["beta1"], MLP["beta2"]), eps=MLP["eps"], weight_decay=0.0)
    losses = []

    def step():
        opt.zero_grad(set_to_none=True)
        y = torch.relu(x @ w1 + b1) @ w2 + b2
        loss = F.mse_loss(y, target)
        loss.backward()
        opt.step()
        losses.append(loss.detach())

    r = measure(step, *opts)
    r["gflops"] = MLP_FLOPS / (r["ms"] * 1e6)
    r["loss0"] = float(losses[0])
    r["loss_last"] = float(losses[-1])
    r["steps"] = len(losses)
    # Peak memory of one more step, started like bdvax's: parameters, inputs and Adam state resident, no gradients.
    try:
        opt.zero_grad(set_to_none=True)
        state = [v for st in opt.state.values() for v in st.values() if torch.is_tensor(v)]
        resident = sum(t.numel() * t.element_size() for t in [w1, b1, w2, b2, x, target, *state])
        extra = step_peak_bytes(torch, step)
        r.update(resident_bytes=resident, step_bytes=extra, peak_bytes=resident + extra)
        r["peak_note"] = "torch.profiler memory events (profile_memory=True): resident tensors + the step's high-water mark"
    except Exception as e:  # noqa: BLE001 - report, don't fail the row
        r["peak_note"] = f"n/a ({err_text(e)})"
    return r


def rope_tables(torch, t: int, dh: int):
    """Hugging Face LlamaRotaryEmbedding (default rope type): cos/sin [T, Dh] of cat(freqs, freqs)."""
    inv_freq = 1.0 / (ROPE_THETA ** (torch.arange(0, dh, 2, dtype=torch.int64).float() / dh))
    freqs = torch.outer(torch.arange(t, dtype=torch.float32), inv_freq)
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def step_peak_bytes(torch, fn) -> int:
    """High-water mark of the CPU allocations made while fn runs, from torch.profiler's memory events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    events.sort(key=lambda e: e.start_ns())
    cur = peak = 0
    for e in events:
        cur += e.nbytes()
        peak = max(peak, cur)
    return peak


def bench_block_torch(torch, opts):
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

    losses = []

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
        losses.append(loss.detach())

    r = measure(step, *opts)
    r["attention"] = "sdpa(enable_gqa)" if gqa_native else "sdpa(repeat_interleave)"
    r["loss0"] = float(losses[0])
    # Peak memory of one more step, started like the timed ones after the cleanup: no gradients alive.
    try:
        for t in p.values():
            t.grad = None
        resident = sum(t.numel() * t.element_size() for t in [*p.values(), x, cos, sin])
        extra = step_peak_bytes(torch, step)
        r.update(resident_bytes=resident, step_bytes=extra, peak_bytes=resident + extra)
        r["peak_note"] = "torch.profiler memory events (profile_memory=True): resident tensors + the step's high-water mark"
    except Exception as e:  # noqa: BLE001 - report, don't fail the row
        r["peak_note"] = f"n/a ({err_text(e)})"
    return r


# ---- numpy ----------------------------------------------------------------------------------------------------------


def bench_matmul_numpy(np, shape, v, opts):
    m, k, n = shape
    rng = np.random.default_rng(m + k + n)
    sa, sb = operand_shapes(m, k, n, v)
    a = rng.standard_normal(sa, dtype=np.float32)
    b = rng.standard_normal(sb, dtype=np.float32)
    av = a.T if v[0] == "T" else a
    bv = b.T if v[1] == "T" else b
    r = measure(lambda: av @ bv, *opts)
    r["gflops"] = 2.0 * m * k * n / (r["ms"] * 1e6)
    return r


def numpy_blas(np) -> str:
    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name', '?')} {blas.get('version', '')}".strip()
    except Exception:  # noqa: BLE001
        return "?"


# ---- main -----------------------------------------------------------------------------------------------------------


def run_section(out: dict, key: str, label: str, fn, emit):
    try:
        out[key] = fn()
        r = out[key]
        progress(f"{label}: " + (f"{r['gflops']:.2f} GFLOP/s" if "gflops" in r and "loss0" not in r else f"{r['ms']:.1f} ms"))
    except Exception as e:  # noqa: BLE001 - a failing measurement is a row, not an abort
        out[key] = {"error": err_text(e)}
        progress(f"{label}: failed: {out[key]['error']}")
    emit()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print the results as JSON lines on stdout (the last is final)")
    ap.add_argument("--quick", action="store_true", help="fewer runs, skip 2048^3")
    ap.add_argument("--budget", type=float, default=None, help="seconds per measurement after warm-up")
    ap.add_argument("--max-runs", type=int, default=None, help="timed runs per measurement at most")
    ap.add_argument("--min-time", type=float, default=None, help="keep timing past --max-runs until this many seconds")
    ap.add_argument("--cold-limit", type=float, default=None, help="report a warm-up this slow (s) as the only run")
    ap.add_argument("--no-torch", action="store_true")
    ap.add_argument("--no-numpy", action="store_true")
    ap.add_argument("--no-transposed", action="store_true", help="skip the NT/TN/TT matmuls")
    ap.add_argument("--no-mlp", action="store_true", help="skip the MLP training step")
    ap.add_argument("--no-block", action="store_true", help="skip the transformer block")
    args = ap.parse_args()
    budget = args.budget if args.budget is not None else (1.0 if args.quick else 3.0)
    max_runs = args.max_runs if args.max_runs is not None else (5 if args.quick else 20)
    min_time = args.min_time if args.min_time is not None else (0.25 if args.quick else 0.5)
    opts = (budget, max_runs, args.cold_limit, min_time)
    shapes = [s for s in MATMUL_SHAPES if not (args.quick and s in QUICK_SKIP)]
    threads = os.cpu_count() or 1

    result: dict = {
        "available": False,
        "python": platform.python_version(),
        "executable": sys.executable,
        "threads": threads,
        "budget_s": budget,
        "max_runs": max_runs,
        "min_time_s": min_time,
        "torch": {"available": False, "error": "skipped (--no-torch)"},
        "numpy": {"available": False, "error": "skipped (--no-numpy)"},
    }

    def emit():
        if args.json:
            print(json.dumps(result), flush=True)

    np = None
    try:
        import numpy as np
    except ImportError as e:
        if not args.no_numpy:
            result["numpy"] = {"available": False, "error": f"numpy: {e}"}

    if not args.no_torch:
        try:
            import torch

            torch.set_num_threads(threads)
            cfg = torch.__config__.show()
            blas = "MKL" if "BLAS_INFO=mkl" in cfg else "OpenBLAS" if "BLAS_INFO=open" in cfg else "?"
            tr = {"available": True, "version": torch.__version__, "name": f"torch {torch.__version__}", "threads": torch.get_num_threads(), "blas": blas}
            result["torch"] = tr
            result["available"] = True
            emit()
            tr["matmul"] = {}
            for s in shapes:
                run_section(tr["matmul"], shape_key(*s), f"torch matmul {shape_key(*s)}", lambda s=s: bench_matmul_torch(torch, s, "NN", opts), emit)
            if not args.no_transposed:
                tr["transposed"] = {}
                for s in TRANSPOSE_SHAPES:
                    tr["transposed"][shape_key(*s)] = {}
                    for v in T_VARIANTS:
                        run_section(tr["transposed"][shape_key(*s)], v, f"torch matmul {shape_key(*s)} {v}", lambda s=s, v=v: bench_matmul_torch(torch, s, v, opts), emit)
            if not args.no_mlp:
                if np is None:
                    tr["mlp"] = {"error": "needs numpy (for the shared input data)"}
                else:
                    run_section(tr, "mlp", "torch mlp step", lambda: bench_mlp_torch(torch, np, opts), emit)
            if not args.no_block:
                run_section(tr, "block", "torch block fwd+bwd", lambda: bench_block_torch(torch, opts), emit)
        except ImportError as e:
            result["torch"] = {"available": False, "error": f"torch: {e}"}
            emit()

    if not args.no_numpy and np is not None:
        nr = {"available": True, "version": np.__version__, "name": f"numpy {np.__version__}", "blas": numpy_blas(np), "matmul": {}}
        result["numpy"] = nr
        result["available"] = True
        for s in shapes:
            run_section(nr["matmul"], shape_key(*s), f"numpy matmul {shape_key(*s)}", lambda s=s: bench_matmul_numpy(np, s, "NN", opts), emit)
        if not args.no_transposed:
            nr["transposed"] = {}
            for s in TRANSPOSE_SHAPES:
                nr["transposed"][shape_key(*s)] = {}
                for v in T_VARIANTS:
                    run_section(nr["transposed"][shape_key(*s)], v, f"numpy matmul {shape_key(*s)} {v}", lambda s=s, v=v: bench_matmul_numpy(np, s, v, opts), emit)

    emit()
    if args.json:
        return 0
    if not result["available"]:
        print("peer unavailable: " + "; ".join(r.get("error", "") for r in (result["torch"], result["numpy"])))
        return 0
    for lib in ("torch", "numpy"):
        r = result[lib]
        if not r.get("available"):
            print(f"{lib}: unavailable ({r.get('error')})")
            continue
        print(f"{r['name']} ({r.get('blas', '?')}), {threads} threads, python {result['python']}")
        for key, m in r.get("matmul", {}).items():
            print(f"  matmul {key:>16}     " + (f"{m['gflops']:9.2f} GFLOP/s  {m['ms']:9.2f} ms" if "gflops" in m else m["error"]))
        for key, vs in r.get("transposed", {}).items():
            for v, m in vs.items():
                print(f"  matmul {key:>16} {v}  " + (f"{m['gflops']:9.2f} GFLOP/s  {m['ms']:9.2f} ms" if "gflops" in m else m["error"]))
        for sec in ("mlp", "block"):
            m = r.get(sec)
            if m is not None:
                print(f"  {sec:<24} " + (f"{m['ms']:9.2f} ms  loss0 {m['loss0']:.5f}" if "ms" in m else m["error"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())

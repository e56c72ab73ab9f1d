#!/usr/bin/env python3
"""Golden values for @bdvax/core-tensor, computed with PyTorch (CPU, float64).

    python tests/golden/gen_core_tensor_golden.py            # (re)write both fixtures
    python tests/golden/gen_core_tensor_golden.py --out F    # write the op fixture somewhere else
    python tests/golden/gen_core_tensor_golden.py --optim-out F   # ... and the optimizer fixture
    python tests/golden/gen_core_tensor_golden.py --check    # exit 1 if either committed fixture drifted

Every case's inputs are drawn from a numpy RNG seeded by the case's name (so adding a case never changes
another) as float32 values, which are exact in float64. The op is then evaluated in torch float64, forward
and backward (`torch.autograd.grad(out, leaves, cotangent)`), and results are stored as float64 numbers.

Fixture schema (one case per line, keys sorted, no timestamps):

    { "cases": [ { "name", "op", "attrs",
                   "inputs":   [ {"shape", "dtype", "data", "requires_grad", "view"} ],
                   "output":   {"shape", "dtype", "data"},
                   "cotangent": null | {"shape", "data"},
                   "grads":    [ null | {"shape", "data"} ] } ],      # w.r.t. each input's stored BASE tensor
      "generator": "tests/golden/gen_core_tensor_golden.py", "torch": "2.13.0" }

`view` is null, {"permute": perm} (the op receives base.permute(perm)) or {"slice": {"starts", "ends"}}
(the op receives base[s0:e0, s1:e1, ...]). dtype is "float32" | "int32" | "bool" (bool data is 0/1).

A second fixture, optim_golden.json (same file layout: one case per line, same --check), holds optimizer
trajectories: torch.optim.AdamW / torch.optim.SGD (for-loop implementation, float64) replayed for a few steps
on float32-representable parameters and gradients, and torch.nn.utils.clip_grad_norm_. Its cases are

    { "name", "kind": "adamw" | "sgd",
      "options": {"lr", "betas", "eps", "weight_decay"} (adamw) | {"lr", "momentum", "weight_decay"} (sgd),
      "lrs": null | [lr per step]          # non-null: step k runs with lr = lrs[k] (param_group override)
      "params": [ {"shape", "data"} ],     # initial values
      "grads":  [ [ {"shape", "data"} per parameter ] per step ],
      "trajectory": [ [ {"shape", "data"} per parameter ] per step ] }   # parameters AFTER each step
    { "name", "kind": "clip_grad_norm", "max_norm", "grads": [ {"shape", "data"} ],
      "total_norm": number (before clipping), "clipped": [ {"shape", "data"} ] }
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F

GENERATOR = "tests/golden/gen_core_tensor_golden.py"
TORCH_PIN = "2.13.0"
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "packages", "core-tensor", "test", "fixtures", "golden.json")
DEFAULT_OPTIM_OUT = os.path.join(REPO_ROOT, "packages", "core-tensor", "test", "fixtures", "optim_golden.json")
ABS_TOL = 1e-12

F64 = torch.float64


# --------------------------------------------------------------------------------------------------------
# inputs
# --------------------------------------------------------------------------------------------------------


@dataclass
class Inp:
    data: np.ndarray  # the stored BASE tensor (float32 / int32 / bool)
    requires_grad: bool = True
    view: dict | None = None

    @property
    def dtype(self) -> str:
        if self.data.dtype == np.float32:
            return "float32"
        if self.data.dtype == np.int32:
            return "int32"
        if self.data.dtype == np.bool_:
            return "bool"
        raise TypeError(f"unsupported input dtype {self.data.dtype}")


def unif(rng: np.random.Generator, shape, lo=-2.0, hi=2.0) -> np.ndarray:
    return rng.uniform(lo, hi, size=tuple(shape)).astype(np.float32)


def pos(rng: np.random.Generator, shape) -> np.ndarray:
    """Positive domain for log / sqrt / reciprocal / divisors."""
    return unif(rng, shape, 0.5, 2.0)


def normal(rng: np.random.Generator, shape, scale=1.0) -> np.ndarray:
    return (rng.standard_normal(size=tuple(shape)) * scale).astype(np.float32)


def ints(rng: np.random.Generator, shape, lo: int, hi: int) -> np.ndarray:
    """Integers in [lo, hi)."""
    return rng.integers(lo, hi, size=tuple(shape)).astype(np.int32)


def f(rng, shape, **kw) -> Inp:
    return Inp(unif(rng, shape), **kw)


def permuted(rng, base_shape, perm, gen=unif) -> Inp:
    return Inp(gen(rng, base_shape), view={"permute": list(perm)})


def sliced(rng, base_shape, starts, ends, gen=unif) -> Inp:
    return Inp(gen(rng, base_shape), view={"slice": {"starts": list(starts), "ends": list(ends)}})


def with_equal(rng, a: np.ndarray, shape, frac=0.4) -> np.ndarray:
    """Random values of `shape` where some entries equal an element of `a` they are compared with."""
    b = unif(rng, shape)
    full = np.broadcast_shapes(a.shape, b.shape)
    for p in np.ndindex(*b.shape) if b.ndim else [()]:
        if rng.random() >= frac:
            continue
        # a full broadcast index consistent with p, random along b's broadcast dims
        lead = len(full) - b.ndim
        idx = [int(rng.integers(0, n)) for n in full[:lead]]
        idx += [p[d] if b.shape[d] != 1 else int(rng.integers(0, full[lead + d])) for d in range(b.ndim)]
        la = len(full) - a.ndim
        b[p] = a[tuple(0 if a.shape[d] == 1 else idx[la + d] for d in range(a.ndim))]
    return b


def no_ties(x: np.ndarray, axis: int | None = None) -> bool:
    if axis is None:
        return len(np.unique(x)) == x.size
    moved = np.moveaxis(x, axis, -1).reshape(-1, x.shape[axis])
    return all(len(np.unique(r)) == r.size for r in moved)


# --------------------------------------------------------------------------------------------------------
# reference ops (torch, float64)
# --------------------------------------------------------------------------------------------------------


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def attention_ref(q, k, v, causal: bool, window: int, scale: float) -> torch.Tensor:
    _, hq, t, _ = q.shape
    _, hkv, tk, _ = k.shape
    assert hq % hkv == 0
    rep = hq // hkv
    k = k.repeat_interleave(rep, dim=1)  # head h uses kv head h // rep
    v = v.repeat_interleave(rep, dim=1)
    s = (q @ k.transpose(-1, -2)) * scale
    off = tk - t
    i = torch.arange(t).unsqueeze(1)
    j = torch.arange(tk).unsqueeze(0)
    allowed = torch.ones(t, tk, dtype=torch.bool)
    if causal:
        allowed &= j <= i + off
    if window:
        allowed &= j > i + off - window
    assert bool(allowed.any(dim=1).all()), "a query row sees no key"
    s = s.masked_fill(~allowed, float("-inf"))
    return torch.softmax(s, dim=-1) @ v


def pad_ref(x, before, after, value):
    spec: list[int] = []
    for b, a in zip(reversed(before), reversed(after)):
        spec += [b, a]
    return F.pad(x, spec, mode="constant", value=value)


def cast_ref(x, dtype):
    if dtype == "float32":
        return x.to(F64).clone()
    if dtype == "int32":
        return x.to(torch.int32)  # float → int truncates toward zero; bool → 0/1
    if dtype == "bool":
        return x != 0
    raise ValueError(dtype)


OPS: dict[str, Callable[..., torch.Tensor]] = {
    "neg": lambda x: torch.neg(x),
    "reciprocal": lambda x: torch.reciprocal(x),
    "exp": lambda x: torch.exp(x),
    "log": lambda x: torch.log(x),
    "sqrt": lambda x: torch.sqrt(x),
    "sin": lambda x: torch.sin(x),
    "cos": lambda x: torch.cos(x),
    "add": lambda a, b: a + b,
    "sub": lambda a, b: a - b,
    "mul": lambda a, b: a * b,
    "div": lambda a, b: a / b,
    "maximum": lambda a, b: torch.maximum(a, b),
    "lt": lambda a, b: a < b,
    "eq": lambda a, b: a == b,
    "where": lambda c, a, b: torch.where(c, a, b),
    "sum": lambda x, axis, keepdim: x.sum(dim=axis, keepdim=keepdim),
    "max": lambda x, axis, keepdim: x.amax(dim=axis, keepdim=keepdim),
    "mean": lambda x, axis, keepdim: x.mean(dim=axis, keepdim=keepdim),
    "reshape": lambda x, shape: x.reshape(shape),
    "permute": lambda x, perm: x.permute(*perm),
    "expand": lambda x, shape: x.expand(*shape),
    "slice": lambda x, starts, ends: x[tuple(slice(s, e) for s, e in zip(starts, ends))],
    "pad": lambda x, before, after, value: pad_ref(x, before, after, value),
    "contiguous": lambda x: x.contiguous(),
    "matmul": lambda a, b: torch.matmul(a, b),
    "gather": lambda table, index: table[index.long()],
    "scatter_add": lambda src, index, num_rows: torch.zeros(num_rows, src.shape[1], dtype=F64).index_add(0, index.long(), src),
    "rms_norm": lambda x, w, eps: x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w,
    "rope": lambda x, cos, sin: x * cos.unsqueeze(1) + rotate_half(x) * sin.unsqueeze(1),
    "silu_mul": lambda gate, up: F.silu(gate) * up,
    "softmax": lambda x: torch.softmax(x, dim=-1),
    "log_softmax": lambda x: torch.log_softmax(x, dim=-1),
    "softmax_cross_entropy": lambda logits, target, ignore_index: F.cross_entropy(
        logits, target.long(), ignore_index=ignore_index, reduction="mean"
    ),
    "attention": lambda q, k, v, causal, window, scale: attention_ref(q, k, v, causal, window, scale),
    "cast": lambda x, dtype: cast_ref(x, dtype),
}


# --------------------------------------------------------------------------------------------------------
# cases
# --------------------------------------------------------------------------------------------------------


@dataclass
class Spec:
    name: str
    op: str
    attrs: dict
    make: Callable[[np.random.Generator], list[Inp]]
    differentiable: bool


SPECS: list[Spec] = []


def case(name: str, op: str, make: Callable[[np.random.Generator], list[Inp]], attrs: dict | None = None,
         differentiable: bool = True) -> None:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    assert op in OPS, op
    SPECS.append(Spec(name, op, attrs or {}, make, differentiable))


def rope_tables(batch_positions: list[list[int]], dh: int, theta: float) -> tuple[np.ndarray, np.ndarray]:
    """cos/sin [Bc, T, Dh] exactly as HF LlamaRotaryEmbedding (default rope), rounded to float32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, dh, 2, dtype=torch.int64).to(F64) / dh))
    pos_ids = torch.tensor(batch_positions, dtype=F64)  # [Bc, T]
    freqs = pos_ids[:, :, None] * inv_freq[None, None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().numpy().astype(np.float32), emb.sin().numpy().astype(np.float32)


def define_cases() -> None:
    # ---- unary ------------------------------------------------------------------------------------
    case("neg_2x3", "neg", lambda r: [f(r, [2, 3])])
    case("neg_scalar", "neg", lambda r: [f(r, [])])
    case("reciprocal_2x3", "reciprocal", lambda r: [Inp(pos(r, [2, 3]))])
    case("exp_2x3", "exp", lambda r: [f(r, [2, 3])])
    case("exp_permuted_view", "exp", lambda r: [permuted(r, [3, 4], [1, 0])])
    case("log_3x4", "log", lambda r: [Inp(pos(r, [3, 4]))])
    case("log_sliced_view", "log", lambda r: [sliced(r, [4, 5], [1, 1], [3, 5], gen=pos)])
    case("sqrt_2x3", "sqrt", lambda r: [Inp(pos(r, [2, 3]))])
    case("sin_2x3x2", "sin", lambda r: [Inp(unif(r, [2, 3, 2], -4, 4))])
    case("cos_2x3", "cos", lambda r: [Inp(unif(r, [2, 3], -4, 4))])

    # ---- binary -----------------------------------------------------------------------------------
    case("add_same_shape", "add", lambda r: [f(r, [2, 3]), f(r, [2, 3])])
    case("add_broadcast_rank_diff", "add", lambda r: [f(r, [2, 3]), f(r, [3])])
    case("add_broadcast_size1_dims", "add", lambda r: [f(r, [2, 1, 3]), f(r, [4, 1])])
    case("add_scalar_tensor", "add", lambda r: [f(r, []), f(r, [2, 3])])
    case("add_empty_dim", "add", lambda r: [f(r, [0, 3]), f(r, [3])])
    case("add_permuted_view", "add", lambda r: [permuted(r, [3, 2], [1, 0]), f(r, [2, 3])])
    case("add_both_permuted_broadcast", "add", lambda r: [permuted(r, [4, 2, 3], [1, 2, 0]), permuted(r, [4, 1], [1, 0])])
    case("sub_broadcast_outer", "sub", lambda r: [f(r, [3, 1]), f(r, [1, 4])])
    case("sub_scalars", "sub", lambda r: [f(r, []), f(r, [])])
    case("mul_broadcast_3d", "mul", lambda r: [f(r, [2, 3, 1]), f(r, [3, 4])])
    case("mul_sliced_view", "mul", lambda r: [sliced(r, [4, 5], [1, 2], [3, 5]), f(r, [1, 3])])
    case("div_broadcast", "div", lambda r: [f(r, [2, 3]), Inp(pos(r, [3]))])
    case("div_by_scalar", "div", lambda r: [f(r, [2, 3]), Inp(pos(r, []))])
    case("maximum_same_shape", "maximum", lambda r: [f(r, [3, 4]), f(r, [3, 4])])
    case("maximum_broadcast", "maximum", lambda r: [f(r, [2, 3]), f(r, [2, 1])])

    def lt_inputs(r, sa, sb):
        a = unif(r, sa)
        return [Inp(a, requires_grad=False), Inp(with_equal(r, a, sb), requires_grad=False)]

    case("lt_broadcast", "lt", lambda r: lt_inputs(r, [3, 4], [4]), differentiable=False)
    case("eq_same_shape", "eq", lambda r: lt_inputs(r, [2, 3], [2, 3]), differentiable=False)
    case("eq_broadcast", "eq", lambda r: lt_inputs(r, [2, 1, 3], [4, 1]), differentiable=False)
    case("eq_int32", "eq", lambda r: [Inp(ints(r, [2, 4], 0, 3), requires_grad=False),
                                      Inp(ints(r, [4], 0, 3), requires_grad=False)], differentiable=False)

    # ---- where ------------------------------------------------------------------------------------
    def cond(r, shape):
        c = r.random(tuple(shape)) < 0.5
        c.flat[0], c.flat[-1] = True, False  # both branches taken
        return Inp(c, requires_grad=False)

    case("where_same_shape", "where", lambda r: [cond(r, [2, 3]), f(r, [2, 3]), f(r, [2, 3])])
    case("where_broadcast_all", "where", lambda r: [cond(r, [2, 1]), f(r, [1, 3]), f(r, [])])
    case("where_broadcast_rank_diff", "where", lambda r: [cond(r, [3]), f(r, [2, 3]), f(r, [2, 1])])

    # ---- reductions -------------------------------------------------------------------------------
    red = lambda axis, keepdim: {"axis": axis, "keepdim": keepdim}  # noqa: E731
    case("sum_axis0", "sum", lambda r: [f(r, [2, 3])], red(0, False))
    case("sum_axis1_keepdim", "sum", lambda r: [f(r, [2, 3])], red(1, True))
    case("sum_negative_axis_3d", "sum", lambda r: [f(r, [2, 3, 4])], red(-1, False))
    case("sum_permuted_view", "sum", lambda r: [permuted(r, [3, 4, 2], [2, 0, 1])], red(1, False))
    case("sum_sliced_view", "sum", lambda r: [sliced(r, [4, 5], [1, 0], [4, 3])], red(-2, False))
    case("sum_1d_to_scalar", "sum", lambda r: [f(r, [5])], red(0, False))
    case("sum_empty_axis_gives_zeros", "sum", lambda r: [f(r, [0, 3])], red(0, False))
    case("max_axis1", "max", lambda r: [f(r, [3, 4])], red(1, False))
    case("max_axis0_keepdim", "max", lambda r: [f(r, [4, 3])], red(0, True))
    case("max_negative_axis_3d", "max", lambda r: [f(r, [2, 3, 4])], red(-2, False))
    case("mean_axis0", "mean", lambda r: [f(r, [3, 4])], red(0, False))
    case("mean_negative_axis_keepdim_3d", "mean", lambda r: [f(r, [2, 3, 4])], red(-1, True))

    # ---- shape ops --------------------------------------------------------------------------------
    case("reshape_2x6_to_3x2x2", "reshape", lambda r: [f(r, [2, 6])], {"shape": [3, 2, 2]})
    case("reshape_permuted_view", "reshape", lambda r: [permuted(r, [3, 4], [1, 0])], {"shape": [2, 6]})
    case("reshape_scalar_to_1x1", "reshape", lambda r: [f(r, [])], {"shape": [1, 1]})
    case("reshape_1x1_to_scalar", "reshape", lambda r: [f(r, [1, 1])], {"shape": []})
    case("permute_2d", "permute", lambda r: [f(r, [2, 3])], {"perm": [1, 0]})
    case("permute_3d", "permute", lambda r: [f(r, [2, 3, 4])], {"perm": [2, 0, 1]})
    case("expand_size1_dim", "expand", lambda r: [f(r, [3, 1])], {"shape": [3, 4]})
    case("expand_new_leading_dims", "expand", lambda r: [f(r, [3, 1])], {"shape": [2, 3, 4]})
    case("slice_2d", "slice", lambda r: [f(r, [4, 5])], {"starts": [1, 0], "ends": [3, 5]})
    case("slice_3d", "slice", lambda r: [f(r, [3, 4, 5])], {"starts": [0, 1, 2], "ends": [2, 4, 4]})
    case("slice_to_empty", "slice", lambda r: [f(r, [4, 3])], {"starts": [2, 0], "ends": [2, 3]})
    case("pad_2d_zero", "pad", lambda r: [f(r, [2, 3])], {"before": [1, 0], "after": [2, 1], "value": 0.0})
    case("pad_3d_value", "pad", lambda r: [f(r, [2, 2, 3])], {"before": [0, 1, 2], "after": [1, 0, 0], "value": -1.5})
    case("contiguous_permuted_view", "contiguous", lambda r: [permuted(r, [2, 3, 4], [2, 0, 1])])

    # ---- matmul -----------------------------------------------------------------------------------
    case("matmul_2d", "matmul", lambda r: [f(r, [3, 4]), f(r, [4, 5])])
    case("matmul_batched_3d", "matmul", lambda r: [f(r, [2, 3, 4]), f(r, [2, 4, 5])])
    case("matmul_broadcast_batch", "matmul", lambda r: [f(r, [2, 1, 3, 4]), f(r, [5, 4, 6])])
    case("matmul_rank_diff_2d_rhs", "matmul", lambda r: [f(r, [2, 3, 4]), f(r, [4, 5])])
    case("matmul_transposed_rhs_view", "matmul", lambda r: [f(r, [3, 4]), permuted(r, [5, 4], [1, 0])])
    case("matmul_transposed_lhs_view_batched", "matmul", lambda r: [permuted(r, [2, 4, 3], [0, 2, 1]), f(r, [2, 4, 2])])
    case("matmul_k0", "matmul", lambda r: [f(r, [2, 0]), f(r, [0, 3])])

    # ---- gather / scatter_add ---------------------------------------------------------------------
    case("gather_1d_index_repeats", "gather",
         lambda r: [f(r, [6, 4]), Inp(np.array([2, 0, 5, 2, 2], dtype=np.int32), requires_grad=False)])
    case("gather_2d_index", "gather",
         lambda r: [f(r, [5, 3]), Inp(np.array([[4, 1, 1], [0, 4, 3]], dtype=np.int32), requires_grad=False)])
    case("scatter_add_repeats", "scatter_add",
         lambda r: [f(r, [5, 3]), Inp(np.array([1, 3, 1, 0, 1], dtype=np.int32), requires_grad=False)],
         {"num_rows": 5})
    case("scatter_add_empty_rows", "scatter_add",
         lambda r: [f(r, [4, 2]), Inp(np.array([6, 2, 6, 6], dtype=np.int32), requires_grad=False)],
         {"num_rows": 7})

    # ---- LLM ops ----------------------------------------------------------------------------------
    case("rms_norm_3d", "rms_norm", lambda r: [f(r, [2, 3, 8]), Inp(unif(r, [8], 0.5, 1.5))], {"eps": 1e-6})
    case("rms_norm_2d", "rms_norm", lambda r: [Inp(normal(r, [4, 6], 3.0)), Inp(unif(r, [6], -1.0, 2.0))], {"eps": 1e-6})

    def rope_inputs(r, b, h, t, dh, positions, theta):
        cos, sin = rope_tables(positions, dh, theta)
        return [f(r, [b, h, t, dh]), Inp(cos, requires_grad=False), Inp(sin, requires_grad=False)]

    case("rope_hf_tables_shared_batch", "rope", lambda r: rope_inputs(r, 2, 2, 3, 4, [[0, 1, 2]], 10000.0))
    case("rope_hf_tables_per_batch", "rope",
         lambda r: rope_inputs(r, 2, 1, 4, 8, [[0, 1, 2, 3], [5, 6, 7, 8]], 500000.0))
    case("rope_random_tables", "rope",
         lambda r: [f(r, [1, 2, 3, 6]), Inp(unif(r, [1, 3, 6], -1, 1), requires_grad=False),
                    Inp(unif(r, [1, 3, 6], -1, 1), requires_grad=False)])
    case("silu_mul_2d", "silu_mul", lambda r: [Inp(unif(r, [3, 4], -4, 4)), f(r, [3, 4])])
    case("softmax_2d", "softmax", lambda r: [Inp(normal(r, [3, 5], 2.0))])
    case("softmax_3d_large_logits", "softmax", lambda r: [Inp(unif(r, [2, 2, 4], 40, 60))])
    case("log_softmax_2d", "log_softmax", lambda r: [Inp(normal(r, [3, 5], 2.0))])
    case("log_softmax_1d_large_logits", "log_softmax", lambda r: [Inp(unif(r, [6], -50, 50))])
    case("softmax_cross_entropy_ignore_one", "softmax_cross_entropy",
         lambda r: [Inp(normal(r, [5, 7], 2.0)), Inp(np.array([3, -100, 0, 6, 3], dtype=np.int32), requires_grad=False)],
         {"ignore_index": -100})
    case("softmax_cross_entropy_ignore_many", "softmax_cross_entropy",
         lambda r: [Inp(normal(r, [4, 3])), Inp(np.array([-100, 2, -100, 1], dtype=np.int32), requires_grad=False)],
         {"ignore_index": -100})
    case("softmax_cross_entropy_no_ignored", "softmax_cross_entropy",
         lambda r: [Inp(normal(r, [3, 4])), Inp(np.array([1, 0, 3], dtype=np.int32), requires_grad=False)],
         {"ignore_index": -100})

    def attn(b, hq, hkv, t, tk, d):
        return lambda r: [Inp(normal(r, [b, hq, t, d])), Inp(normal(r, [b, hkv, tk, d])), Inp(normal(r, [b, hkv, tk, d]))]

    def att(causal, window, d, scale=None):
        s = float(np.float32(1.0 / math.sqrt(d))) if scale is None else scale
        return {"causal": causal, "window": window, "scale": s}

    case("attention_causal_mha", "attention", attn(2, 2, 2, 4, 4, 4), att(True, 0, 4))
    case("attention_causal_gqa", "attention", attn(1, 4, 2, 3, 3, 4), att(True, 0, 4))
    case("attention_causal_sliding_window", "attention", attn(1, 2, 1, 5, 5, 4), att(True, 2, 4))
    case("attention_non_causal", "attention", attn(1, 2, 2, 3, 4, 8), att(False, 0, 8))
    case("attention_kv_cache_tk_gt_t", "attention", attn(1, 2, 1, 2, 5, 4), att(True, 0, 4, scale=0.25))
    case("attention_kv_cache_window", "attention", attn(1, 2, 2, 2, 6, 4), att(True, 3, 4))

    # ---- cast -------------------------------------------------------------------------------------
    def trunc_vals(r):
        x = unif(r, [2, 4], -4, 4)
        x.flat[:4] = [2.75, -2.75, -0.5, 3.0]  # truncation toward zero, exact integers
        return [Inp(x, requires_grad=False)]

    def bool_vals(r):
        x = unif(r, [2, 3])
        x.flat[1], x.flat[4] = 0.0, -0.0
        return [Inp(x, requires_grad=False)]

    case("cast_float_to_int32", "cast", trunc_vals, {"dtype": "int32"}, differentiable=False)
    case("cast_float_to_bool", "cast", bool_vals, {"dtype": "bool"}, differentiable=False)
    case("cast_float_to_float32", "cast", lambda r: [f(r, [2, 3])], {"dtype": "float32"})
    case("cast_int32_to_float32", "cast", lambda r: [Inp(ints(r, [2, 3], -5, 6), requires_grad=False)],
         {"dtype": "float32"}, differentiable=False)
    case("cast_bool_to_float32", "cast", lambda r: [Inp(r.random((4,)) < 0.5, requires_grad=False)],
         {"dtype": "float32"}, differentiable=False)


# --------------------------------------------------------------------------------------------------------
# evaluation and serialisation
# --------------------------------------------------------------------------------------------------------


def to_torch(inp: Inp) -> torch.Tensor:
    if inp.dtype == "float32":
        return torch.from_numpy(inp.data.astype(np.float64)).requires_grad_(inp.requires_grad)
    if inp.dtype == "int32":
        return torch.from_numpy(inp.data.astype(np.int64))
    return torch.from_numpy(inp.data.copy())


def apply_view(t: torch.Tensor, view: dict | None) -> torch.Tensor:
    if view is None:
        return t
    if "permute" in view:
        return t.permute(*view["permute"])
    sl = view["slice"]
    assert len(sl["starts"]) == len(sl["ends"]) == t.dim()
    return t[tuple(slice(s, e) for s, e in zip(sl["starts"], sl["ends"]))]


def tensor_dtype(t: torch.Tensor) -> str:
    if t.dtype == torch.bool:
        return "bool"
    if t.dtype.is_floating_point:
        return "float32"
    return "int32"


def flat(t: torch.Tensor | np.ndarray) -> list:
    a = t.detach().contiguous().numpy() if isinstance(t, torch.Tensor) else np.ascontiguousarray(t)
    if a.dtype == np.bool_:
        return [int(v) for v in a.reshape(-1)]
    if np.issubdtype(a.dtype, np.integer):
        return [int(v) for v in a.reshape(-1)]
    a = a.astype(np.float64).reshape(-1)
    assert np.all(np.isfinite(a)), "non-finite value in fixture"
    return [float(v) for v in a]


def check_no_ties(spec: Spec, inputs: list[Inp], views: list[torch.Tensor]) -> None:
    if spec.op == "maximum":
        a, b = (v.detach().numpy() for v in views)
        a, b = np.broadcast_arrays(a, b)
        assert not np.any(a == b), f"{spec.name}: tie in maximum"
    if spec.op == "max":
        assert no_ties(views[0].detach().numpy(), spec.attrs["axis"]), f"{spec.name}: tie in max"


def build_case(spec: Spec) -> dict:
    rng = np.random.default_rng(zlib.crc32(spec.name.encode()))
    inputs = spec.make(rng)
    if not spec.differentiable:
        assert not any(i.requires_grad for i in inputs), f"{spec.name}: non-differentiable op with grad input"
    for i in inputs:
        assert i.dtype == "float32" or not i.requires_grad, f"{spec.name}: non-float input requires grad"
    leaves = [to_torch(i) for i in inputs]
    views = [apply_view(t, i.view) for t, i in zip(leaves, inputs)]
    check_no_ties(spec, inputs, views)
    out = OPS[spec.op](*views, **spec.attrs)
    wanted = [t for t in leaves if t.requires_grad]
    cotangent = None
    grads: list[Any] = [None] * len(inputs)
    if spec.differentiable and wanted:
        assert out.dtype.is_floating_point and out.requires_grad, spec.name
        cot = torch.from_numpy(unif(rng, list(out.shape)).astype(np.float64))
        gs = torch.autograd.grad(out, wanted, cot, allow_unused=True)
        it = iter(gs)
        for k, t in enumerate(leaves):
            if t.requires_grad:
                g = next(it)
                g = torch.zeros_like(t) if g is None else g
                grads[k] = {"shape": list(g.shape), "data": flat(g)}
        cotangent = {"shape": list(cot.shape), "data": flat(cot)}
    return {
        "name": spec.name,
        "op": spec.op,
        "attrs": spec.attrs,
        "inputs": [
            {"shape": list(i.data.shape), "dtype": i.dtype, "data": flat(i.data),
             "requires_grad": i.requires_grad, "view": i.view}
            for i in inputs
        ],
        "output": {"shape": list(out.shape), "dtype": tensor_dtype(out), "data": flat(out)},
        "cotangent": cotangent,
        "grads": grads,
    }


def generate() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)  # fixed reduction order whatever the machine
    torch.use_deterministic_algorithms(True)
    SPECS.clear()
    define_cases()
    names = [s.name for s in SPECS]
    assert len(names) == len(set(names)), "duplicate case names"
    missing = set(OPS) - {s.op for s in SPECS}
    assert not missing, f"ops without a case: {sorted(missing)}"
    return {
        "generator": GENERATOR,
        "torch": torch.__version__.split("+")[0],
        "cases": [build_case(s) for s in SPECS],
    }


def dumps(doc: dict) -> str:
    """Sorted keys; one case per line so that diffs stay readable."""
    dump = lambda v: json.dumps(v, sort_keys=True, separators=(",", ":"), allow_nan=False)  # noqa: E731
    head = {k: v for k, v in doc.items() if k != "cases"}
    assert list(sorted(doc)) == ["cases", "generator", "torch"]
    lines = ['{"cases":[']
    lines += [dump(c) + ("," if k + 1 < len(doc["cases"]) else "") for k, c in enumerate(doc["cases"])]
    lines.append("]," + dump(head)[1:])
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------------------------------------
# optimizer trajectories (optim_golden.json)
# --------------------------------------------------------------------------------------------------------

OPTIM_SHAPES = ([3, 4], [5])  # two parameters: a matrix and a vector
OPTIM_STEPS = 5


def optim_rng(name: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32(("optim:" + name).encode()))


def tensor_json(a: torch.Tensor | np.ndarray) -> dict:
    return {"shape": list(a.shape), "data": flat(a)}


def optim_inputs(name: str) -> tuple[list[np.ndarray], list[list[np.ndarray]]]:
    """Initial parameters and OPTIM_STEPS gradients per parameter, float32 values. The vector parameter gets
    gradients two orders of magnitude smaller, so the second-moment estimates span a wide range."""
    r = optim_rng(name)
    params = [unif(r, s) for s in OPTIM_SHAPES]
    scales = [1.0, 0.01]
    grads = [[(unif(r, s) * np.float32(sc)).astype(np.float32) for s, sc in zip(OPTIM_SHAPES, scales)]
             for _ in range(OPTIM_STEPS)]
    return params, grads


def optim_case(name: str, kind: str, options: dict, lrs: list[float] | None = None) -> dict:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    params0, grads = optim_inputs(name)
    ps = [torch.from_numpy(p.astype(np.float64)).requires_grad_(True) for p in params0]
    if kind == "adamw":
        opt: torch.optim.Optimizer = torch.optim.AdamW(
            ps, lr=options["lr"], betas=tuple(options["betas"]), eps=options["eps"],
            weight_decay=options["weight_decay"], amsgrad=False, maximize=False, foreach=False,
            capturable=False, differentiable=False, fused=False)
    elif kind == "sgd":
        opt = torch.optim.SGD(ps, lr=options["lr"], momentum=options["momentum"], dampening=0.0,
                              weight_decay=options["weight_decay"], nesterov=False, maximize=False, foreach=False,
                              differentiable=False, fused=False)
    else:
        raise ValueError(kind)
    assert lrs is None or len(lrs) == OPTIM_STEPS
    trajectory = []
    for k in range(OPTIM_STEPS):
        if lrs is not None:
            for group in opt.param_groups:
                group["lr"] = lrs[k]
        for p, g in zip(ps, grads[k]):
            p.grad = torch.from_numpy(g.astype(np.float64))
        opt.step()
        trajectory.append([tensor_json(p.detach()) for p in ps])
    return {
        "name": name,
        "kind": kind,
        "options": options,
        "lrs": lrs,
        "params": [tensor_json(p) for p in params0],
        "grads": [[tensor_json(g) for g in step] for step in grads],
        "trajectory": trajectory,
    }


def clip_case(name: str, max_norm: float, expect_clipped: bool) -> dict:
    assert re.fullmatch(r"[a-z][a-z0-9_]*", name), name
    r = optim_rng(name)
    grads = [unif(r, s) for s in OPTIM_SHAPES]
    ps = [torch.zeros(g.shape, dtype=F64, requires_grad=True) for g in grads]
    for p, g in zip(ps, grads):
        p.grad = torch.from_numpy(g.astype(np.float64))
    total = torch.nn.utils.clip_grad_norm_(ps, max_norm=max_norm, norm_type=2.0, error_if_nonfinite=True, foreach=False)
    total = float(total)
    # keep well away from the clamp's kink so float32 rounding cannot flip the branch
    assert (max_norm < 0.9 * total) if expect_clipped else (max_norm > 1.1 * total), (name, max_norm, total)
    return {
        "name": name,
        "kind": "clip_grad_norm",
        "max_norm": max_norm,
        "grads": [tensor_json(g) for g in grads],
        "total_norm": total,
        "clipped": [tensor_json(p.grad) for p in ps],
    }


def generate_optim() -> dict:
    torch.manual_seed(0)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    adamw = lambda lr, b1, b2, wd: {"lr": lr, "betas": [b1, b2], "eps": 1e-8, "weight_decay": wd}  # noqa: E731
    sgd = lambda lr, momentum, wd: {"lr": lr, "momentum": momentum, "weight_decay": wd}  # noqa: E731
    cases = [
        optim_case("adamw_default_betas_wd_0_01", "adamw", adamw(1e-2, 0.9, 0.999, 0.01)),
        optim_case("adamw_betas_0_8_0_99_wd_0_1", "adamw", adamw(1e-2, 0.8, 0.99, 0.1)),
        # a warmup then decay schedule through step(params, grads, lr); the configured lr is never used
        optim_case("adamw_lr_schedule_override", "adamw", adamw(1e-2, 0.9, 0.999, 0.01),
                   lrs=[2.5e-3, 5e-3, 1e-2, 7.5e-3, 5e-3]),
        optim_case("sgd_momentum_0_9_wd_1e_3", "sgd", sgd(0.1, 0.9, 1e-3)),
        optim_case("sgd_plain", "sgd", sgd(0.05, 0.0, 0.0)),
        clip_case("clip_grad_norm_clips", 1.0, expect_clipped=True),
        clip_case("clip_grad_norm_no_clip", 10.0, expect_clipped=False),
    ]
    names = [c["name"] for c in cases]
    assert len(names) == len(set(names)), "duplicate case names"
    return {"generator": GENERATOR, "torch": torch.__version__.split("+")[0], "cases": cases}


# --------------------------------------------------------------------------------------------------------
# --check
# --------------------------------------------------------------------------------------------------------


def diff_values(a: Any, b: Any, path: str, out: list[str]) -> None:
    """Structural diff; numbers compared with an absolute tolerance. Appends 'path: message' lines."""
    num = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        if a != b:
            out.append(f"{path}: {b!r} (committed) != {a!r} (generated)")
    elif isinstance(a, num) and isinstance(b, num):
        if not (math.isfinite(a) and math.isfinite(b)) or abs(a - b) > ABS_TOL:
            out.append(f"{path}: {b!r} (committed) != {a!r} (generated), |diff| = {abs(a - b):.3g}")
    elif isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            if k not in b:
                out.append(f"{path}.{k}: missing in committed file")
            elif k not in a:
                out.append(f"{path}.{k}: not produced by the generator")
            else:
                diff_values(a[k], b[k], f"{path}.{k}", out)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            out.append(f"{path}: length {len(b)} (committed) != {len(a)} (generated)")
            return
        if a and all(isinstance(x, num) and not isinstance(x, bool) for x in a + b):
            bad = [k for k, (x, y) in enumerate(zip(a, b)) if abs(x - y) > ABS_TOL]
            if bad:
                worst = max(abs(a[k] - b[k]) for k in bad)
                out.append(f"{path}: {len(bad)}/{len(a)} numbers differ (first at [{bad[0]}]: "
                           f"{b[bad[0]]!r} committed vs {a[bad[0]]!r} generated; max |diff| {worst:.3g})")
            return
        for k, (x, y) in enumerate(zip(a, b)):
            diff_values(x, y, f"{path}[{k}]", out)
    elif a != b or type(a) is not type(b):
        out.append(f"{path}: {b!r} (committed) != {a!r} (generated)")


def check(doc: dict, path: str) -> int:
    rel = os.path.relpath(path, REPO_ROOT)
    try:
        with open(path, encoding="utf-8") as fh:
            committed = json.load(fh)
    except FileNotFoundError:
        print(f"golden check: {rel} does not exist; run {GENERATOR}", file=sys.stderr)
        return 1
    problems: list[str] = []
    for k in ("generator", "torch"):
        diff_values(doc.get(k), committed.get(k), k, problems)
    gen_cases = {c["name"]: c for c in doc["cases"]}
    old_cases = {c["name"]: c for c in committed.get("cases", [])}
    for name in gen_cases.keys() - old_cases.keys():
        problems.append(f"case {name}: new (missing in committed file)")
    for name in old_cases.keys() - gen_cases.keys():
        problems.append(f"case {name}: removed (no longer generated)")
    changed = 0
    for name in [c["name"] for c in doc["cases"] if c["name"] in old_cases]:
        before = len(problems)
        diff_values(gen_cases[name], old_cases[name], f"case {name}", problems)
        changed += len(problems) > before
    order_gen = [n for n in gen_cases if n in old_cases]
    order_old = [n for n in old_cases if n in gen_cases]
    if order_gen != order_old:
        problems.append("case order differs")
    if problems:
        print(f"golden check: {rel} is out of date ({len(problems)} difference(s), {changed} case(s) changed, "
              f"abs tol {ABS_TOL:g}):", file=sys.stderr)
        for p in problems[:40]:
            print("  " + p, file=sys.stderr)
        if len(problems) > 40:
            print(f"  ... and {len(problems) - 40} more", file=sys.stderr)
        print(f"regenerate with: python {GENERATOR}", file=sys.stderr)
        return 1
    print(f"golden check: {rel} is up to date ({len(doc['cases'])} cases)")
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT, help="op fixture path (default: %(default)s)")
    ap.add_argument("--optim-out", default=DEFAULT_OPTIM_OUT, help="optimizer fixture path (default: %(default)s)")
    ap.add_argument("--check", action="store_true",
                    help="regenerate in memory and compare with --out and --optim-out; exit 1 on drift")
    args = ap.parse_args(argv)
    if torch.__version__.split("+")[0] != TORCH_PIN:
        print(f"warning: torch {torch.__version__} is not the pinned {TORCH_PIN}", file=sys.stderr)
    docs = [(generate(), args.out), (generate_optim(), args.optim_out)]
    if args.check:
        return max(check(doc, path) for doc, path in docs)
    for doc, path in docs:
        write(doc, path)
    return 0


def write(doc: dict, path: str) -> None:
    text = dumps(doc)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8", newline="\n") as fh:
        fh.write(text)
    os.replace(tmp, path)
    print(f"wrote {os.path.relpath(path, REPO_ROOT)}: {len(doc['cases'])} cases, {len(text.encode())} bytes")


if __name__ == "__main__":
    sys.exit(main())

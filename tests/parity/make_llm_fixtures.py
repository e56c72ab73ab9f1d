#!/usr/bin/env python3
"""Reference fixtures for @bdvax/llm, computed with Hugging Face transformers + peft (CPU).

    python tests/parity/make_llm_fixtures.py             # (re)write packages/llm/test/fixtures/parity/
    python tests/parity/make_llm_fixtures.py --out DIR   # write them somewhere else
    python tests/parity/make_llm_fixtures.py --check     # regenerate into a temp dir, compare, exit 1 on drift

Three tiny random float32 models (see MODELS) are saved with `save_pretrained(safe_serialization=True)`, and for
each one the script records what transformers/peft compute on fixed inputs: logits (torch float32, and the
exact float64 truth), the SFT loss and every parameter's gradient, greedy generation (single prompt and a
left-padded batch), one KV-cache decode step, a PEFT LoRA adapter (models a and c) and three full-parameter
AdamW steps (model a). Layout and the expected.json schema are documented in tests/parity/README.md.

"Exact float64": transformers' float64 model is not pure float64 — RMSNorm, the rotary cos/sin (and inv_freq)
and the eager-attention softmax are computed in float32 and cast back, and the causal-LM loss upcasts logits
with `.float()` (a no-op in f32, a DOWNcast in f64). Inside `exact_f64()` those four places are patched to run in
the input's dtype (same formulas, no float32 round trip) and the f64 loss is computed with the same shift and
normalisation as `ForCausalLMLoss`; the script checks that these agree with the unpatched float32 model.

Weights are drawn from numpy generators seeded by (model, parameter) names, so they do not depend on torch's
RNG. Everything runs with torch.set_num_threads(1) on the CPU.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import sys
import warnings
import tempfile
import zlib
from typing import Any, Iterator

import numpy as np
import torch
import torch.nn.functional as F

import transformers
import peft
import safetensors
from safetensors.torch import load_file, save_file
from transformers import (
    AutoModelForCausalLM,
    GenerationConfig,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
)
from transformers.models.llama import modeling_llama as ML
from transformers.models.mistral import modeling_mistral as MM
from peft import LoraConfig, PeftModel, get_peft_model

GENERATOR = "tests/parity/make_llm_fixtures.py"
SCHEMA = 1
REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
DEFAULT_OUT = os.path.join(REPO_ROOT, "packages", "llm", "test", "fixtures", "parity")
ABS_TOL = 1e-6  # --check: floats
SELF_TOL = 1e-5  # internal consistency (kv cache vs full, merged vs adapter, ...)
F64 = torch.float64
F32 = torch.float32
IGNORE = -100
VERSION_KEYS = {"transformers_version", "peft_version", "versions"}  # --check: warn, don't fail

# --------------------------------------------------------------------------------------------------------
# fixed inputs (shared by all models; vocab 128)
# --------------------------------------------------------------------------------------------------------

INPUT_IDS = [
    [1, 17, 42, 99, 5, 63, 120, 8, 77, 31, 64, 2],
    [1, 88, 3, 0, 54, 54, 101, 12, 0, 127, 45, 70],  # contains 0 = model b's pad_token_id
]
PROMPT_LEN = 4  # labels[:, :4] = -100 (prompt masked)
LABELS = [[IGNORE] * PROMPT_LEN + row[PROMPT_LEN:] for row in INPUT_IDS]
GEN_PROMPT = [1, 23, 45, 67, 89]
GEN_NEW = 32
GEN_BATCH = [[1, 23, 45, 67, 89], [0, 0, 1, 98, 76]]  # left-padded: lengths 5 and 3
GEN_MASK = [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
GEN_PAD = 0
KV_PROMPT = [1, 9, 18, 27, 36, 45, 54]
KV_NEXT = 63

LORA = dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "gate_proj", "down_proj"], lora_dropout=0.0,
            bias="none", task_type="CAUSAL_LM")
SFT = dict(lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, steps=3,
           params=["model.embed_tokens.weight", "model.layers.1.self_attn.q_proj.weight", "model.norm.weight"])

COMMON = dict(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2, num_attention_heads=4,
              rms_norm_eps=1e-6, max_position_embeddings=128, bos_token_id=1, eos_token_id=2,
              attn_implementation="eager")
MODELS: dict[str, dict[str, Any]] = {
    "llama-gqa-untied": dict(
        arch="llama", lora=True, sft=True,
        config=dict(COMMON, num_key_value_heads=2, rope_theta=10000.0, tie_word_embeddings=False, pad_token_id=None)),
    "llama-tied-llama3rope": dict(
        # seed: tied random models tend to echo one token forever under greedy decoding; of the seeds
        # "<name>#1".."<name>#40" this one gives a varied continuation with a top-2 logit margin > 1e-2
        arch="llama", lora=False, sft=False, seed="llama-tied-llama3rope#13",
        # original_max_position_embeddings is 64, not 32: with head_dim 16 and theta 5e5 the wavelengths are
        # 6.3, 32.4, 167, ... so 32 would leave the smoothed (medium) band empty; 64 puts 32.4 in it.
        config=dict(COMMON, num_key_value_heads=4, tie_word_embeddings=True, pad_token_id=0,
                    rope_theta=500000.0,
                    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                  "high_freq_factor": 4.0, "original_max_position_embeddings": 64})),
    "mistral-window": dict(
        arch="mistral", lora=True, sft=False,
        config=dict(COMMON, num_key_value_heads=1, rope_theta=10000.0, sliding_window=5, tie_word_embeddings=False,
                    pad_token_id=None)),
}
INIT_STD = 0.1

# --------------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------------


def rng_for(*names: str) -> np.random.Generator:
    return np.random.default_rng(zlib.crc32("/".join(names).encode()))


def make_model(name: str, spec: dict) -> torch.nn.Module:
    cfg = dict(spec["config"])
    if "rope_scaling" in cfg:  # transformers 5 stores theta inside rope_parameters
        cfg["rope_parameters"] = dict(cfg.pop("rope_scaling"), rope_theta=cfg.pop("rope_theta"))
    else:
        cfg["rope_parameters"] = {"rope_type": "default", "rope_theta": cfg.pop("rope_theta")}
    if spec["arch"] == "llama":
        model = LlamaForCausalLM(LlamaConfig(**cfg))
    else:
        model = MistralForCausalLM(MistralConfig(**cfg))
    with torch.no_grad():
        for pname, p in model.named_parameters():  # tied lm_head is not listed separately
            g = rng_for(name, pname)
            noise = torch.from_numpy(g.standard_normal(tuple(p.shape), dtype=np.float32))
            p.copy_(1.0 + INIT_STD * noise if p.ndim == 1 else INIT_STD * noise)
    return model.eval()


def load(d: str, dtype: torch.dtype) -> torch.nn.Module:
    m = AutoModelForCausalLM.from_pretrained(d, dtype=dtype, attn_implementation="eager")
    assert all(p.dtype == dtype for p in m.parameters())
    return m.eval()


def ids(x: list) -> torch.Tensor:
    return torch.tensor(x, dtype=torch.long)


def sft_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """ForCausalLMLoss without its `.float()`: mean CE over labels[:, 1:] != -100, across the whole batch."""
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v), labels[:, 1:].reshape(-1), ignore_index=IGNORE,
                           reduction="mean")


def maxabs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def require(cond: bool, what: str) -> None:
    if not cond:
        raise AssertionError(f"self-consistency check failed: {what}")


# --------------------------------------------------------------------------------------------------------
# exact float64 (see module docstring)
# --------------------------------------------------------------------------------------------------------


def exact_inv_freq(config) -> torch.Tensor:
    """inv_freq in float64, same formulas as transformers' default / llama3 rope init."""
    rp = config.rope_parameters
    dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    inv = 1.0 / (rp["rope_theta"] ** (torch.arange(0, dim, 2, dtype=F64) / dim))
    if rp["rope_type"] == "default":
        return inv
    assert rp["rope_type"] == "llama3", rp
    factor, lo, hi, old = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"], \
        rp["original_max_position_embeddings"]
    lo_wavelen, hi_wavelen = old / lo, old / hi
    wavelen = 2 * math.pi / inv
    out = torch.where(wavelen > lo_wavelen, inv / factor, inv)
    smooth = (old / wavelen - lo) / (hi - lo)
    smoothed = (1 - smooth) * out / factor + smooth * out
    medium = ~(wavelen < hi_wavelen) * ~(wavelen > lo_wavelen)
    return torch.where(medium, smoothed, out)


def _rms_exact(self, x):
    variance = x.pow(2).mean(-1, keepdim=True)
    return self.weight * (x * torch.rsqrt(variance + self.variance_epsilon))


def _rope_exact(self, x, position_ids):
    assert self.rope_type in ("default", "llama3") and self.attention_scaling == 1.0
    inv = exact_inv_freq(self.config).to(x.device)
    freqs = position_ids[..., None].to(F64) * inv
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos().to(x.dtype), emb.sin().to(x.dtype)


def _make_eager_exact(repeat_kv):
    def eager(module, query, key, value, attention_mask, scaling, dropout=0.0, **kwargs):
        k = repeat_kv(key, module.num_key_value_groups)
        v = repeat_kv(value, module.num_key_value_groups)
        w = torch.matmul(query, k.transpose(2, 3)) * scaling
        if attention_mask is not None:
            w = w + attention_mask
        w = F.softmax(w, dim=-1)  # in the query's dtype (transformers: dtype=torch.float32)
        w = F.dropout(w, p=dropout, training=module.training)
        return torch.matmul(w, v).transpose(1, 2).contiguous(), w
    return eager


@contextlib.contextmanager
def exact_f64() -> Iterator[None]:
    saved = []
    try:
        for mod, pre in ((ML, "Llama"), (MM, "Mistral")):
            norm, rope = getattr(mod, pre + "RMSNorm"), getattr(mod, pre + "RotaryEmbedding")
            saved += [(norm, "forward", norm.forward), (rope, "forward", rope.forward),
                      (mod, "eager_attention_forward", mod.eager_attention_forward)]
            norm.forward = _rms_exact
            rope.forward = _rope_exact
            mod.eager_attention_forward = _make_eager_exact(mod.repeat_kv)
        yield
    finally:
        for obj, attr, val in reversed(saved):
            setattr(obj, attr, val)


# --------------------------------------------------------------------------------------------------------
# greedy decoding by full recomputation (the check on HF's cached generate)
# --------------------------------------------------------------------------------------------------------


@torch.no_grad()
def greedy_recompute(model, prompt: list[int], n: int) -> tuple[list[int], float]:
    seq = list(prompt)
    margin = math.inf
    for _ in range(n):
        logits = model(ids([seq])).logits[0, -1].double()
        top = torch.topk(logits, 2).values
        margin = min(margin, float(top[0] - top[1]))
        seq.append(int(logits.argmax()))
    return seq[len(prompt):], margin


@torch.no_grad()
def hf_generate(model, input_ids: list, attention_mask: list | None) -> list[list[int]]:
    # No stopping on EOS: generate() fills unset (None) fields from model.generation_config, so clear it there
    # (in memory only; the saved generation_config.json keeps eos_token_id 2)
    model.generation_config.eos_token_id = None
    gc = GenerationConfig(do_sample=False, max_new_tokens=GEN_NEW, min_new_tokens=0, eos_token_id=None,
                          pad_token_id=GEN_PAD, bos_token_id=1, num_beams=1)
    kw = {} if attention_mask is None else {"attention_mask": ids(attention_mask)}
    out = model.generate(input_ids=ids(input_ids), generation_config=gc, **kw)
    require(out.shape[1] == len(input_ids[0]) + GEN_NEW, f"generate returned {out.shape[1]} columns")
    return out[:, len(input_ids[0]):].tolist()


# --------------------------------------------------------------------------------------------------------
# one model
# --------------------------------------------------------------------------------------------------------


def build_one(name: str, spec: dict, out_dir: str) -> None:
    d = os.path.join(out_dir, name)
    if os.path.isdir(d):
        shutil.rmtree(d)
    os.makedirs(d)
    seed = spec.get("seed", name)
    make_model(seed, spec).save_pretrained(d, safe_serialization=True)

    arrays: dict[str, torch.Tensor] = {}
    x, labels = ids(INPUT_IDS), ids(LABELS)
    m32, m64 = load(d, F32), load(d, F64)
    cfg = m32.config
    notes: list[str] = []

    # inv_freq: the exact f64 re-implementation agrees with transformers' float32 one
    hf_inv = m32.model.rotary_emb.inv_freq.double()
    require(float(((exact_inv_freq(cfg) - hf_inv).abs() / hf_inv).max()) < 1e-6, "exact inv_freq vs transformers")

    # 1. logits
    with torch.no_grad():
        out32 = m32(x, labels=labels)
        logits32 = out32.logits
        hf_native64 = m64(x).logits
        with exact_f64():
            logits64 = m64(x).logits
    require(logits64.dtype == F64 and logits32.dtype == F32, "dtypes")
    err32 = maxabs(logits32, logits64)
    require(err32 < 1e-4, f"torch f32 vs exact f64 logits differ by {err32}")
    require(float(logits64.std()) > 0.5, "logits are near-uniform")
    arrays["logits.f32"], arrays["logits.f64"] = logits32, logits64

    # 2. loss and gradients (exact f64)
    m64.zero_grad(set_to_none=True)
    with exact_f64():
        out = m64(x, labels=labels)
        loss = sft_loss(out.logits, labels)
    require(abs(float(out.loss.detach()) - float(loss.detach())) < 1e-6,
            "hand loss vs transformers outputs.loss (f64 model)")
    require(abs(float(out32.loss) - float(loss.detach())) < 1e-5, "transformers f32 outputs.loss vs exact f64 loss")
    loss.backward()
    grad_names = []
    for pname, p in m64.named_parameters():
        require(p.grad is not None, f"{pname} has no gradient")
        arrays[f"grad.{pname}"] = p.grad.detach().to(F32)
        grad_names.append(pname)
    if cfg.tie_word_embeddings:
        require("lm_head.weight" not in grad_names and m64.lm_head.weight is m64.model.embed_tokens.weight, "tied")
    if cfg.pad_token_id is not None:
        pad_row = arrays["grad.model.embed_tokens.weight"][cfg.pad_token_id]
        notes.append(
            f"pad_token_id={cfg.pad_token_id}: nn.Embedding(padding_idx={cfg.pad_token_id}) gives the pad row NO "
            "gradient from the embedding lookup although input_ids contain it"
            + (" (tied: that row's gradient is the lm_head part only)" if cfg.tie_word_embeddings else ""))
        require(bool((x == cfg.pad_token_id).any()), "input_ids should contain the pad id")
        if cfg.tie_word_embeddings:
            # the tied total's pad row is exactly the lm_head (output projection) contribution
            w = m64.lm_head.weight.detach().clone().requires_grad_(True)
            with exact_f64():
                h = m64.model(x).last_hidden_state.detach()
                sft_loss(h @ w.T, labels).backward()
            head_row = w.grad[cfg.pad_token_id].to(F32)
            require(maxabs(pad_row, head_row) < 1e-7 and float(pad_row.abs().max()) > 0, "tied pad row gradient")
        else:
            require(float(pad_row.abs().max()) == 0.0, "pad row gradient should be zero")
    n_label = int((labels[:, 1:] != IGNORE).sum())

    # 3. generation (torch f32, HF generate) checked against greedy recomputation in exact f64
    gen_single = hf_generate(m32, [GEN_PROMPT], None)[0]
    with exact_f64():
        rec, margin = greedy_recompute(m64, GEN_PROMPT, GEN_NEW)
    require(rec == gen_single, f"greedy: generate {gen_single} vs f64 recompute {rec}")
    gen_batch = hf_generate(m32, GEN_BATCH, GEN_MASK)
    margins = [margin]
    for row, mask, got in zip(GEN_BATCH, GEN_MASK, gen_batch):
        prompt = [t for t, m in zip(row, mask) if m]
        with exact_f64():
            alone, mg = greedy_recompute(m64, prompt, GEN_NEW)
        margins.append(mg)
        require(alone == got, f"left-padded row {row} generated {got}, unpadded {alone}")
    require(min(margins) > 1e-3, f"greedy top-1/top-2 margin {min(margins)} is too small to be a robust fixture")

    # 4. kv cache: one decode step after a 7-token prefill (torch f32)
    with torch.no_grad():
        pre = m32(ids([KV_PROMPT]), use_cache=True)
        step = m32(ids([[KV_NEXT]]), cache=pre.cache, use_cache=True)
        full = m32(ids([KV_PROMPT + [KV_NEXT]])).logits
    kv_err = maxabs(step.logits[0, -1], full[0, len(KV_PROMPT)])
    require(kv_err < SELF_TOL, f"kv-cache decode vs full logits: {kv_err}")
    require(maxabs(pre.logits, full[:, : len(KV_PROMPT)]) < SELF_TOL, "prefill vs full logits")
    arrays["kv.prefill_logits.f32"] = pre.logits
    arrays["kv.decode_logits.f32"] = step.logits
    arrays["kv.full_logits.f32"] = full

    # mistral: the sliding window is j > i - window (keys i-window < j <= i); check on exact f64 logits
    window_check = None
    if getattr(cfg, "sliding_window", None) is not None:
        window_check = check_window(m64, cfg.sliding_window)

    expected: dict[str, Any] = {
        "schema": SCHEMA,
        "generator": GENERATOR,
        "model": name,
        "architecture": spec["arch"],
        "versions": versions(),
        "arrays": "expected.safetensors",
        "inputs": {"input_ids": INPUT_IDS, "labels": LABELS, "prompt_masked_positions": PROMPT_LEN},
        "logits": {"f32": "logits.f32", "f64": "logits.f64", "shape": list(logits32.shape),
                   "torch_f32_max_abs_err": err32,
                   "transformers_native_f64_max_abs_err": maxabs(hf_native64, logits64)},
        "loss_grads": {"loss": float(loss.detach()), "loss_torch_f32": float(out32.loss), "num_label_tokens": n_label,
                       "normalisation": "mean over all non-ignored shifted labels of the batch",
                       "grads": {p: f"grad.{p}" for p in grad_names}, "grads_dtype": "float32 (computed in float64)"},
        "generation": {
            "max_new_tokens": GEN_NEW, "stop_on_eos": False,
            "single": {"prompt": GEN_PROMPT, "new_ids": gen_single},
            "left_padded": {"input_ids": GEN_BATCH, "attention_mask": GEN_MASK, "pad_token_id": GEN_PAD,
                            "position_ids_of_real_tokens": "0,1,2,... from the first unmasked token",
                            "new_ids": gen_batch},
            "min_top2_margin_f64": min(margins),
        },
        "kv_cache": {"prompt": KV_PROMPT, "next_id": KV_NEXT, "position": len(KV_PROMPT),
                     "prefill_logits": "kv.prefill_logits.f32", "decode_logits": "kv.decode_logits.f32",
                     "full_logits": "kv.full_logits.f32", "decode_vs_full_max_abs_err": kv_err},
        "sliding_window": window_check,
        "lora": None,
        "sft": None,
        "notes": notes,
    }
    if spec["lora"]:
        expected["lora"] = build_lora(seed, d, arrays, x, labels)
    if spec["sft"]:
        expected["sft"] = build_sft(d, arrays, x, labels)

    save_file({k: v.detach().contiguous() for k, v in sorted(arrays.items())},
              os.path.join(d, "expected.safetensors"), metadata={"generator": GENERATOR})
    with open(os.path.join(d, "expected.json"), "w") as f:
        f.write(to_json(expected) + "\n")


@torch.no_grad()
def check_window(m64, window: int) -> dict:
    """Which keys each query attends: read from the eager attention weights (output_attentions=True), and seen
    from the outside by perturbing the token at position j: with L layers it reaches queries j..j+L(window-1)."""
    seq = [1, 17, 42, 99, 5, 63, 120, 8, 77, 31, 64, 2]
    with exact_f64():
        base = m64(ids([seq])).logits[0]
        j = 2
        pert = list(seq)
        pert[j] = 100
        diff = (m64(ids([pert])).logits[0] - base).abs().amax(-1)
        attn = m64(ids([seq]), output_attentions=True).attentions
    require(len(attn) == m64.config.num_hidden_layers, "output_attentions")
    for layer in attn:  # [batch, heads, query, key]: exactly the keys i - window < j <= i get weight
        for i in range(len(seq)):
            keys = [k for k in range(len(seq)) if bool((layer[0, :, i, k] != 0).all())]
            zero = [k for k in range(len(seq)) if bool((layer[0, :, i, k] == 0).all())]
            want = list(range(max(0, i - window + 1), i + 1))
            require(keys == want and len(keys) + len(zero) == len(seq),
                    f"sliding window: query {i} attends keys {keys}, expected {want}")
    affected = [i for i in range(len(seq)) if float(diff[i]) > 1e-12]
    # with L layers token j reaches query i iff j <= i <= j + L*(window-1)
    reach = m64.config.num_hidden_layers * (window - 1)
    require(affected == list(range(j, min(len(seq), j + reach + 1))),
            f"sliding window: perturbing key {j} changed positions {affected}, expected {j}..{j + reach}")
    return {"window": window, "rule": "query i attends key j iff i - window < j <= i (masks j <= i - window)",
            "perturbed_position": j, "affected_positions": affected,
            "attended_keys": {str(i): list(range(max(0, i - window + 1), i + 1)) for i in range(len(seq))}}


def build_lora(seed: str, d: str, arrays: dict, x: torch.Tensor, labels: torch.Tensor) -> dict:
    ad = os.path.join(d, "adapter")
    base = load(d, F32)
    pm = get_peft_model(base, LoraConfig(**LORA))
    with torch.no_grad():
        for pname, p in pm.named_parameters():
            g = rng_for(seed, pname)
            if "lora_A" in pname:  # peft's default init distribution (kaiming-uniform a=sqrt(5)), seeded by us
                bound = 1.0 / math.sqrt(p.shape[1])
                p.copy_(torch.from_numpy(g.uniform(-bound, bound, tuple(p.shape)).astype(np.float32)))
            elif "lora_B" in pname:
                p.copy_(torch.from_numpy(g.standard_normal(tuple(p.shape), dtype=np.float32)) * 0.1)
        mem_logits = pm(x).logits
    pm.save_pretrained(ad)
    os.remove(os.path.join(ad, "README.md"))  # peft's model-card template: not part of the adapter
    # the adapter's base path would be this run's directory: make it the relative parent folder, and sort
    cfg_path = os.path.join(ad, "adapter_config.json")
    with open(cfg_path) as f:
        acfg = json.load(f)
    acfg["base_model_name_or_path"] = ".."
    acfg["target_modules"] = sorted(acfg["target_modules"])  # peft keeps a set: its order varies run to run
    with open(cfg_path, "w") as f:
        json.dump(acfg, f, indent=2, sort_keys=True)
        f.write("\n")
    keys = sorted(load_file(os.path.join(ad, "adapter_model.safetensors")).keys())

    # f32 adapter logits, reloaded from disk
    p32 = PeftModel.from_pretrained(load(d, F32), ad).eval()
    with torch.no_grad():
        l32 = p32(x).logits
    require(maxabs(l32, mem_logits) == 0.0, "reloaded adapter logits vs in-memory")
    require(maxabs(l32, arrays["logits.f32"]) > 1e-2, "the adapter does not change the logits")

    # f64: logits and the gradient w.r.t. every lora_A / lora_B (base frozen)
    p64 = PeftModel.from_pretrained(load(d, F64), ad, is_trainable=True).to(F64).eval()
    with exact_f64():
        out = p64(x, labels=labels)
        loss = sft_loss(out.logits, labels)
        loss.backward()
    grads = {}
    for pname, p in p64.named_parameters():
        if p.requires_grad:
            require(p.dtype == F64 and ("lora_A" in pname or "lora_B" in pname), f"trainable {pname}")
            key = pname.replace(".default.", ".")
            grads[key] = f"lora.grad.{key}"
            arrays[f"lora.grad.{key}"] = p.grad.detach().to(F32)
        else:
            require(p.grad is None, f"frozen {pname} got a gradient")
    require(sorted(grads) == keys, f"lora gradient names {sorted(grads)} vs adapter file keys {keys}")
    l64 = out.logits.detach()
    err32 = maxabs(l32, l64)
    require(err32 < 1e-4, f"adapter f32 vs f64 logits: {err32}")

    # merge_and_unload (f32)
    merged = PeftModel.from_pretrained(load(d, F32), ad).merge_and_unload().eval()
    with torch.no_grad():
        lm = merged(x).logits
    merr = maxabs(lm, l32)
    require(merr < SELF_TOL, f"merged vs adapter logits: {merr}")

    arrays["lora.logits.f32"], arrays["lora.logits.f64"], arrays["lora.merged_logits.f32"] = l32, l64, lm
    return {
        "dir": "adapter", "config": {k: v for k, v in LORA.items()}, "scaling": LORA["lora_alpha"] / LORA["r"],
        "init": "lora_A ~ U(-1/sqrt(in), 1/sqrt(in)), lora_B ~ N(0, 0.1^2), numpy-seeded",
        "logits": {"f32": "lora.logits.f32", "f64": "lora.logits.f64", "torch_f32_max_abs_err": err32},
        "merged_logits": {"f32": "lora.merged_logits.f32", "vs_adapter_max_abs_err": merr},
        "loss": float(loss.detach()), "grads": grads, "grads_dtype": "float32 (computed in float64)",
    }


def build_sft(d: str, arrays: dict, x: torch.Tensor, labels: torch.Tensor) -> dict:
    m = load(d, F64)
    m.train()  # no dropout in these models; train() only for form
    opt = torch.optim.AdamW(m.parameters(), lr=SFT["lr"], betas=SFT["betas"], eps=SFT["eps"],
                            weight_decay=SFT["weight_decay"], foreach=False)
    losses = []
    with exact_f64():
        for _ in range(SFT["steps"]):
            opt.zero_grad(set_to_none=True)
            loss = sft_loss(m(x).logits, labels)
            losses.append(float(loss.detach()))
            loss.backward()
            opt.step()
        with torch.no_grad():
            after = float(sft_loss(m(x).logits, labels))
    require(after < losses[0], "AdamW did not lower the loss")
    params = dict(m.named_parameters())
    finals = {}
    for pname in SFT["params"]:
        arrays[f"sft.final.{pname}"] = params[pname].detach().clone()
        finals[pname] = f"sft.final.{pname}"
    return {
        "optimizer": "torch.optim.AdamW (foreach=False)", "lr": SFT["lr"], "betas": list(SFT["betas"]),
        "eps": SFT["eps"], "weight_decay": SFT["weight_decay"], "steps": SFT["steps"], "schedule": None,
        "clip_grad_norm": None, "dtype": "float64 (exact)",
        "losses": losses, "loss_after": after, "final_params": finals, "final_params_dtype": "float64",
    }


def to_json(x: Any, indent: int = 0) -> str:
    """Sorted keys, one key per line; lists of scalars (and lists of those) on one line."""
    pad = " " * (indent + 1)
    if isinstance(x, dict):
        if not x:
            return "{}"
        items = [f"{pad}{json.dumps(k)}: {to_json(x[k], indent + 1)}" for k in sorted(x)]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    if isinstance(x, list) and not any(isinstance(v, dict) for v in x):
        return json.dumps(x, separators=(", ", ": "))
    if isinstance(x, list):
        return "[\n" + ",\n".join(pad + to_json(v, indent + 1) for v in x) + "\n" + " " * indent + "]"
    return json.dumps(x)


def versions() -> dict:
    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "peft": peft.__version__, "safetensors": safetensors.__version__, "numpy": np.__version__}


def build_all(out_dir: str) -> None:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    os.makedirs(out_dir, exist_ok=True)
    for name, spec in MODELS.items():
        build_one(name, spec, out_dir)


# --------------------------------------------------------------------------------------------------------
# --check and the size summary
# --------------------------------------------------------------------------------------------------------


def list_files(root: str) -> list[str]:
    out = []
    for dp, _, fs in os.walk(root):
        out += [os.path.relpath(os.path.join(dp, f), root) for f in fs]
    return sorted(out)


def cmp_json(a: Any, b: Any, path: str, problems: list[str], warnings: list[str]) -> None:
    if isinstance(a, dict) and isinstance(b, dict):
        for k in sorted(set(a) | set(b)):
            p = f"{path}.{k}"
            if k not in a or k not in b:
                problems.append(f"{p}: only in {'committed' if k in a else 'regenerated'}")
            elif k in VERSION_KEYS:
                if a[k] != b[k]:
                    warnings.append(f"{p}: {a[k]} (committed) vs {b[k]} (this environment)")
            else:
                cmp_json(a[k], b[k], p, problems, warnings)
    elif isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            problems.append(f"{path}: length {len(a)} vs {len(b)}")
        else:
            for i, (u, v) in enumerate(zip(a, b)):
                cmp_json(u, v, f"{path}[{i}]", problems, warnings)
    elif isinstance(a, float) or isinstance(b, float):
        if not (isinstance(a, (int, float)) and isinstance(b, (int, float))) or isinstance(a, bool) \
                or isinstance(b, bool) or not abs(a - b) <= ABS_TOL:
            problems.append(f"{path}: {a!r} vs {b!r}")
    elif a != b or type(a) is not type(b):
        problems.append(f"{path}: {a!r} vs {b!r}")


def cmp_safetensors(a: str, b: str, rel: str, problems: list[str]) -> None:
    ta, tb = load_file(a), load_file(b)
    for k in sorted(set(ta) | set(tb)):
        if k not in ta or k not in tb:
            problems.append(f"{rel}:{k}: only in {'committed' if k in ta else 'regenerated'}")
            continue
        u, v = ta[k], tb[k]
        if u.dtype != v.dtype or u.shape != v.shape:
            problems.append(f"{rel}:{k}: {u.dtype}{list(u.shape)} vs {v.dtype}{list(v.shape)}")
        elif u.is_floating_point():
            e = maxabs(u, v)
            if not e <= ABS_TOL:
                problems.append(f"{rel}:{k}: max abs diff {e:.3g}")
        elif not torch.equal(u, v):
            problems.append(f"{rel}:{k}: integer values differ")


def check(committed: str) -> int:
    rel_root = os.path.relpath(committed, REPO_ROOT)
    if not os.path.isdir(committed):
        print(f"parity check: {rel_root} does not exist; run {GENERATOR}", file=sys.stderr)
        return 1
    tmp = tempfile.mkdtemp(prefix="bdvax-parity-")
    try:
        build_all(tmp)
        fa, fb = list_files(committed), list_files(tmp)
        problems: list[str] = []
        warnings: list[str] = []
        for f in sorted(set(fa) | set(fb)):
            if f not in fa or f not in fb:
                problems.append(f"{f}: only in {'committed' if f in fa else 'regenerated'} fixtures")
            elif f.endswith(".json"):
                with open(os.path.join(committed, f)) as u, open(os.path.join(tmp, f)) as v:
                    cmp_json(json.load(u), json.load(v), f, problems, warnings)
            elif f.endswith(".safetensors"):
                cmp_safetensors(os.path.join(committed, f), os.path.join(tmp, f), f, problems)
            else:
                with open(os.path.join(committed, f), "rb") as u, open(os.path.join(tmp, f), "rb") as v:
                    if u.read() != v.read():
                        problems.append(f"{f}: bytes differ")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for w in warnings:
        print(f"parity check: warning: version differs: {w}", file=sys.stderr)
    if problems:
        for p in problems[:40]:
            print(f"  {p}", file=sys.stderr)
        print(f"parity check: {rel_root} is out of date ({len(problems)} difference(s)); run {GENERATOR}",
              file=sys.stderr)
        return 1
    print(f"parity check: {rel_root} is up to date ({len(fa)} files)")
    return 0


def summary(root: str) -> None:
    total = 0
    for f in list_files(root):
        n = os.path.getsize(os.path.join(root, f))
        total += n
        print(f"  {n:>9,}  {f}")
    print(f"  {total:>9,}  total ({total / 2**20:.2f} MiB)")
    if total > 3 * 2**20:
        print("warning: fixtures exceed 3 MiB", file=sys.stderr)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=DEFAULT_OUT, help="fixture folder (default: %(default)s)")
    ap.add_argument("--check", action="store_true", help="regenerate into a temp dir and compare with --out")
    args = ap.parse_args()
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    out = os.path.abspath(args.out)
    if args.check:
        return check(out)
    build_all(out)
    print(f"wrote {os.path.relpath(out, REPO_ROOT)} ({', '.join(f'{k}={v}' for k, v in versions().items())})")
    summary(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())

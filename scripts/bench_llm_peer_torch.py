#!/usr/bin/env python3
"""PyTorch peer for packages/llm/bench/bench-llm.ts: SmolLM2-135M LoRA training and greedy generation on the CPU.

  python scripts/bench_llm_peer_torch.py --gguf PATH --ids PATH [--json] [--steps N] [--budget S] [--new-tokens N]
                                         [--batches 1,4] [--gen-runs N] [--no-train] [--no-generate] [--no-profile]

The model is transformers' LlamaForCausalLM loaded from the same GGUF file as bdvax (transformers dequantizes it),
float32, default attention implementation, torch.set_num_threads(os.cpu_count()). The token ids come from the
JSON file that bench-llm.ts writes ({"train": [[...]] (batch × seq), "prompts": [[...]] (batch × prompt length)}),
so both sides see the same numbers.

  * LoRA training (peft): r, alpha, target modules from the command line (default r=8, alpha=16, the seven linear
    projections), dropout 0, torch.optim.AdamW(lr 2e-4, weight_decay 0). One step = zero_grad, forward with
    labels = input ids (transformers shifts them: loss on all B × (T−1) next-token targets), backward, AdamW step,
    loss.item(). One warm-up step, then timed steps until --steps steps or (≥ --min-steps steps and ≥ --budget s);
    the median is reported. Peak memory: one more step under torch.profiler (profile_memory=True) gives the step's
    high-water mark of CPU tensor allocations, added to the bytes resident before it (parameters, buffers, AdamW
    state, gradients, input ids); the process's peak RSS is reported too.
  * Greedy generation with the KV cache: a hand-written loop over model(...) — prefill of the whole prompt
    (logits_to_keep=1), argmax, then one forward per new token with past_key_values — the same schedule as bdvax's
    generate(): decode tokens/s = (new tokens − 1) × batch / decode seconds, prefill time = the prompt's forward up
    to the first token. No stop tokens. A 2-token warm-up per batch size, then --gen-runs runs (median).

With --json every stdout line is the whole result so far as one JSON object (the last line is final), so a run
that dies half-way still reports what it measured; progress goes to stderr as "[peer] …" lines.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import sys
import time
import warnings


def progress(msg: str) -> None:
    print(f"[peer] {msg}", file=sys.stderr, flush=True)


def err_text(e: BaseException) -> str:
    return " ".join(f"{type(e).__name__}: {e}".split())[:400]


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB


def step_peak_bytes(fn) -> int:
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


def bench_train(torch, model, ids_rows, args) -> dict:
    from peft import LoraConfig, get_peft_model

    targets = [t for t in args.targets.split(",") if t]
    cfg = LoraConfig(r=args.r, lora_alpha=args.alpha, lora_dropout=0.0, target_modules=targets, bias="none", task_type="CAUSAL_LM")
    peft_model = get_peft_model(model, cfg)
    peft_model.train()
    trainable = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    ids = torch.tensor(ids_rows, dtype=torch.long)
    b, t = ids.shape
    losses: list[float] = []

    def step() -> float:
        opt.zero_grad(set_to_none=True)
        out = peft_model(input_ids=ids, labels=ids)
        out.loss.backward()
        opt.step()
        return out.loss.item()

    w0 = time.perf_counter()
    losses.append(step())
    warm_ms = (time.perf_counter() - w0) * 1e3
    progress(f"train warm-up step: {warm_ms:.0f} ms, loss {losses[0]:.5f}")
    times: list[float] = []
    cpu = 0.0
    start = time.perf_counter()
    while len(times) < args.steps:
        c0 = time.process_time()
        t0 = time.perf_counter()
        losses.append(step())
        times.append((time.perf_counter() - t0) * 1e3)
        cpu += time.process_time() - c0
        progress(f"train step {len(times)}: {times[-1]:.0f} ms, loss {losses[-1]:.5f}")
        if len(times) >= args.min_steps and time.perf_counter() - start >= args.budget:
            break
    ms = statistics.median(times)
    r = {
        "ms": ms,
        "min_ms": min(times),
        "runs": len(times),
        "all_ms": [round(x, 2) for x in times],
        "cores_used": cpu * 1e3 / sum(times),
        "warmup_ms": round(warm_ms, 2),
        "tokens_per_s": b * t / (ms / 1e3),
        "batch": b,
        "seq": t,
        "loss0": losses[0],
        "loss_last": losses[-1],
        "losses": losses,
        "trainable_params": sum(p.numel() for p in trainable),
    }
    if args.profile:
        # Resident before the step: parameters and buffers, AdamW state, gradients left from the last step, ids.
        resident = sum(p.numel() * p.element_size() for p in peft_model.parameters())
        resident += sum(x.numel() * x.element_size() for x in peft_model.buffers())
        resident += sum(p.grad.numel() * p.grad.element_size() for p in trainable if p.grad is not None)
        for state in opt.state.values():
            resident += sum(v.numel() * v.element_size() for v in state.values() if torch.is_tensor(v))
        resident += ids.numel() * ids.element_size()
        try:
            step_bytes = step_peak_bytes(step)
            r.update(resident_bytes=resident, step_bytes=step_bytes, peak_bytes=resident + step_bytes,
                     peak_note="resident tensors + torch.profiler memory events (profile_memory=True) of one step")
        except Exception as e:  # noqa: BLE001 - memory is a side figure
            r["peak_note"] = f"n/a: torch.profiler failed: {err_text(e)}"
    else:
        r["peak_note"] = "n/a (--no-profile)"
    r["peak_rss_bytes"] = peak_rss_bytes()
    return r


def greedy(torch, model, prompts, new_tokens: int) -> dict:
    """Prefill + (new_tokens − 1) cached decode steps; argmax of the last position's logits each step."""
    ids = torch.tensor(prompts, dtype=torch.long)
    b = ids.shape[0]
    out_tokens: list[list[int]] = [[] for _ in range(b)]
    with torch.inference_mode():
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = model(input_ids=ids, use_cache=True, logits_to_keep=1)
        nxt = out.logits[:, -1, :].argmax(dim=-1)
        for i, tok in enumerate(nxt.tolist()):
            out_tokens[i].append(tok)
        t1 = time.perf_counter()
        past = out.past_key_values
        for _ in range(new_tokens - 1):
            out = model(input_ids=nxt[:, None], past_key_values=past, use_cache=True)
            past = out.past_key_values
            nxt = out.logits[:, -1, :].argmax(dim=-1)
            for i, tok in enumerate(nxt.tolist()):
                out_tokens[i].append(tok)
        t2 = time.perf_counter()
        cpu = time.process_time() - c0
    decode_s = t2 - t1
    return {
        "prefill_ms": (t1 - t0) * 1e3,
        "decode_ms": decode_s * 1e3,
        "decode_tokens_per_s": (new_tokens - 1) * b / decode_s if decode_s > 0 and new_tokens > 1 else None,
        "total_tokens_per_s": new_tokens * b / (t2 - t0),
        "tokens": out_tokens,
        "cores_used": cpu / (t2 - t0),
    }


def bench_generate(torch, model, prompts, batch: int, args) -> dict:
    rows = prompts[:batch]
    greedy(torch, model, rows, 2)  # warm-up
    runs = [greedy(torch, model, rows, args.new_tokens) for _ in range(args.gen_runs)]
    runs.sort(key=lambda r: r["decode_ms"])  # fastest first: with 2 runs the median is the faster, as bench-llm.ts
    med = runs[(len(runs) - 1) // 2]
    return {
        "batch": batch,
        "prompt_tokens": len(rows[0]),
        "new_tokens": args.new_tokens,
        "runs": len(runs),
        "prefill_ms": statistics.median(r["prefill_ms"] for r in runs),
        "decode_ms": med["decode_ms"],
        "decode_tokens_per_s": med["decode_tokens_per_s"],
        "total_tokens_per_s": med["total_tokens_per_s"],
        "all_decode_tokens_per_s": [round(r["decode_tokens_per_s"] or 0, 3) for r in runs],
        "cores_used": med["cores_used"],
        "tokens": med["tokens"],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--ids", required=True, help="JSON with 'train' and 'prompts' token id rows")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--steps", type=int, default=4, help="timed training steps at most (after one warm-up step)")
    ap.add_argument("--min-steps", type=int, default=2, help="timed training steps at least")
    ap.add_argument("--budget", type=float, default=60.0, help="stop timing training after ≥ --min-steps steps and this many seconds")
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--alpha", type=float, default=16)
    ap.add_argument("--lr", type=float, default=2e-4)
    ap.add_argument("--targets", default="q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj")
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batches", default="1,4")
    ap.add_argument("--gen-runs", type=int, default=3)
    ap.add_argument("--no-train", action="store_true")
    ap.add_argument("--no-generate", action="store_true")
    ap.add_argument("--no-profile", dest="profile", action="store_false", help="skip the torch.profiler memory step")
    args = ap.parse_args()
    threads = os.cpu_count() or 1
    result: dict = {"available": False, "python": platform.python_version(), "executable": sys.executable, "threads": threads}

    def emit():
        if args.json:
            print(json.dumps(result), flush=True)

    try:
        import torch
        import transformers
    except ImportError as e:
        result["error"] = err_text(e)
        emit()
        return 0
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    warnings.filterwarnings("ignore")
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    result.update(available=True, torch=torch.__version__, transformers=transformers.__version__, threads=torch.get_num_threads())
    try:
        import peft

        result["peft"] = peft.__version__
    except ImportError as e:
        result["peft_error"] = err_text(e)
    with open(args.ids) as f:
        data = json.load(f)
    try:
        from transformers import AutoModelForCausalLM

        folder, name = os.path.split(os.path.abspath(args.gguf))
        t0 = time.perf_counter()
        model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
        result["load_s"] = time.perf_counter() - t0
        result["model_class"] = type(model).__name__
        result["attn_implementation"] = getattr(model.config, "_attn_implementation", None)
        result["rss_after_load_bytes"] = peak_rss_bytes()
        progress(f"loaded {type(model).__name__} from the GGUF in {result['load_s']:.1f} s (attention: {result['attn_implementation']})")
    except Exception as e:  # noqa: BLE001
        result.update(available=False, error=f"loading the GGUF: {err_text(e)}")
        emit()
        return 0
    emit()

    # Generation first, on the base model (bdvax generates without an adapter too); peft then wraps it in place.
    if not args.no_generate:
        model.eval()
        result["generate"] = {}
        for b in [int(x) for x in args.batches.split(",") if x]:
            try:
                g = bench_generate(torch, model, data["prompts"], b, args)
                result["generate"][str(b)] = g
                progress(f"generate batch {b}: prefill {g['prefill_ms']:.0f} ms, decode {g['decode_tokens_per_s']:.2f} tokens/s")
            except Exception as e:  # noqa: BLE001 - a failing measurement is a row, not an abort
                result["generate"][str(b)] = {"error": err_text(e)}
                progress(f"generate batch {b}: failed: {err_text(e)}")
            emit()
    if not args.no_train:
        if "peft" not in result:
            result["train"] = {"error": f"peft is not installed ({result.get('peft_error')})"}
        else:
            try:
                result["train"] = bench_train(torch, model, data["train"], args)
                tr = result["train"]
                progress(f"train: {tr['ms']:.0f} ms/step, {tr['tokens_per_s']:.1f} tokens/s")
            except Exception as e:  # noqa: BLE001
                result["train"] = {"error": err_text(e)}
                progress(f"train: failed: {err_text(e)}")
        emit()
    result["peak_rss_bytes"] = peak_rss_bytes()
    emit()
    if not args.json:
        print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

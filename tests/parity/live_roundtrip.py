#!/usr/bin/env python3
"""Load a model folder written by bdvax (optionally plus a PEFT adapter folder) with transformers/peft and compare
its logits with the ones bdvax computed.

    python tests/parity/live_roundtrip.py --model DIR [--adapter DIR] --input-ids JSON --expect-logits FILE \\
        [--attention-mask JSON] [--atol 1e-4] [--dtype float32|float64] [--key logits] [--write-logits FILE]

--model          a Hugging Face model folder (config.json + model.safetensors), loaded with
                 AutoModelForCausalLM.from_pretrained(attn_implementation="eager").
--adapter        a PEFT adapter folder (adapter_config.json + adapter_model.safetensors), applied to --model with
                 PeftModel.from_pretrained (its base_model_name_or_path is ignored).
--input-ids      [[id, ...], ...] (or [id, ...] for one row): inline JSON or the path of a JSON file. May be
                 omitted when --expect-logits is a JSON object with an "input_ids" field.
--attention-mask same shape as --input-ids (inline JSON or a path); also read from the expect file's
                 "attention_mask" field. Default: all ones.
--expect-logits  a JSON file holding the logits [batch, seq, vocab] as a nested array, or an object with them
                 under "logits" (--key); or a .safetensors file with a tensor named "logits" (--key).
--atol           the largest max-abs difference accepted (default 1e-4).

Prints the shapes and the max abs error; exits 0 when it is <= atol, 1 on a mismatch (or a shape mismatch), 2 on
bad arguments. --write-logits FILE also writes the transformers logits as JSON {"logits": [...]}.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

import torch


def read_json_arg(value: str):
    if os.path.isfile(value):
        with open(value) as f:
            return json.load(f)
    return json.loads(value)


def as_batch(x) -> list:
    if isinstance(x, list) and x and not isinstance(x[0], list):
        return [x]
    return x


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True)
    ap.add_argument("--adapter")
    ap.add_argument("--input-ids")
    ap.add_argument("--attention-mask")
    ap.add_argument("--expect-logits", required=True)
    ap.add_argument("--key", default="logits")
    ap.add_argument("--atol", type=float, default=1e-4)
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    ap.add_argument("--write-logits")
    args = ap.parse_args()

    import transformers
    from transformers import AutoModelForCausalLM

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    torch.set_num_threads(max(1, min(8, os.cpu_count() or 1)))

    # expected logits (and possibly the inputs) ------------------------------------------------------------
    doc = None
    if args.expect_logits.endswith(".safetensors"):
        from safetensors.torch import load_file

        tensors = load_file(args.expect_logits)
        if args.key not in tensors:
            print(f"live_roundtrip: {args.expect_logits} has no tensor {args.key!r} (has {sorted(tensors)})",
                  file=sys.stderr)
            return 2
        expected = tensors[args.key].to(torch.float64)
    else:
        with open(args.expect_logits) as f:
            doc = json.load(f)
        raw = doc[args.key] if isinstance(doc, dict) else doc
        expected = torch.tensor(raw, dtype=torch.float64)

    if args.input_ids is not None:
        input_ids = as_batch(read_json_arg(args.input_ids))
    elif isinstance(doc, dict) and "input_ids" in doc:
        input_ids = as_batch(doc["input_ids"])
    else:
        print("live_roundtrip: --input-ids is required (the expect file has no input_ids)", file=sys.stderr)
        return 2
    if args.attention_mask is not None:
        mask = as_batch(read_json_arg(args.attention_mask))
    elif isinstance(doc, dict) and doc.get("attention_mask") is not None:
        mask = as_batch(doc["attention_mask"])
    else:
        mask = None

    # model (+ adapter) ----------------------------------------------------------------------------------
    dtype = torch.float32 if args.dtype == "float32" else torch.float64
    model = AutoModelForCausalLM.from_pretrained(args.model, dtype=dtype, attn_implementation="eager")
    if args.adapter:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, args.adapter)
        model = model.to(dtype)
    model.eval()

    ids = torch.tensor(input_ids, dtype=torch.long)
    kw = {} if mask is None else {"attention_mask": torch.tensor(mask, dtype=torch.long)}
    with torch.no_grad():
        logits = model(input_ids=ids, **kw).logits.to(torch.float64)

    if args.write_logits:
        with open(args.write_logits, "w") as f:
            json.dump({"input_ids": input_ids, "logits": logits.tolist()}, f)

    what = f"{args.model}" + (f" + adapter {args.adapter}" if args.adapter else "")
    if expected.shape != logits.shape:
        # a [seq, vocab] expectation for a one-row batch is accepted
        if expected.dim() == logits.dim() - 1 and logits.shape[0] == 1 and expected.shape == logits.shape[1:]:
            expected = expected.unsqueeze(0)
        else:
            print(f"live_roundtrip: MISMATCH {what}: logits shape {list(logits.shape)} vs expected "
                  f"{list(expected.shape)}")
            return 1
    if mask is not None:  # padded positions' logits are not meaningful; compare real positions only
        keep = torch.tensor(mask, dtype=torch.bool)
        diff = (logits - expected).abs()[keep]
    else:
        diff = (logits - expected).abs()
    if not torch.isfinite(logits).all():
        print(f"live_roundtrip: MISMATCH {what}: transformers produced non-finite logits")
        return 1
    err = float(diff.max()) if diff.numel() else 0.0
    if not (err <= args.atol):  # NaN in expected -> mismatch
        flat = int(diff.argmax())
        print(f"live_roundtrip: MISMATCH {what}: max abs error {err:.3e} > atol {args.atol:g} "
              f"(shape {list(logits.shape)}, worst flat index {flat})")
        return 1
    print(f"live_roundtrip: OK {what}: max abs error {err:.3e} <= atol {args.atol:g} (shape {list(logits.shape)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

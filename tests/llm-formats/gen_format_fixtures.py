"""Generates the checkpoint-format fixtures of packages/llm/test (safetensors, GGUF) with the reference Python
libraries, plus the values those libraries read back, so the TypeScript readers are tested against independent
implementations without needing Python at test time.

  torch-tensors.safetensors (+ .expected.json)  written by safetensors.torch.save_file: F32/F16/BF16/I64/I32/
                                                U8/empty/scalar tensors, specials (±0, subnormals, inf, nan)
  sharded/                                      a two-shard checkpoint with model.safetensors.index.json
  quants.gguf (+ .expected.json)                written by gguf.GGUFWriter: F32, F16, BF16, Q8_0, Q4_0, Q4_1
                                                tensors quantized by gguf.quants, expected values from
                                                gguf.quants.dequantize; metadata of every value type
  tiny-llama.gguf (+ .expected.safetensors, .expected.json)
                                                a 2-layer Llama (GQA) converted the llama.cpp way (q/k rows
                                                permuted); the expected Hugging Face tensors and config come from
                                                transformers' own GGUF loader (AutoModelForCausalLM)

Usage:  python tests/llm-formats/gen_format_fixtures.py   (deterministic; rewrites the files)
Needs:  pip install torch==2.13.0 numpy safetensors gguf transformers accelerate
"""
import json
import math
import os
import tempfile

import gguf
import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf import GGUFValueType as V
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
OUT = os.path.join(ROOT, "packages", "llm", "test", "fixtures", "formats")


def values_json(t) -> list:
    """Float32 values as JSON: finite numbers as numbers (exact: every f32 is a double), others as strings."""
    flat = np.asarray(t, dtype=np.float32).reshape(-1).tolist()
    return [v if math.isfinite(v) else ("nan" if math.isnan(v) else ("inf" if v > 0 else "-inf")) for v in flat]


def write_json(name: str, obj) -> None:
    with open(os.path.join(OUT, name), "w") as f:
        json.dump(obj, f, separators=(",", ":"), allow_nan=False)
        f.write("\n")


def safetensors_fixtures(rng: np.random.Generator) -> None:
    specials = [0.0, -0.0, 1.0, -2.5, 65504.0, 6e-8, 1e-40, 3.0e38, math.inf, -math.inf, math.nan]
    tensors = {
        "f32.matrix": torch.tensor(rng.standard_normal((3, 4)), dtype=torch.float32),
        "f32.specials": torch.tensor(specials, dtype=torch.float32),
        "f16.specials": torch.tensor(specials, dtype=torch.float16),
        "f16.random": torch.tensor(rng.standard_normal((2, 5)), dtype=torch.float16),
        "bf16.specials": torch.tensor(specials, dtype=torch.bfloat16),
        "bf16.random": torch.tensor(rng.standard_normal((4, 2)), dtype=torch.bfloat16),
        "i64.ids": torch.tensor([0, -1, 7, 2**40, -(2**31)], dtype=torch.int64),
        "i32.values": torch.tensor([[1, -2], [3, 2**24]], dtype=torch.int32),
        "u8.bytes": torch.tensor([0, 1, 255], dtype=torch.uint8),
        "f8e4m3.values": torch.tensor([0.0, -0.0, 1.0, -2.5, 448.0, 0.001953125, 0.013, 300.0, math.nan], dtype=torch.float8_e4m3fn),
        "f8e5m2.values": torch.tensor([0.0, -1.0, 57344.0, 1.5e-5, 0.3, math.inf, math.nan], dtype=torch.float8_e5m2),
        "empty": torch.zeros((0, 3), dtype=torch.float32),
        "scalar": torch.tensor(0.25, dtype=torch.float32),
    }
    save_file(tensors, os.path.join(OUT, "torch-tensors.safetensors"), metadata={"format": "pt"})
    write_json(
        "torch-tensors.expected.json",
        {
            "metadata": {"format": "pt"},
            "tensors": {
                name: {
                    "dtype": {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int64: "I64",
                              torch.int32: "I32", torch.uint8: "U8", torch.float8_e4m3fn: "F8_E4M3",
                              torch.float8_e5m2: "F8_E5M2"}[t.dtype],
                    "shape": list(t.shape),
                    "values": values_json(t.to(torch.float64).numpy()),
                }
                for name, t in tensors.items()
            },
        },
    )

    # Two shards and the index transformers writes (metadata.total_size + weight_map).
    shard_dir = os.path.join(OUT, "sharded")
    os.makedirs(shard_dir, exist_ok=True)
    shards = {
        "model-00001-of-00002.safetensors": {
            "model.embed_tokens.weight": torch.arange(12, dtype=torch.float32).reshape(4, 3) / 4,
            "model.norm.weight": torch.tensor([1.0, -1.0, 0.5], dtype=torch.bfloat16),
        },
        "model-00002-of-00002.safetensors": {
            "lm_head.weight": (torch.arange(12, dtype=torch.float32).reshape(4, 3) - 6).to(torch.float16),
        },
    }
    weight_map, total = {}, 0
    for shard, ts in shards.items():
        save_file(ts, os.path.join(shard_dir, shard), metadata={"format": "pt"})
        for name, t in ts.items():
            weight_map[name] = shard
            total += t.numel() * t.element_size()
    with open(os.path.join(shard_dir, "model.safetensors.index.json"), "w") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
    write_json(
        "sharded.expected.json",
        {name: {"shape": list(t.shape), "values": values_json(t.float().numpy())} for ts in shards.values() for name, t in ts.items()},
    )


def quants_fixture(rng: np.random.Generator) -> None:
    path = os.path.join(OUT, "quants.gguf")
    w = gguf.GGUFWriter(path, "bdvax-test")
    # Metadata of every value type, including arrays of strings and a nested array.
    w.add_uint8("test.u8", 200)
    w.add_int8("test.i8", -100)
    w.add_uint16("test.u16", 60000)
    w.add_int16("test.i16", -30000)
    w.add_uint32("test.u32", 4_000_000_000)
    w.add_int32("test.i32", -2_000_000_000)
    w.add_float32("test.f32", 0.1)
    w.add_uint64("test.u64", 2**53 + 2)
    w.add_int64("test.i64", -(2**40))
    w.add_float64("test.f64", 0.1)
    w.add_bool("test.bool", True)
    w.add_string("test.string", "héllo ✓")
    w.add_key_value("test.strings", ["a", "", "ç"], V.ARRAY, sub_type=V.STRING)
    w.add_key_value("test.ints", [1, -2, 3], V.ARRAY, sub_type=V.INT32)
    w.add_key_value("test.floats", [0.5, -1.25], V.ARRAY, sub_type=V.FLOAT32)
    w.add_key_value("test.nested", [[1, 2], [3]], V.ARRAY, sub_type=V.ARRAY)

    def sample(shape):
        x = rng.standard_normal(shape).astype(np.float32)
        x.reshape(-1)[:3] = [0.0, -0.0, 1.0]  # exact values and a signed zero
        return x

    plan = [
        ("f32", (2, 32), Q.F32),
        ("f16", (2, 32), Q.F16),
        ("bf16", (2, 32), Q.BF16),
        ("q8_0", (4, 64), Q.Q8_0),
        ("q4_0", (4, 64), Q.Q4_0),
        ("q4_1", (4, 64), Q.Q4_1),
        ("q4_1.3d", (2, 3, 32), Q.Q4_1),
        ("q8_0.vector", (96,), Q.Q8_0),
    ]
    for name, shape, qtype in plan:
        data = sample(shape)
        if qtype == Q.F32:
            w.add_tensor(name, data)
        elif qtype == Q.F16:
            w.add_tensor(name, data.astype(np.float16))
        else:
            w.add_tensor(name, gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # Expected values: what gguf-py's reader and dequantizer make of the file just written.
    reader = gguf.GGUFReader(path)
    tensors = {}
    for t in reader.tensors:
        values = gguf.quants.dequantize(t.data, t.tensor_type)
        tensors[t.name] = {
            "type": t.tensor_type.name,
            "shape": [int(d) for d in reversed(t.shape)],  # PyTorch order
            "values": values_json(values),
        }
    write_json(
        "quants.expected.json",
        {
            "version": 3,
            "metadata": {
                "general.architecture": "bdvax-test",
                "test.u8": 200, "test.i8": -100, "test.u16": 60000, "test.i16": -30000,
                "test.u32": 4_000_000_000, "test.i32": -2_000_000_000,
                "test.f32": float(np.float32(0.1)), "test.u64": str(2**53 + 2), "test.i64": -(2**40),
                "test.f64": 0.1, "test.bool": True, "test.string": "héllo ✓",
                "test.strings": ["a", "", "ç"], "test.ints": [1, -2, 3], "test.floats": [0.5, -1.25],
                "test.nested": [[1, 2], [3]],
            },
            "tensors": tensors,
        },
    )


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # llama.cpp convert_hf_to_gguf.py, LlamaModel.permute: HF rotate-half rows → interleaved rows, per head.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def tiny_llama_fixture(rng: np.random.Generator) -> None:
    hidden, heads, kv_heads, ffn, vocab, layers = 32, 4, 2, 32, 32, 2
    head_dim = hidden // heads
    hf = {"model.embed_tokens.weight": rng.standard_normal((vocab, hidden)), "model.norm.weight": 1 + 0.1 * rng.standard_normal(hidden),
          "lm_head.weight": rng.standard_normal((vocab, hidden))}
    for i in range(layers):
        p = f"model.layers.{i}."
        hf[p + "input_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        hf[p + "post_attention_layernorm.weight"] = 1 + 0.1 * rng.standard_normal(hidden)
        hf[p + "self_attn.q_proj.weight"] = rng.standard_normal((heads * head_dim, hidden))
        hf[p + "self_attn.k_proj.weight"] = rng.standard_normal((kv_heads * head_dim, hidden))
        hf[p + "self_attn.v_proj.weight"] = rng.standard_normal((kv_heads * head_dim, hidden))
        hf[p + "self_attn.o_proj.weight"] = rng.standard_normal((hidden, heads * head_dim))
        hf[p + "mlp.gate_proj.weight"] = rng.standard_normal((ffn, hidden))
        hf[p + "mlp.up_proj.weight"] = rng.standard_normal((ffn, hidden))
        hf[p + "mlp.down_proj.weight"] = rng.standard_normal((hidden, ffn))
    hf = {k: (0.05 * v if v.ndim == 2 else v).astype(np.float32) for k, v in hf.items()}

    gguf_names = {"model.embed_tokens.weight": "token_embd.weight", "model.norm.weight": "output_norm.weight", "lm_head.weight": "output.weight"}
    parts = {"input_layernorm": "attn_norm", "post_attention_layernorm": "ffn_norm", "self_attn.q_proj": "attn_q", "self_attn.k_proj": "attn_k",
             "self_attn.v_proj": "attn_v", "self_attn.o_proj": "attn_output", "mlp.gate_proj": "ffn_gate", "mlp.up_proj": "ffn_up", "mlp.down_proj": "ffn_down"}
    for i in range(layers):
        for h, g in parts.items():
            gguf_names[f"model.layers.{i}.{h}.weight"] = f"blk.{i}.{g}.weight"
    # Storage types: mostly F32 (exact), plus F16 and Q8_0 (including a quantized q_proj, permuted before
    # quantization as llama.cpp does).
    types = {"model.layers.1.self_attn.q_proj.weight": Q.Q8_0, "model.layers.0.mlp.up_proj.weight": Q.F16, "model.layers.1.mlp.down_proj.weight": Q.Q4_1}

    path = os.path.join(OUT, "tiny-llama.gguf")
    w = gguf.GGUFWriter(path, "llama")
    w.add_name("bdvax tiny llama")
    w.add_block_count(layers)
    w.add_context_length(256)
    w.add_embedding_length(hidden)
    w.add_feed_forward_length(ffn)
    w.add_head_count(heads)
    w.add_head_count_kv(kv_heads)
    w.add_rope_freq_base(50000.0)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_rope_dimension_count(head_dim)
    w.add_vocab_size(vocab)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([f"t{i}" for i in range(vocab)])
    w.add_token_types([1] * vocab)
    w.add_token_merges(["t 1"])
    w.add_bos_token_id(1)
    w.add_eos_token_id(2)
    w.add_pad_token_id(0)
    for name, data in hf.items():
        if name.endswith("q_proj.weight"):
            data = llama_cpp_permute(data, heads)
        elif name.endswith("k_proj.weight"):
            data = llama_cpp_permute(data, kv_heads)
        qtype = types.get(name, Q.F32)
        if qtype == Q.F32:
            w.add_tensor(gguf_names[name], data)
        elif qtype == Q.F16:
            w.add_tensor(gguf_names[name], data.astype(np.float16))
        else:
            w.add_tensor(gguf_names[name], gguf.quants.quantize(data, qtype), raw_dtype=qtype)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    # The reference: transformers' GGUF loader (dequantizes, undoes the permutation, renames).
    with tempfile.TemporaryDirectory() as tmp:
        os.link(path, os.path.join(tmp, "tiny-llama.gguf"))
        model = AutoModelForCausalLM.from_pretrained(tmp, gguf_file="tiny-llama.gguf", dtype=torch.float32)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    for name, data in hf.items():  # F32-stored tensors must come back exactly as the HF originals
        if name not in types:
            assert np.array_equal(state[name].numpy(), data), name
    save_file(state, os.path.join(OUT, "tiny-llama.expected.safetensors"))
    cfg = model.config
    write_json(
        "tiny-llama.expected.json",
        {
            "config": {
                "vocabSize": cfg.vocab_size, "hiddenSize": cfg.hidden_size, "intermediateSize": cfg.intermediate_size,
                "numHiddenLayers": cfg.num_hidden_layers, "numAttentionHeads": cfg.num_attention_heads,
                "numKeyValueHeads": cfg.num_key_value_heads, "headDim": cfg.head_dim, "rmsNormEps": cfg.rms_norm_eps,
                "ropeTheta": cfg.rope_parameters["rope_theta"], "maxPositionEmbeddings": cfg.max_position_embeddings,
                "tieWordEmbeddings": cfg.tie_word_embeddings, "bosTokenId": cfg.bos_token_id,
                "eosTokenId": cfg.eos_token_id, "padTokenId": cfg.pad_token_id,
            },
            "types": {gguf_names[k]: v.name for k, v in types.items()},
        },
    )


def main() -> None:
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(20240607)
    safetensors_fixtures(rng)
    quants_fixture(rng)
    tiny_llama_fixture(rng)
    for d, _, fs in os.walk(OUT):  # save_file creates 0600 files; fixtures are ordinary repository files
        for f in fs:
            os.chmod(os.path.join(d, f), 0o644)
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(OUT) for f in fs)
    print(f"fixtures written to {OUT}: {total} bytes")


if __name__ == "__main__":
    main()

"""Reference values for the SmolLM2-135M-Instruct Q4_1 GGUF parity check (packages/llm/test/smollm2-gguf.parity.ts).

Loads the GGUF with Hugging Face transformers (its own GGUF loader: gguf-py dequantization, llama.cpp's q/k row
permutation undone, llama.cpp names mapped to Hugging Face names) and writes what bdvax's reader must reproduce:

  <out>/smollm2-ref.safetensors  layer 0 and layer 29 weights, the final norm and the first 64 embedding rows
  <out>/smollm2-ref.json         the config transformers derives and the GGUF's tensor count

Usage:  python tests/llm-formats/check_smollm2_gguf.py <path/to/SmolLM2-135M-Instruct.Q4_1.gguf> <out-dir>
Needs:  pip install torch==2.13.0 transformers gguf safetensors
"""
import json
import os
import sys

import gguf
import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    # convert_hf_to_gguf.py's LlamaModel.permute: Hugging Face rows → llama.cpp rows within each head.
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def main(gguf_path: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    folder, name = os.path.split(os.path.abspath(gguf_path))
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    cfg = model.config
    state = model.state_dict()

    # Self-check of the permutation: re-applying llama.cpp's permute to transformers' q/k must give back the
    # raw dequantized GGUF rows.
    reader = gguf.GGUFReader(gguf_path)
    raw = {t.name: t for t in reader.tensors}
    for gname, hname, heads in [
        ("blk.0.attn_q.weight", "model.layers.0.self_attn.q_proj.weight", cfg.num_attention_heads),
        ("blk.0.attn_k.weight", "model.layers.0.self_attn.k_proj.weight", cfg.num_key_value_heads),
    ]:
        t = raw[gname]
        deq = gguf.quants.dequantize(t.data, t.tensor_type).reshape(state[hname].shape)
        assert np.array_equal(llama_cpp_permute(state[hname].numpy(), heads), deq), gname
        assert not np.array_equal(state[hname].numpy(), deq), f"{gname}: permutation should not be the identity"

    keep = {}
    for layer in (0, 29):
        prefix = f"model.layers.{layer}."
        keep.update({k: v for k, v in state.items() if k.startswith(prefix)})
    keep["model.norm.weight"] = state["model.norm.weight"]
    keep["model.embed_tokens.weight[:64]"] = state["model.embed_tokens.weight"][:64]
    save_file({k: v.contiguous().clone() for k, v in keep.items()}, os.path.join(out_dir, "smollm2-ref.safetensors"))

    ref = {
        "tensorCount": len(reader.tensors),
        "tiedEmbeddings": bool(cfg.tie_word_embeddings)
        and model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        "config": {
            "vocabSize": cfg.vocab_size,
            "hiddenSize": cfg.hidden_size,
            "intermediateSize": cfg.intermediate_size,
            "numHiddenLayers": cfg.num_hidden_layers,
            "numAttentionHeads": cfg.num_attention_heads,
            "numKeyValueHeads": cfg.num_key_value_heads,
            "headDim": cfg.head_dim,
            "rmsNormEps": cfg.rms_norm_eps,
            "ropeTheta": cfg.rope_parameters["rope_theta"],
            "maxPositionEmbeddings": cfg.max_position_embeddings,
            "bosTokenId": cfg.bos_token_id,
            "eosTokenId": cfg.eos_token_id,
            "padTokenId": cfg.pad_token_id,
        },
    }
    with open(os.path.join(out_dir, "smollm2-ref.json"), "w") as f:
        json.dump(ref, f, indent=2)
    print(f"wrote {len(keep)} reference tensors to {out_dir}; config: {json.dumps(ref['config'])}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])

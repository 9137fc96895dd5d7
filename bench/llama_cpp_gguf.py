"""Writes a GGUF of Qwen3-0.6B's matmul shapes with random bf16 weights, for
llama.cpp's llama-bench to run beside lclm-bench-qwen3 (bench/compare_llama_cpp.sh).

Usage: /usr/bin/python3 bench/llama_cpp_gguf.py --gguf-py LLAMA_CPP/gguf-py -o OUT.gguf

The architecture is llama.cpp's "llama" with Qwen3-0.6B's sizes: 28 layers,
hidden 1024, 16 query and 8 KV heads of 128 (key_length / value_length, so
the q projection is 1024 x 2048 as in Qwen3), MLP 3072, vocabulary 151936,
tied embeddings, rope base 1e6. Qwen3's q/k RMSNorm (two 128-wide norms per
head) is the only part absent: llama.cpp builds of early 2025 have no qwen3
architecture, and those norms are far below 1% of the work. Speed does not
depend on the weight values; they are normal with std 0.02 (seed 0). The
tokenizer is a placeholder SentencePiece vocabulary of the same size
(llama-bench feeds random token ids).
"""
import argparse
import sys

import numpy as np

LAYERS, HIDDEN, HEADS, KV_HEADS, HEAD_DIM, FFN, VOCAB = 28, 1024, 16, 8, 128, 3072, 151936


def bf16(rng, shape):
    """Random normal (std 0.02) rounded to bf16 (nearest even), as uint16."""
    x = (rng.standard_normal(shape, dtype=np.float32) * np.float32(0.02)).view(np.uint32)
    return ((x + 0x7FFF + ((x >> 16) & 1)) >> 16).astype(np.uint16)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--gguf-py", required=True, help="llama.cpp's gguf-py directory")
    ap.add_argument("-o", "--output", required=True, help="the GGUF file to write")
    args = ap.parse_args()
    sys.path.insert(0, args.gguf_py)
    try:
        import sentencepiece  # noqa: F401
    except ImportError:
        # gguf-py imports it for vocabularies read from SentencePiece models,
        # which this file does not use. Not installed on purpose: Debian's
        # package adds a copyright file to the evaluation's default haystack.
        import types
        stub = types.ModuleType("sentencepiece")
        stub.SentencePieceProcessor = None
        sys.modules["sentencepiece"] = stub
    import gguf  # noqa: E402 (from the llama.cpp tree named above)

    w = gguf.GGUFWriter(args.output, "llama")
    w.add_name("qwen3-0.6b-shape-random")
    w.add_context_length(40960)
    w.add_embedding_length(HIDDEN)
    w.add_block_count(LAYERS)
    w.add_feed_forward_length(FFN)
    w.add_head_count(HEADS)
    w.add_head_count_kv(KV_HEADS)
    w.add_key_length(HEAD_DIM)
    w.add_value_length(HEAD_DIM)
    w.add_rope_dimension_count(HEAD_DIM)
    w.add_rope_freq_base(1e6)
    w.add_layer_norm_rms_eps(1e-6)
    w.add_vocab_size(VOCAB)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_BF16)
    w.add_tokenizer_model("llama")
    w.add_token_list(["<unk>", "<s>", "</s>"] + [f"t{i}" for i in range(3, VOCAB)])
    w.add_token_scores([0.0] * VOCAB)
    w.add_token_types([2, 3, 3] + [1] * (VOCAB - 3))  # unknown, control, control, normal

    rng = np.random.default_rng(0)
    bf = gguf.GGMLQuantizationType.BF16
    ones = np.ones(HIDDEN, dtype=np.float32)
    w.add_tensor("token_embd.weight", bf16(rng, (VOCAB, HIDDEN)), raw_dtype=bf)
    w.add_tensor("output_norm.weight", ones)
    for i in range(LAYERS):
        p = f"blk.{i}."
        w.add_tensor(p + "attn_norm.weight", ones)
        w.add_tensor(p + "attn_q.weight", bf16(rng, (HEADS * HEAD_DIM, HIDDEN)), raw_dtype=bf)
        w.add_tensor(p + "attn_k.weight", bf16(rng, (KV_HEADS * HEAD_DIM, HIDDEN)), raw_dtype=bf)
        w.add_tensor(p + "attn_v.weight", bf16(rng, (KV_HEADS * HEAD_DIM, HIDDEN)), raw_dtype=bf)
        w.add_tensor(p + "attn_output.weight", bf16(rng, (HIDDEN, HEADS * HEAD_DIM)), raw_dtype=bf)
        w.add_tensor(p + "ffn_norm.weight", ones)
        w.add_tensor(p + "ffn_gate.weight", bf16(rng, (FFN, HIDDEN)), raw_dtype=bf)
        w.add_tensor(p + "ffn_up.weight", bf16(rng, (FFN, HIDDEN)), raw_dtype=bf)
        w.add_tensor(p + "ffn_down.weight", bf16(rng, (HIDDEN, FFN)), raw_dtype=bf)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    print(f"wrote {args.output}")


if __name__ == "__main__":
    main()

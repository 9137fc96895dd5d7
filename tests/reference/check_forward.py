"""Compares the engine's logits with the PyTorch reference on a model directory.

Usage: check_forward.py MODEL_DIR DUMP_TOOL [--tokens N] [--seed S]
                         [--cache-type TYPE --tolerance T] [--bf16-activations MODE]
DUMP_TOOL (tests/core/dump_logits.cc) runs the engine with several prefill
chunkings, so the KV-cache path is checked too. Fails when
max|engine - reference| / max|reference| exceeds the tolerance (1e-4 with
the f32 KV cache) for any chunking, or the argmax differs at any position.
With --cache-type the engine's KV cache stores that type (bf16, q8_0, ...),
the reference stays exact, and --tolerance and --argmax-may-differ state
what the type keeps.

--bf16-activations split (the default here) holds the products with bf16
weights to the exact reference. --bf16-activations rounded holds the engine's
default (x rounded to bf16 before each projection, ops/bf16_gemm.h) to a
reference that rounds the same inputs; it exits 77 (skipped) on a CPU where
the engine does not round (no AVX512_BF16, or AMX).
"""
import argparse
import os
import random
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qwen3_reference  # noqa: E402

TOLERANCE = 1e-4
SKIPPED = 77


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("dump_tool")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--cache-type", default=None)
    ap.add_argument("--tolerance", type=float, default=TOLERANCE)
    ap.add_argument("--argmax-may-differ", type=int, default=0,
                    help="positions whose argmax may differ from the reference's")
    ap.add_argument("--bf16-activations", choices=["split", "rounded"], default="split")
    args = ap.parse_args()
    cache_flags = ["--cache-type", args.cache_type] if args.cache_type else []
    cache_flags += ["--bf16-activations", args.bf16_activations]

    config, weights = qwen3_reference.load_model(args.model_dir)
    rng = random.Random(args.seed)
    ids = [rng.randrange(config["vocab_size"]) for _ in range(args.tokens)]
    rounded = args.bf16_activations == "rounded"
    reference = qwen3_reference.logits_for_ids(config, weights, ids, round_linear_inputs=rounded)
    vocab = reference.shape[1]

    worst = 0.0
    for chunk in (args.tokens, 7, 1):
        with tempfile.NamedTemporaryFile(suffix=".f32") as out:
            run = subprocess.run(
                [args.dump_tool, args.model_dir, str(chunk), out.name]
                + cache_flags
                + [str(i) for i in ids],
                check=True, stdout=subprocess.PIPE, text=True,
            )
            engine = torch.frombuffer(bytearray(open(out.name, "rb").read()), dtype=torch.float32)
        if rounded and "x rounded" not in run.stdout:
            print(f"SKIP: the engine does not round x here ({run.stdout.strip()})")
            return SKIPPED
        engine = engine.reshape(-1, vocab).double()
        if engine.shape != reference.shape:
            print(f"FAIL: engine logits shape {tuple(engine.shape)}, reference {tuple(reference.shape)}")
            return 1
        err = ((engine - reference).abs().max() / reference.abs().max()).item()
        agree = int((engine.argmax(-1) == reference.argmax(-1)).sum())
        cache = f" ({args.cache_type} KV cache)" if args.cache_type else ""
        cache += f" (bf16 x {args.bf16_activations})"
        print(f"{args.model_dir}{cache}: prefill chunk {chunk:3d}: max relative error {err:.3e}, "
              f"argmax equal at {agree} of {args.tokens} positions")
        worst = max(worst, err)
        if err > args.tolerance or agree < args.tokens - args.argmax_may_differ:
            print(f"FAIL: relative error {err:.3e} exceeds {args.tolerance:g} or argmax differs "
                  f"at more than {args.argmax_may_differ} positions")
            return 1
    print(f"PASS: worst relative error {worst:.3e} <= {args.tolerance:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

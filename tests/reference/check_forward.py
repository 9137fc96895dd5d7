"""Compares the engine's logits with the PyTorch reference on a model directory.

Usage: check_forward.py MODEL_DIR DUMP_TOOL [--tokens N] [--seed S]
DUMP_TOOL (tests/core/dump_logits.cc) runs the engine with several prefill
chunkings, so the KV-cache path is checked too. Fails when
max|engine - reference| / max|reference| exceeds 1e-4 for any chunking.
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


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model_dir")
    ap.add_argument("dump_tool")
    ap.add_argument("--tokens", type=int, default=48)
    ap.add_argument("--seed", type=int, default=1234)
    args = ap.parse_args()

    config, weights = qwen3_reference.load_model(args.model_dir)
    rng = random.Random(args.seed)
    ids = [rng.randrange(config["vocab_size"]) for _ in range(args.tokens)]
    reference = qwen3_reference.logits_for_ids(config, weights, ids)
    vocab = reference.shape[1]

    worst = 0.0
    for chunk in (args.tokens, 7, 1):
        with tempfile.NamedTemporaryFile(suffix=".f32") as out:
            subprocess.run(
                [args.dump_tool, args.model_dir, str(chunk), out.name] + [str(i) for i in ids],
                check=True,
            )
            engine = torch.frombuffer(bytearray(open(out.name, "rb").read()), dtype=torch.float32)
        engine = engine.reshape(-1, vocab).double()
        if engine.shape != reference.shape:
            print(f"FAIL: engine logits shape {tuple(engine.shape)}, reference {tuple(reference.shape)}")
            return 1
        err = ((engine - reference).abs().max() / reference.abs().max()).item()
        same_argmax = bool((engine.argmax(-1) == reference.argmax(-1)).all())
        print(f"{args.model_dir}: prefill chunk {chunk:3d}: max relative error {err:.3e}, "
              f"argmax equal at all {args.tokens} positions: {same_argmax}")
        worst = max(worst, err)
        if err > TOLERANCE or not same_argmax:
            print(f"FAIL: relative error {err:.3e} exceeds {TOLERANCE:g} or argmax differs")
            return 1
    print(f"PASS: worst relative error {worst:.3e} <= {TOLERANCE:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

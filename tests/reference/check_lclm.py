"""Compares the engine's LCLM prompt path with the PyTorch reference.

Usage: check_lclm.py CKPT_DIR DUMP_TOOL [--pooling P] [--adapter A] [--mask M]

Writes a prompt with plain text around three memory regions (one long enough
for several encoder windows, one shorter than a group, one empty), runs
DUMP_TOOL (tests/compression/lclm_dump.cc) on it, and recomputes the latents
of every region and the decoder's logits at every position with
lclm_reference.py. Fails when max|engine - reference| / max|reference| exceeds
1e-4 for the latents or the logits, or when a region's latent count is not
ceil(T / r).

--pooling/--adapter/--mask override model_config.json in the reference only:
they exist to show that the check fails when the two disagree.
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import lclm_reference  # noqa: E402

TOLERANCE = 1e-4

# ~70 encoder tokens: several windows of 15, 16 or 24 tokens with a short last
# window whose last group is short too, for every ratio the tests use (the
# check below fails loudly if an edit of the text loses that).
LONG_TEXT = (
    "The lighthouse keeper wrote in the log every evening: wind from the north-west, "
    "visibility four miles, two fishing boats returned before dusk. On the ninth of "
    "March the lamp failed at 21:40 and was relit by hand; the supply ship, due on "
    "Tuesday, arrived three days late with oil and 17 letters."
)
SHORT_TEXT = "Blue."  # fewer tokens than any ratio: one latent from a short group

PROMPT = (
    "<|im_start|>user\nRead the notes.\n"
    f"<|memory_start|>{LONG_TEXT}<|memory_end|>\n"
    f"Colour: <|memory_start|>{SHORT_TEXT}<|memory_end|> and nothing here: "
    "<|memory_start|><|memory_end|>\n"
    "When did the lamp fail?<|im_end|>\n<|im_start|>assistant\n"
)


def rel_err(engine, reference):
    scale = reference.abs().max().item()
    return (engine - reference).abs().max().item() / (scale if scale > 0 else 1.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ckpt_dir")
    ap.add_argument("dump_tool")
    ap.add_argument("--pooling")
    ap.add_argument("--adapter")
    ap.add_argument("--mask")
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        prompt_file = os.path.join(tmp, "prompt.txt")
        with open(prompt_file, "w", encoding="utf-8") as f:
            f.write(PROMPT)
        subprocess.run([args.dump_tool, args.ckpt_dir, prompt_file, tmp], check=True)
        with open(os.path.join(tmp, "dump.json")) as f:
            dump = json.load(f)
        with open(dump["logits_file"], "rb") as f:
            engine_logits = torch.frombuffer(bytearray(f.read()), dtype=torch.float32)

    ref = lclm_reference.LclmReference(args.ckpt_dir)
    for key, value in (("pooling", args.pooling), ("adapter_type", args.adapter),
                       ("encoder_mask_type", args.mask)):
        if value:
            ref.config[key] = value
    cfg = ref.config
    r, W = cfg["compression_ratio"], cfg["encoder_window_size"]
    print(f"{args.ckpt_dir}: r={r} W={W} pooling={cfg['pooling']} "
          f"mask={cfg['encoder_mask_type']} overlap={cfg['boundary_overlap']} "
          f"adapter={cfg['adapter_type']}x{cfg['num_adapter_layers']}")

    failures = []
    regions = dump["regions"]
    if [reg["text"] for reg in regions] != [LONG_TEXT, SHORT_TEXT, ""]:
        failures.append("the engine did not find the prompt's three regions in order")
        regions = []
    # The test is only as good as its tiling: demand the cases it is meant to hit.
    if regions:
        T = len(regions[0]["encoder_ids"])
        last = T % W
        if T <= 2 * W or last == 0 or last % r == 0:
            failures.append(f"test design: the long region has T={T} tokens, which does not "
                            f"give several windows of {W} with a short last window and group")
        if not 0 < len(regions[1]["encoder_ids"]) < r:
            failures.append("test design: the short region is not shorter than one group")

    if dump["memory_id"] != ref.memory_id:
        failures.append(f"<|memory|> is id {dump['memory_id']} in the engine, {ref.memory_id} "
                        "in the checkpoint's decoder tokenizer.json")
    slot_counts = ref.region_slot_counts(dump["decoder_ids"])
    if len(slot_counts) != len(regions):
        failures.append(f"{len(slot_counts)} memory regions in the decoder ids, expected "
                        f"{len(regions)}")
    ref_latents, worst = [], {"latents": 0.0, "logits": 0.0}
    D = dump["hidden_size"]
    for k, reg in enumerate(regions):
        T = len(reg["encoder_ids"])
        want = math.ceil(T / r)
        got = len(reg["latents"])
        engine = torch.tensor(reg["latents"], dtype=torch.float64).reshape(got, D)
        reference = ref.latents(reg["encoder_ids"])
        ref_latents.append(reference)
        slots = slot_counts[k] if k < len(slot_counts) else None
        line = f"  region {k}: T={T:3d} latents engine={got} reference={reference.shape[0]} " \
               f"decoder slots={slots} ceil(T/r)={want}"
        if got != want or reference.shape[0] != want or slots != want:
            failures.append(f"region {k}: latent counts differ from ceil({T}/{r})={want}")
        elif got:
            err = rel_err(engine, reference)
            worst["latents"] = max(worst["latents"], err)
            line += f" max rel err {err:.3e}"
        print(line)

    if len(ref_latents) == len(regions) == len(slot_counts) and not failures:
        hidden = ref.decoder_hidden(dump["decoder_ids"], ref_latents)
        head = ref.lm_head()
        engine = engine_logits.reshape(-1, dump["vocab_size"])
        if engine.shape != (hidden.shape[0], head.shape[0]):
            failures.append(f"logits shape: engine {tuple(engine.shape)}, reference "
                            f"{(hidden.shape[0], head.shape[0])}")
        else:
            # A few positions at a time: [L, vocab] in float64 is large, and
            # touching fresh memory is most of the cost on the test machines.
            max_diff, max_ref, agree = 0.0, 0.0, 0
            for begin in range(0, hidden.shape[0], 8):
                reference = hidden[begin:begin + 8] @ head.T
                block = engine[begin:begin + 8].double()
                max_diff = max(max_diff, (block - reference).abs().max().item())
                max_ref = max(max_ref, reference.abs().max().item())
                agree += (block.argmax(-1) == reference.argmax(-1)).sum().item()
            worst["logits"] = max_diff / max_ref
            print(f"  logits [{engine.shape[0]} x {engine.shape[1]}]: max rel err "
                  f"{worst['logits']:.3e}, argmax agrees at {agree}/{engine.shape[0]} positions")

    for what, err in worst.items():
        if err > TOLERANCE:
            failures.append(f"{what}: max relative error {err:.3e} exceeds {TOLERANCE:g}")
    if failures:
        for f in failures:
            print("FAIL:", f)
        return 1
    print(f"PASS: latents {worst['latents']:.3e}, logits {worst['logits']:.3e} <= {TOLERANCE:g}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Checks that src/ keeps its layers: a directory includes only itself and the
directories below it (docs/architecture.md draws the picture).

    base        util, format (errors, files, safetensors, dtypes, q8_0/q4_0 blocks)
    kernels     ops                 tokenizer   tokenizer
    qwen3       model
    latent      compression         kv          kv
    fixtures    fixtures (random checkpoint writers for tests, tools and the trainer)
    runtime     runtime (Engine, Session, sampling, chat template)
    services    eval, agent, server, quant, trainer
    apps        cli, python (and tools/, bench/, tests/ outside src/)

Usage: check_layers.py [SRC_DIR]   (default: the src/ beside this script)
Exit 0 when every include points down or sideways within a directory, 1 with
one line per upward or unknown include otherwise.
"""
import pathlib
import re
import sys

BASE = {"util", "format"}
KERNELS = BASE | {"ops"}
TOKENIZER = BASE | {"tokenizer"}
QWEN3 = KERNELS | {"model"}
LATENT = QWEN3 | TOKENIZER | {"compression"}
KV = QWEN3 | {"kv"}
RUNTIME = LATENT | KV | {"runtime"}
SERVICES = RUNTIME | {"eval", "agent", "server", "quant"}

# What each directory may include (itself always).
ALLOWED = {
    "util": set(),
    "format": {"util"},
    "ops": BASE,
    "tokenizer": BASE,
    "model": KERNELS,
    "compression": QWEN3 | TOKENIZER,
    "kv": QWEN3,
    "fixtures": LATENT,
    "runtime": LATENT | KV,
    "eval": RUNTIME | {"agent"},  # the agent is one of its methods
    "agent": RUNTIME,
    "server": RUNTIME,
    "quant": RUNTIME,
    "trainer": RUNTIME | {"eval", "agent", "fixtures"},
    "cli": SERVICES,
    "python": RUNTIME,
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([A-Za-z0-9_]+)/')
EXTERNAL = {"hwy"}  # Highway's headers, included with quotes as its docs ask


def problems(src: pathlib.Path):
    for path in sorted(src.rglob("*")):
        if path.suffix not in {".h", ".cc", ".hpp", ".cpp"}:
            continue
        layer = path.relative_to(src).parts[0]
        if layer not in ALLOWED:
            yield f"{path}: directory {layer}/ has no layer (add it to scripts/check_layers.py)"
            continue
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
            m = INCLUDE.match(line)
            if not m or m.group(1) == layer or m.group(1) in EXTERNAL:
                continue
            target = m.group(1)
            if target not in ALLOWED:
                yield f"{path}:{number}: includes {target}/, which is no directory of src/"
            elif target not in ALLOWED[layer]:
                yield f"{path}:{number}: {layer}/ includes {target}/, a layer above or beside it"


def main() -> int:
    src = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).parent.parent / "src"
    if not src.is_dir():
        print(f"check_layers: {src} is not a directory", file=sys.stderr)
        return 2
    found = list(problems(src))
    for p in found:
        print(p)
    if found:
        print(f"{len(found)} include(s) break the layers (docs/architecture.md)")
        return 1
    print(f"layers ok: {src}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

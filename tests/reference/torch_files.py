"""PyTorch's side of the torch.save tests (tests/core/torch_file_test.cc).

    torch_files.py make DIR     writes tensors with torch.save into DIR
    torch_files.py load FILE    torch.load(FILE, weights_only=True) and prints
                                {"dtype", "shape", "values"} as JSON (values
                                as float32 bit patterns, so nothing is rounded)
"""
import json
import os
import sys

import torch


class Evil:
    """Unpickling this runs a shell command: a reader must refuse it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, ("touch " + self.marker,))


def make(out):
    g = torch.Generator().manual_seed(5)
    x = torch.randn(7, 13, generator=g)
    torch.save(x, os.path.join(out, "f32.pt"))
    torch.save(x.to(torch.bfloat16), os.path.join(out, "bf16.pt"))
    torch.save(x.to(torch.float16), os.path.join(out, "f16.pt"))
    # A view into a larger storage: the tensor starts at an offset.
    torch.save(torch.randn(40, 13, generator=g)[11:18], os.path.join(out, "offset.pt"))
    torch.save(x.t(), os.path.join(out, "transposed.pt"))
    torch.save({"prompt_embeds": x}, os.path.join(out, "dict.pt"))
    torch.save(torch.arange(6).reshape(2, 3), os.path.join(out, "int64.pt"))
    torch.save(x.reshape(91), os.path.join(out, "vector.pt"))
    torch.save(x, os.path.join(out, "protocol4.pt"), pickle_protocol=4)
    torch.save(Evil(os.path.join(out, "pwned")), os.path.join(out, "evil.pt"))
    for name in ("f32", "bf16", "f16", "offset", "vector", "protocol4"):
        t = torch.load(os.path.join(out, name + ".pt"))
        with open(os.path.join(out, name + ".json"), "w") as f:
            json.dump(describe(t), f)


def describe(t):
    f = t.to(torch.float32).contiguous().reshape(-1)
    return {"dtype": str(t.dtype), "shape": list(t.shape),
            "values": f.view(torch.int32).tolist()}


def load(path):
    t = torch.load(path, weights_only=True)
    print(json.dumps(describe(t)))


if __name__ == "__main__":
    {"make": make, "load": load}[sys.argv[1]](sys.argv[2])

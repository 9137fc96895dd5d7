"""An independent Qwen3 forward pass in PyTorch (float64), written from the
architecture description in the spec, used to check the engine's logits.

It reads the HF model directory itself (config.json and safetensors parsed by
hand, since no safetensors package is available here) and shares no code with
the C++ engine.
"""
import json
import os
import struct

import torch

_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    base = 8 + header_len
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        begin, end = entry["data_offsets"]
        raw = bytearray(data[base + begin : base + end])
        t = torch.frombuffer(raw, dtype=_DTYPES[entry["dtype"]]) if raw else torch.empty(0)
        tensors[name] = t.reshape(entry["shape"]).to(torch.float64)
    return tensors


def load_model(model_dir):
    with open(os.path.join(model_dir, "config.json")) as f:
        config = json.load(f)
    index = os.path.join(model_dir, "model.safetensors.index.json")
    if os.path.exists(index):
        with open(index) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = sorted(p for p in os.listdir(model_dir) if p.endswith(".safetensors"))
    weights = {}
    for name in files:
        weights.update(read_safetensors(os.path.join(model_dir, name)))
    # Encoders (Qwen3Model) may store tensors without the "model." prefix.
    weights = {k[len("model.") :] if k.startswith("model.") else k: v for k, v in weights.items()}
    return config, weights


def rms_norm(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def rope_cos_sin(config, positions):
    # The published models compute the tables in float32; so do we.
    head_dim = config.get("head_dim", config["hidden_size"] // config["num_attention_heads"])
    theta = config.get("rope_theta", 1e6)
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().double(), emb.sin().double()


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def round_to_bf16(x):
    """x with each element rounded to bf16 (nearest even) by way of f32, as
    the engine's bf16 GEMM rounds its f32 inputs."""
    return x.float().bfloat16().to(x.dtype)


def forward(config, weights, input_embeds, causal=True, round_linear_inputs=False):
    """input_embeds [L, hidden] -> final-norm hidden states [L, hidden].

    round_linear_inputs: the input of every projection is rounded to bf16
    first (the engine's products with bf16 weights, x rounded)."""
    lin = round_to_bf16 if round_linear_inputs else (lambda t: t)
    eps = config.get("rms_norm_eps", 1e-6)
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_heads)
    head_dim = config.get("head_dim", config["hidden_size"] // n_heads)
    L = input_embeds.shape[0]
    cos, sin = rope_cos_sin(config, torch.arange(L))
    mask = torch.full((L, L), float("-inf"), dtype=torch.float64).triu(1) if causal else None
    x = input_embeds
    for layer in range(config["num_hidden_layers"]):
        p = f"layers.{layer}."
        h = rms_norm(x, weights[p + "input_layernorm.weight"], eps)
        q = (lin(h) @ weights[p + "self_attn.q_proj.weight"].T).view(L, n_heads, head_dim)
        k = (lin(h) @ weights[p + "self_attn.k_proj.weight"].T).view(L, n_kv, head_dim)
        v = (lin(h) @ weights[p + "self_attn.v_proj.weight"].T).view(L, n_kv, head_dim)
        q = rms_norm(q, weights[p + "self_attn.q_norm.weight"], eps)
        k = rms_norm(k, weights[p + "self_attn.k_norm.weight"], eps)
        q = q * cos[:, None, :] + rotate_half(q) * sin[:, None, :]
        k = k * cos[:, None, :] + rotate_half(k) * sin[:, None, :]
        group = n_heads // n_kv
        k = k.repeat_interleave(group, dim=1)
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / (head_dim**0.5)
        if mask is not None:
            scores = scores + mask
        attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(L, n_heads * head_dim)
        x = x + lin(attn) @ weights[p + "self_attn.o_proj.weight"].T
        h = rms_norm(x, weights[p + "post_attention_layernorm.weight"], eps)
        gate = lin(h) @ weights[p + "mlp.gate_proj.weight"].T
        up = lin(h) @ weights[p + "mlp.up_proj.weight"].T
        x = x + lin(torch.nn.functional.silu(gate) * up) @ weights[p + "mlp.down_proj.weight"].T
    return rms_norm(x, weights["norm.weight"], eps)


def logits_for_ids(config, weights, ids, round_linear_inputs=False):
    x = weights["embed_tokens.weight"][torch.tensor(ids)]
    hidden = forward(config, weights, x, causal=True, round_linear_inputs=round_linear_inputs)
    head = weights.get("lm_head.weight")
    if head is None:
        head = weights["embed_tokens.weight"]
    if round_linear_inputs:
        hidden = round_to_bf16(hidden)
    return hidden @ head.T

"""An independent LCLM prompt path in PyTorch (float64), written from the
published system's description (docs: shared spec "Checkpoint layout" and "From
prompt to decoder input"), used to check the engine's latents and logits.

What it covers: model_config.json, the encoder's windows with boundary overlap,
the three poolings (mean, concat, eos), the three adapters (mlp, mlp_attn,
attn_mlp, including their bidirectional Qwen3 layers), the splice of the
latents into the decoder's embeddings, and the decoder's logits.

What it does not: tokenization. The encoder ids of each region and the decoder
ids of the placeholder prompt come from the engine (the tokenizer has its own
parity test); ids are only looked up in the checkpoint's tokenizer files.

The Qwen3 encoder and decoder run through qwen3_reference.forward (positions
0..L-1, causal or bidirectional). The adapter's attention layers have no final
norm, so they run through the layer function below, with the same math.
"""
import functools
import json
import math
import os
import re
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import qwen3_reference as q3  # noqa: E402

ADAPTER_NORM_EPS = 1e-6
REQUIRED_KEYS = ("encoder_window_size", "pooling", "encoder_mask_type", "boundary_overlap",
                 "adapter_type")


def load_json(path):
    with open(path) as f:
        return json.load(f)


def read_model_config(ckpt_dir):
    raw = load_json(os.path.join(ckpt_dir, "model_config.json"))
    config = {k: raw[k] for k in REQUIRED_KEYS}
    # Older checkpoints call the ratio "chunk_size".
    config["compression_ratio"] = raw["compression_ratio"] if "compression_ratio" in raw \
        else raw["chunk_size"]
    config["num_adapter_layers"] = raw.get("num_adapter_layers", 1)
    return config


_ADDED_TOKENS = re.compile(r'"added_tokens"\s*:\s*')


@functools.lru_cache(maxsize=None)
def _read_text(path):
    with open(path, encoding="utf-8") as f:
        return f.read()


def token_id(tokenizer_path, token):
    """The id of an added token (or else a vocab entry) in a tokenizer.json.

    Parsing the whole 5 MB file takes most of a second on the test machines,
    so the added_tokens array, where the special tokens live, is decoded alone
    first."""
    text = _read_text(tokenizer_path)
    m = _ADDED_TOKENS.search(text)
    if m:
        added, _ = json.JSONDecoder().raw_decode(text, m.end())
        for t in added:
            if t["content"] == token:
                return t["id"]
    tokenizer = json.loads(text)
    for t in tokenizer["added_tokens"]:
        if t["content"] == token:
            return t["id"]
    if token in tokenizer["model"]["vocab"]:
        return tokenizer["model"]["vocab"][token]
    raise KeyError(f"{tokenizer_path}: no token {token}")


def encoder_pad_id(encoder_dir):
    """eos pooling appends the encoder tokenizer's pad token (tokenizer_config.json)."""
    pad = "<|endoftext|>"
    cfg_path = os.path.join(encoder_dir, "tokenizer_config.json")
    if os.path.exists(cfg_path):
        pad = load_json(cfg_path).get("pad_token") or pad
        if isinstance(pad, dict):  # AddedToken serialised as an object
            pad = pad["content"]
    return token_id(os.path.join(encoder_dir, "tokenizer.json"), pad)


class LclmReference:
    def __init__(self, ckpt_dir):
        self.config = read_model_config(ckpt_dir)
        self.enc_config, self.enc_weights = q3.load_model(os.path.join(ckpt_dir, "encoder"))
        self.dec_config, self.dec_weights = q3.load_model(os.path.join(ckpt_dir, "decoder"))
        self.adapter = q3.read_safetensors(os.path.join(ckpt_dir, "adapter", "adapter.safetensors"))
        self.pad_id = encoder_pad_id(os.path.join(ckpt_dir, "encoder"))
        dec_tok = os.path.join(ckpt_dir, "decoder", "tokenizer.json")
        self.memory_start_id = token_id(dec_tok, "<|memory_start|>")
        self.memory_end_id = token_id(dec_tok, "<|memory_end|>")
        self.memory_id = token_id(dec_tok, "<|memory|>")

    # ---- encoder -------------------------------------------------------------

    def windows(self, n_tokens):
        """(begin, end, left_context, right_context, latents) for each window of a region."""
        W = self.config["encoder_window_size"]
        r = self.config["compression_ratio"]
        B = self.config["boundary_overlap"]
        bidirectional = self.config["encoder_mask_type"] == "bidirectional"
        out = []
        for begin in range(0, n_tokens, W):
            end = min(n_tokens, begin + W)
            left = min(B, begin)  # context comes from the same region only
            right = min(B, n_tokens - end) if bidirectional else 0
            out.append((begin, end, left, right, max(1, math.ceil((end - begin) / r))))
        return out

    def pooled_states(self, tokens):
        """Pooled encoder states of one region [ceil(T/r), E or r*E]."""
        r = self.config["compression_ratio"]
        pooling = self.config["pooling"]
        causal = self.config["encoder_mask_type"] == "causal"
        E = self.enc_config["hidden_size"]
        embed = self.enc_weights["embed_tokens.weight"]
        rows = []
        for begin, end, left, right, n_latents in self.windows(len(tokens)):
            ids = list(tokens[begin - left:end + right])
            if pooling == "eos":
                ids += [self.pad_id] * n_latents
            # Each window is its own sequence: positions restart at 0 at its
            # first token (left context included).
            hidden = q3.forward(self.enc_config, self.enc_weights, embed[torch.tensor(ids)],
                                causal=causal)
            own = hidden[left:left + (end - begin)]
            if pooling == "eos":
                rows.extend(hidden[len(ids) - n_latents:])
                continue
            for g in range(n_latents):
                group = own[g * r:(g + 1) * r]
                if pooling == "mean":
                    rows.append(group.mean(0))
                else:  # concat: row-major flatten, zeros for the missing tail rows
                    flat = torch.zeros(r * E, dtype=torch.float64)
                    flat[:group.numel()] = group.reshape(-1)
                    rows.append(flat)
        if not rows:
            width = r * E if pooling == "concat" else E
            return torch.zeros(0, width, dtype=torch.float64)
        return torch.stack(rows)

    # ---- adapter -------------------------------------------------------------

    def adapter_mlp(self, x):
        a = self.adapter
        h = q3.rms_norm(x, a["norm.weight"], ADAPTER_NORM_EPS)
        h = h @ a["fc1.weight"].T + a["fc1.bias"]
        h = 0.5 * h * (1.0 + torch.erf(h / math.sqrt(2.0)))  # exact GELU
        return h @ a["fc2.weight"].T + a["fc2.bias"]

    def adapter_attention(self, x, config):
        """num_adapter_layers bidirectional Qwen3 layers over one region's
        latents, positions 0..n-1, no final norm."""
        cos, sin = q3.rope_cos_sin(config, torch.arange(x.shape[0]))
        for i in range(self.config["num_adapter_layers"]):
            x = qwen3_layer(config, self.adapter, f"attention_layers.{i}.decoder_layer.", x, cos,
                            sin, causal=False)
        return x

    def latents(self, tokens):
        """Adapter outputs of one region [ceil(T/r), D]."""
        pooled = self.pooled_states(tokens)
        D = self.dec_config["hidden_size"]
        if pooled.shape[0] == 0:
            return torch.zeros(0, D, dtype=torch.float64)
        kind = self.config["adapter_type"]
        if kind == "mlp":
            return self.adapter_mlp(pooled)
        if kind == "mlp_attn":  # attention in decoder space, after the MLP
            return self.adapter_attention(self.adapter_mlp(pooled), self.dec_config)
        if kind == "attn_mlp":  # attention in encoder space, before the MLP
            return self.adapter_mlp(self.adapter_attention(pooled, self.enc_config))
        raise ValueError(f"unknown adapter_type {kind}")

    # ---- decoder -------------------------------------------------------------

    def decoder_hidden(self, decoder_ids, region_latents):
        """Final-norm hidden states [L, D] of the spliced prompt: the k-th
        <|memory|> position takes the k-th latent, regions in order; every other
        position keeps its token embedding. Positions 0..L-1, causal."""
        embed = self.dec_weights["embed_tokens.weight"]
        x = embed[torch.tensor(decoder_ids)].clone()
        slots = [i for i, t in enumerate(decoder_ids) if t == self.memory_id]
        rows = torch.cat(region_latents) if region_latents else torch.zeros(0, x.shape[1])
        if len(slots) != rows.shape[0]:
            raise ValueError(f"{len(slots)} <|memory|> positions for {rows.shape[0]} latents")
        for slot, row in zip(slots, rows):
            x[slot] = row
        return q3.forward(self.dec_config, self.dec_weights, x, causal=True)

    def lm_head(self):
        head = self.dec_weights.get("lm_head.weight")
        return self.dec_weights["embed_tokens.weight"] if head is None else head

    def decoder_logits(self, decoder_ids, region_latents):
        """Logits [L, vocab] of the spliced prompt."""
        return self.decoder_hidden(decoder_ids, region_latents) @ self.lm_head().T

    def region_slot_counts(self, decoder_ids):
        """Number of <|memory|> ids between each <|memory_start|> .. <|memory_end|>."""
        counts, inside = [], False
        for t in decoder_ids:
            if t == self.memory_start_id:
                counts.append(0)
                inside = True
            elif t == self.memory_end_id:
                inside = False
            elif t == self.memory_id:
                if not inside:
                    raise ValueError("<|memory|> outside a memory region")
                counts[-1] += 1
        return counts


def qwen3_layer(config, weights, prefix, x, cos, sin, causal):
    """One pre-norm Qwen3 decoder layer, x [n, hidden] -> [n, hidden]."""
    eps = config.get("rms_norm_eps", 1e-6)
    n_heads = config["num_attention_heads"]
    n_kv = config.get("num_key_value_heads", n_heads)
    head_dim = config.get("head_dim", config["hidden_size"] // n_heads)
    n = x.shape[0]
    w = lambda name: weights[prefix + name]  # noqa: E731
    h = q3.rms_norm(x, w("input_layernorm.weight"), eps)
    q = (h @ w("self_attn.q_proj.weight").T).view(n, n_heads, head_dim)
    k = (h @ w("self_attn.k_proj.weight").T).view(n, n_kv, head_dim)
    v = (h @ w("self_attn.v_proj.weight").T).view(n, n_kv, head_dim)
    q = q3.rms_norm(q, w("self_attn.q_norm.weight"), eps)
    k = q3.rms_norm(k, w("self_attn.k_norm.weight"), eps)
    q = q * cos[:, None, :] + q3.rotate_half(q) * sin[:, None, :]
    k = k * cos[:, None, :] + q3.rotate_half(k) * sin[:, None, :]
    k = k.repeat_interleave(n_heads // n_kv, dim=1)
    v = v.repeat_interleave(n_heads // n_kv, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(head_dim)
    if causal:
        scores = scores + torch.full((n, n), float("-inf"), dtype=torch.float64).triu(1)
    attn = torch.einsum("hqk,khd->qhd", scores.softmax(-1), v).reshape(n, n_heads * head_dim)
    x = x + attn @ w("self_attn.o_proj.weight").T
    h = q3.rms_norm(x, w("post_attention_layernorm.weight"), eps)
    gate = h @ w("mlp.gate_proj.weight").T
    up = h @ w("mlp.up_proj.weight").T
    return x + (torch.nn.functional.silu(gate) * up) @ w("mlp.down_proj.weight").T

"""A small Llama (the HF LlamaForCausalLM computation: RMSNorm, rotate-half RoPE, GQA, SwiGLU) in plain
PyTorch, for training the default models; its state dict uses the HF tensor names (formats.md §2.3)."""
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F


@dataclass
class LlamaShape:
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    tie_word_embeddings: bool
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048

    def hf_config(self, bos_id, eos_ids):
        """config.json as Llama 3 checkpoints on the Hub write it (rope_theta + rope_scaling, torch_dtype)."""
        d = asdict(self)
        return {
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            **d,
            "hidden_act": "silu",
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "rope_scaling": None,
            "initializer_range": 0.02,
            "bos_token_id": bos_id,
            "eos_token_id": eos_ids,
            "pad_token_id": None,
            "use_cache": True,
            "torch_dtype": "bfloat16",
        }


class RMSNorm(nn.Module):
    def __init__(self, dim, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x):
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


def rope_cos_sin(positions, head_dim, theta, dtype=torch.float32):
    """cos, sin of shape [..., T, head_dim] for integer positions [..., T] (HF 'default' rope)."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, device=positions.device, dtype=torch.float32) / head_dim))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos().to(dtype), emb.sin().to(dtype)


def rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def apply_rope(x, cos, sin):
    """x [B, heads, T, d]; cos/sin [T, d] or [B, T, d]."""
    if cos.dim() == 3:
        cos, sin = cos[:, None], sin[:, None]
    return x * cos + rotate_half(x) * sin


def repeat_kv(x, n_rep):
    if n_rep == 1:
        return x
    b, h, t, d = x.shape
    return x[:, :, None].expand(b, h, n_rep, t, d).reshape(b, h * n_rep, t, d)


def causal_attention(q, k, v):
    """q [B, nh, T, d], k/v [B, nh, T, d] -> [B, nh, T, d]."""
    if hasattr(F, "scaled_dot_product_attention"):
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    t = q.shape[2]
    scores = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    mask = torch.ones(t, t, dtype=torch.bool, device=q.device).triu(1)
    scores = scores.float().masked_fill(mask, float("-inf"))
    return (scores.softmax(-1).to(v.dtype)) @ v


class Attention(nn.Module):
    def __init__(self, s: LlamaShape, in_features=None):
        super().__init__()
        self.s = s
        in_features = in_features or s.hidden_size
        self.q_proj = nn.Linear(in_features, s.num_attention_heads * s.head_dim, bias=False)
        self.k_proj = nn.Linear(in_features, s.num_key_value_heads * s.head_dim, bias=False)
        self.v_proj = nn.Linear(in_features, s.num_key_value_heads * s.head_dim, bias=False)
        self.o_proj = nn.Linear(s.num_attention_heads * s.head_dim, s.hidden_size, bias=False)

    def qkv(self, x, cos, sin):
        b, t, _ = x.shape
        s = self.s
        q = self.q_proj(x).view(b, t, s.num_attention_heads, s.head_dim).transpose(1, 2)
        k = self.k_proj(x).view(b, t, s.num_key_value_heads, s.head_dim).transpose(1, 2)
        v = self.v_proj(x).view(b, t, s.num_key_value_heads, s.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos.to(q.dtype), sin.to(q.dtype)), apply_rope(k, cos.to(k.dtype), sin.to(k.dtype))
        n_rep = s.num_attention_heads // s.num_key_value_heads
        return q, repeat_kv(k, n_rep), repeat_kv(v, n_rep)

    def forward(self, x, cos, sin):
        b, t, _ = x.shape
        q, k, v = self.qkv(x, cos, sin)
        out = causal_attention(q, k, v)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, hidden, inter):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class DecoderLayer(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.self_attn = Attention(s)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.mlp = MLP(s.hidden_size, s.intermediate_size)

    def forward(self, h, cos, sin):
        h = h + self.self_attn(self.input_layernorm(h), cos, sin)
        return h + self.mlp(self.post_attention_layernorm(h))


class LlamaModel(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.layers = nn.ModuleList([DecoderLayer(s) for _ in range(s.num_hidden_layers)])
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps)


class LlamaForCausalLM(nn.Module):
    def __init__(self, s: LlamaShape):
        super().__init__()
        self.s = s
        self.model = LlamaModel(s)
        self.lm_head = nn.Linear(s.hidden_size, s.vocab_size, bias=False)
        if s.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.reset_parameters()

    def reset_parameters(self, std=0.02):
        for name, p in self.named_parameters():
            if name.endswith("layernorm.weight") or name.endswith("norm.weight"):
                nn.init.ones_(p)
            elif name.endswith(("o_proj.weight", "down_proj.weight")):
                nn.init.normal_(p, std=std / math.sqrt(2 * self.s.num_hidden_layers))
            else:
                nn.init.normal_(p, std=std)

    def forward(self, ids, capture_layers=()):
        """logits [B, T, V]; with capture_layers, (logits, [input of layer k for k in capture_layers]), the
        residual stream entering layer k being HF's hidden_states[k] (what EAGLE-3 fuses)."""
        t = ids.shape[1]
        pos = torch.arange(t, device=ids.device)
        cos, sin = rope_cos_sin(pos, self.s.head_dim, self.s.rope_theta)
        h = self.model.embed_tokens(ids)
        captured = []
        for i, layer in enumerate(self.model.layers):
            if i in capture_layers:
                captured.append(h)
            h = layer(h, cos, sin)
        logits = self.lm_head(self.model.norm(h))
        return (logits, captured) if capture_layers else logits

    def num_parameters(self):
        return sum(p.numel() for p in self.parameters())  # tied weights counted once

    def hf_state_dict(self):
        """Tensors under their HF names; no lm_head.weight when the embeddings are tied."""
        sd = {k: v for k, v in self.state_dict().items()}
        if self.s.tie_word_embeddings:
            sd.pop("lm_head.weight", None)
        return sd

"""EAGLE-3 draft head (formats.md §7.1): fc over the target's low/mid/high hidden states, one decoder layer
whose attention reads concat(input_layernorm(embed), hidden_norm(hidden)), norm, lm_head over a draft
vocabulary with d2t/t2d maps. Trained with training-time test: each step feeds the head's own output
hidden state back, so a chain of k proposals is trained the way it is used at inference (vLLM chain)."""
import json
import math
import os
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from llama import MLP, Attention, LlamaShape, RMSNorm, rope_cos_sin


@dataclass
class Eagle3Shape:
    hidden_size: int
    target_hidden_size: int
    intermediate_size: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    vocab_size: int
    draft_vocab_size: int
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    max_position_embeddings: int = 2048

    def layer_shape(self):
        return LlamaShape(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                          intermediate_size=self.intermediate_size, num_hidden_layers=1,
                          num_attention_heads=self.num_attention_heads, num_key_value_heads=self.num_key_value_heads,
                          head_dim=self.head_dim, tie_word_embeddings=False, rms_norm_eps=self.rms_norm_eps,
                          rope_theta=self.rope_theta, max_position_embeddings=self.max_position_embeddings)

    def hf_config(self, bos_id, eos_ids):
        """config.json in the SGLang/SpecForge EAGLE-3 layout (a 1-layer Llama config + draft keys). No
        eagle_config: the head fuses the default layers (2, L//2, L-3) of the target, which every engine agrees on."""
        return {
            "architectures": ["LlamaForCausalLMEagle3"],
            "model_type": "llama",
            "hidden_size": self.hidden_size,
            "target_hidden_size": self.target_hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": 1,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": self.rms_norm_eps,
            "max_position_embeddings": self.max_position_embeddings,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "attention_bias": False,
            "mlp_bias": False,
            "vocab_size": self.vocab_size,
            "draft_vocab_size": self.draft_vocab_size,
            "tie_word_embeddings": False,
            "bos_token_id": bos_id,
            "eos_token_id": eos_ids,
            "pad_token_id": None,
            "initializer_range": 0.02,
            "use_cache": True,
            "torch_dtype": "bfloat16",
        }

    @staticmethod
    def from_hf_config(c):
        return Eagle3Shape(hidden_size=c["hidden_size"], target_hidden_size=c.get("target_hidden_size", c["hidden_size"]),
                           intermediate_size=c["intermediate_size"], num_attention_heads=c["num_attention_heads"],
                           num_key_value_heads=c["num_key_value_heads"],
                           head_dim=c.get("head_dim", c["hidden_size"] // c["num_attention_heads"]),
                           vocab_size=c["vocab_size"], draft_vocab_size=c.get("draft_vocab_size", c["vocab_size"]),
                           rms_norm_eps=c["rms_norm_eps"], rope_theta=c.get("rope_theta", 10000.0),
                           max_position_embeddings=c["max_position_embeddings"])


def default_aux_layers(num_target_layers):
    """Target layers whose inputs (HF hidden_states[k]) EAGLE-3 fuses: low, mid, high."""
    n = num_target_layers
    return (2, n // 2, n - 3)


class Eagle3MidLayer(nn.Module):
    def __init__(self, s: Eagle3Shape):
        super().__init__()
        ls = s.layer_shape()
        self.hidden_norm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.input_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.self_attn = Attention(ls, in_features=2 * s.hidden_size)
        self.post_attention_layernorm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.mlp = MLP(s.hidden_size, s.intermediate_size)


def context_chain_attention(q, k0, v0, allowed0, chain_k, chain_v):
    """Attention of queries q [B,h,Tq,d] over context keys k0/v0 [B,h,Tk,d] (allowed0 [Tq,Tk] bool) plus,
    for each query, its own chain of earlier draft-step keys chain_k[i]/chain_v[i] [B,h,Tq,d]."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    s0 = (q @ k0.transpose(-1, -2)).float() * scale
    s0 = s0.masked_fill(~allowed0, float("-inf"))
    if chain_k:
        sc = torch.stack([(q * kc).sum(-1) for kc in chain_k], dim=-1).float() * scale
        s0 = torch.cat([s0, sc], dim=-1)
    p = s0.softmax(-1).to(v0.dtype)
    tk = k0.shape[2]
    out = p[..., :tk] @ v0
    for i, vc in enumerate(chain_v):
        out = out + p[..., tk + i, None] * vc
    return out


class Eagle3Draft(nn.Module):
    def __init__(self, s: Eagle3Shape):
        super().__init__()
        self.s = s
        self.embed_tokens = nn.Embedding(s.vocab_size, s.hidden_size)
        self.fc = nn.Linear(3 * s.target_hidden_size, s.hidden_size, bias=False)
        self.midlayer = Eagle3MidLayer(s)
        self.norm = RMSNorm(s.hidden_size, s.rms_norm_eps)
        self.lm_head = nn.Linear(s.hidden_size, s.draft_vocab_size, bias=False)
        self.register_buffer("d2t", torch.zeros(s.draft_vocab_size, dtype=torch.long))
        self.register_buffer("t2d", torch.zeros(s.vocab_size, dtype=torch.bool))
        self.register_buffer("draft_ids", torch.arange(s.draft_vocab_size), persistent=False)
        for name, p in self.named_parameters():
            if name.endswith("norm.weight"):
                nn.init.ones_(p)
            else:
                nn.init.normal_(p, std=0.02)

    def set_vocab(self, draft_ids):
        """draft_ids: ascending target ids of the draft vocabulary; d2t holds offsets (target = draft + d2t)."""
        ids = torch.as_tensor(sorted(draft_ids), dtype=torch.long, device=self.d2t.device)
        assert ids.numel() == self.s.draft_vocab_size
        self.draft_ids = ids
        self.d2t.copy_(ids - torch.arange(ids.numel(), device=ids.device))
        self.t2d.zero_()
        self.t2d[ids] = True

    def load_maps(self):
        self.draft_ids = torch.arange(self.s.draft_vocab_size, device=self.d2t.device) + self.d2t

    def _step(self, tokens, g, positions, k0, v0, allowed0, chain_k, chain_v):
        """One draft step for queries at `positions`; returns (pre-norm output, k, v of these queries). With
        k0 None the queries' own keys are the context (first step over the whole prefix)."""
        m = self.midlayer
        e = self.embed_tokens(tokens)
        x = torch.cat([m.input_layernorm(e), m.hidden_norm(g)], dim=-1)
        cos, sin = rope_cos_sin(positions, self.s.head_dim, self.s.rope_theta)
        q, k, v = m.self_attn.qkv(x, cos, sin)
        if k0 is None:
            attn = context_chain_attention(q, k, v, allowed0, [], [])
        else:
            attn = context_chain_attention(q, k0, v0, allowed0, chain_k + [k], chain_v + [v])
        b, t = tokens.shape
        h = g + m.self_attn.o_proj(attn.transpose(1, 2).reshape(b, t, -1))
        h = h + m.mlp(m.post_attention_layernorm(h))
        return h, k, v

    def logits(self, h):
        return self.lm_head(self.norm(h))

    def ttt_forward(self, ids, aux, steps):
        """Training-time test over a batch: ids [B,T] tokens, aux [B,T,3*Ht] target hidden states.
        Anchor t (0..T-2): step 0 reads (token t+1, target features of t) at position t; step k reads
        (token t+k+1, the head's step k-1 output) at position t+k, attending to the step-0 context keys <= t
        and its own chain. Step k's logits at anchor t predict token t+k+2. Returns [logits_k [B,T-1,Vd]]."""
        b, t = ids.shape
        tn = t - 1
        pad = torch.zeros(b, steps, dtype=ids.dtype, device=ids.device)
        ids_p = torch.cat([ids, pad], dim=1)
        g = self.fc(aux[:, :tn])
        pos = torch.arange(tn, device=ids.device)
        allowed0 = torch.ones(tn, tn, dtype=torch.bool, device=ids.device).tril()
        outs, chain_k, chain_v = [], [], []
        k0 = v0 = None
        for k in range(steps):
            tokens = ids_p[:, k + 1:k + 1 + tn]
            h, kk, vv = self._step(tokens, g, pos + k, k0, v0, allowed0, chain_k, chain_v)
            if k == 0:
                k0, v0 = kk, vv
            else:
                chain_k.append(kk)
                chain_v.append(vv)
            outs.append(self.logits(h))
            g = h
        return outs

    @torch.no_grad()
    def propose(self, next_tokens, aux, k):
        """Greedy chain of k target-vocabulary ids for one sequence. next_tokens [1,n] = x_1..x_n (the
        prefix shifted by one, ending with the target's newest token), aux [1,n,3*Ht] target features of
        positions 0..n-1."""
        n = next_tokens.shape[1]
        dev = next_tokens.device
        g = self.fc(aux)
        allowed = torch.ones(n, n, dtype=torch.bool, device=dev).tril()
        h, k0, v0 = self._step(next_tokens, g, torch.arange(n, device=dev), None, None, allowed, [], [])
        h = h[:, -1:]
        out = []
        chain_k, chain_v = [], []
        row = torch.ones(1, n, dtype=torch.bool, device=dev)
        for j in range(k):
            d = self.logits(h)[0, -1].argmax().item()
            tid = d + int(self.d2t[d])
            out.append(tid)
            if j == k - 1:
                break
            tok = torch.tensor([[tid]], device=dev)
            h, kk, vv = self._step(tok, h, torch.tensor([n - 1 + j + 1], device=dev), k0, v0, row, chain_k, chain_v)
            chain_k.append(kk)
            chain_v.append(vv)
        return out

    def hf_state_dict(self):
        return {k: v for k, v in self.state_dict().items()}


def load_eagle3(path, device="cpu", dtype=torch.float32):
    """An EAGLE-3 head from a checkpoint directory (config.json + model.safetensors)."""
    from safetensors.torch import load_file
    with open(os.path.join(path, "config.json")) as f:
        cfg = json.load(f)
    m = Eagle3Draft(Eagle3Shape.from_hf_config(cfg))
    sd = load_file(os.path.join(path, "model.safetensors"))
    missing, unexpected = m.load_state_dict(sd, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    m.to(device=device)
    for p in m.parameters():
        p.data = p.data.to(dtype)
    m.load_maps()
    return m.eval()

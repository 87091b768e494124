"""Measurements of the saved checkpoints through Hugging Face transformers: held-out perplexity, greedy
samples, greedy acceptance of the draft model and the EAGLE-3 head against the target, and the greedy
reference fixture (fp32 compute from the bf16 files, TF32 off, eager attention)."""
import torch
import torch.nn.functional as F


def disable_tf32():
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.set_float32_matmul_precision("highest")


def load_hf(path, device):
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation="eager")
    return model.to(device).eval()


@torch.no_grad()
def hf_perplexity(model, rows, batch_size=16):
    device = next(model.parameters()).device
    total, n = 0.0, 0
    for i in range(0, rows.shape[0], batch_size):
        b = rows[i:i + batch_size].to(device)
        logits = model(b[:, :-1], use_cache=False).logits.float()
        total += F.cross_entropy(logits.reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1), reduction="sum").item()
        n += b[:, 1:].numel()
    loss = total / n
    return {"heldout_loss": loss, "heldout_perplexity": float(torch.tensor(loss).exp()), "heldout_tokens": n}


@torch.no_grad()
def greedy(model, prompt_ids, max_new, eos_ids):
    """Greedy continuation, recomputing the whole prefix each step (no cache); stops after an eos id, which
    is included in the output. Returns (output ids, top-1 minus top-2 logit margin of each step)."""
    device = next(model.parameters()).device
    ids = list(prompt_ids)
    out, margins = [], []
    for _ in range(max_new):
        logits = model(torch.tensor([ids], device=device), use_cache=False).logits[0, -1].float()
        top = logits.topk(2)
        nxt = int(top.indices[0])
        margins.append(float(top.values[0] - top.values[1]))
        out.append(nxt)
        ids.append(nxt)
        if nxt in eos_ids:
            break
    return out, margins


@torch.no_grad()
def propose_with_draft_model(draft, prefix, k):
    device = next(draft.parameters()).device
    ids = list(prefix)
    out = []
    for _ in range(k):
        nxt = int(draft(torch.tensor([ids], device=device), use_cache=False).logits[0, -1].argmax())
        out.append(nxt)
        ids.append(nxt)
    return out


def make_eagle_proposer(target, head, aux_layers):
    device = next(target.parameters()).device

    @torch.no_grad()
    def propose(prefix, k):
        # The target has seen x_0..x_{n-1} and produced x_n = prefix[-1]; the head reads (x_{t+1}, features of t).
        ids = torch.tensor([prefix], device=device)
        hs = target(ids[:, :-1], use_cache=False, output_hidden_states=True).hidden_states
        aux = torch.cat([hs[i] for i in aux_layers], dim=-1)
        return head.propose(ids[:, 1:], aux, k)

    return propose


def acceptance(references, propose, k):
    """Greedy speculative decoding replayed against the target's greedy continuations. references: list of
    (prompt_len, full token list = prompt + target greedy continuation). Each step proposes k tokens,
    accepts the longest prefix equal to the target's tokens, plus the target's own next token (bonus).
    Mean acceptance length = tokens emitted per step (vLLM: 1 + accepted / drafts)."""
    steps, emitted, accepted = 0, 0, 0
    per_position = [0] * k
    for prompt_len, ref in references:
        pos = prompt_len
        while pos < len(ref):
            prop = propose(ref[:pos], k)
            a = 0
            while a < k and pos + a < len(ref) and prop[a] == ref[pos + a]:
                per_position[a] += 1
                a += 1
            n = min(a + 1, len(ref) - pos)
            emitted += n
            accepted += a
            steps += 1
            pos += n
    return {"k": k, "mean_acceptance_length": emitted / steps, "steps": steps, "accepted_tokens": accepted,
            "acceptance_rate_per_position": [p / steps for p in per_position], "prompts": len(references)}

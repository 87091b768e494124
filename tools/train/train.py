"""Training loops: causal LM (optionally distilled from a teacher's logits) and the EAGLE-3 head on a frozen
target's hidden states with training-time test."""
import math
import time

import torch
import torch.nn.functional as F


def lr_at(step, steps, lr, warmup):
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress)))


class StepBudget:
    """Keeps a stage inside its time budget: after timing steps 10..40, lowers the step count (and so the
    LR schedule's length) if the planned steps would not fit. A safety net; normally it changes nothing."""

    def __init__(self, steps, max_seconds, log):
        self.steps, self.max_seconds, self.log = steps, max_seconds, log
        self.t10 = None
        self.t0 = time.time()

    def update(self, step):
        if self.max_seconds is None or step not in (10, 40):
            return self.steps
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        now = time.time()
        if step == 10:
            self.t10 = now
        else:
            per_step = (now - self.t10) / 30
            fit = 40 + int((self.max_seconds - (now - self.t0)) / per_step)
            if fit < self.steps:
                fit = max(fit, 41)
                self.log(f"  {per_step * 1000:.1f} ms/step: {self.steps} steps would take "
                         f"{(now - self.t0) + per_step * (self.steps - 40):.0f}s > {self.max_seconds}s; using {fit} steps")
                self.steps = fit
        return self.steps


def make_optimizer(model, lr, weight_decay):
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    kwargs = {"lr": lr, "betas": (0.9, 0.95), "eps": 1e-8}
    if torch.cuda.is_available():
        kwargs["fused"] = True
    return torch.optim.AdamW(groups, **kwargs)


def autocast(device):
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", dtype=torch.bfloat16, enabled=False)


def soft_ce(logits, probs):
    return -(probs * F.log_softmax(logits.float(), dim=-1)).sum(-1)


def train_lm(model, sampler, steps, lr, warmup, weight_decay=0.1, teacher=None, kd_weight=0.0, log=print,
             log_every=100, clip=1.0, max_seconds=None):
    """Next-token training; with a teacher, the loss is (1-kd)·CE(data) + kd·CE(teacher probs).
    Returns a dict of statistics (final loss averaged over the last 50 steps, tokens seen, seconds)."""
    device = next(model.parameters()).device
    opt = make_optimizer(model, lr, weight_decay)
    model.train()
    t0 = time.time()
    tokens = 0
    recent = []
    history = []
    budget = StepBudget(steps, max_seconds, log)
    step = 0
    while step < steps:
        steps = budget.update(step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        batch = sampler.next()
        x, y = batch[:, :-1], batch[:, 1:]
        with autocast(device):
            logits = model(x)
        ce = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
        loss = ce
        if teacher is not None and kd_weight > 0:
            with torch.no_grad(), autocast(device):
                tlogits = teacher(x)
            kd = soft_ce(logits, F.softmax(tlogits.float(), dim=-1)).mean()
            loss = (1 - kd_weight) * ce + kd_weight * kd
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
        opt.step()
        tokens += y.numel()
        recent.append(ce.item() if (step % 10 == 0 or step >= steps - 50) else None)
        if step % log_every == 0 or step == steps - 1:
            el = time.time() - t0
            history.append({"step": step, "ce": round(ce.item(), 4), "loss": round(loss.item(), 4)})
            log(f"  step {step:5d}/{steps} ce {ce.item():.4f} loss {loss.item():.4f} lr {opt.param_groups[0]['lr']:.2e} "
                f"{tokens / max(el, 1e-9) / 1e6:.2f} Mtok/s {el:.0f}s")
        step += 1
    last = [v for v in recent[-50:] if v is not None]
    return {"steps": steps, "training_tokens": tokens, "final_train_loss": sum(last) / len(last),
            "train_seconds": time.time() - t0, "epochs_seen": sampler.epochs, "history": history}


@torch.no_grad()
def eval_lm_loss(model, rows, batch_size=32):
    device = next(model.parameters()).device
    model.eval()
    total, n = 0.0, 0
    for i in range(0, rows.shape[0], batch_size):
        b = rows[i:i + batch_size].to(device)
        with autocast(device):
            logits = model(b[:, :-1])
        total += F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), b[:, 1:].reshape(-1),
                                 reduction="sum").item()
        n += b[:, 1:].numel()
    model.train()
    return total / n


def eagle_targets(target_logits, draft_ids, t2d, k, tn):
    """Soft labels for TTT step k: the target's distribution at position t+k+1 (which predicts token t+k+2)
    restricted to the draft vocabulary, and a mask (in range, target argmax inside the draft vocabulary)."""
    b, t, _ = target_logits.shape
    lo = k + 1
    hi = min(lo + tn, t)
    tl = target_logits[:, lo:hi].float()
    valid_len = hi - lo
    probs = F.softmax(tl[..., draft_ids], dim=-1)
    mask = t2d[tl.argmax(-1)]
    top = tl.argmax(-1)
    if valid_len < tn:
        pad = tn - valid_len
        probs = F.pad(probs, (0, 0, 0, pad))
        mask = F.pad(mask, (0, pad), value=False)
        top = F.pad(top, (0, pad))
    return probs, mask, top


def train_eagle3(head, target, aux_layers, sampler, steps, lr, warmup, ttt_steps=4, step_decay=0.8,
                 weight_decay=0.0, log=print, log_every=100, clip=1.0, max_seconds=None):
    """The head learns the frozen target's next-token distributions (restricted to its draft vocabulary)
    from the target's hidden states, for ttt_steps chained steps weighted step_decay**k."""
    device = next(head.parameters()).device
    head.embed_tokens.weight.requires_grad_(False)  # a copy of the target's embedding, kept as is
    opt = make_optimizer(head, lr, weight_decay)
    head.train()
    t0 = time.time()
    tokens = 0
    recent = []
    history = []
    weights = [step_decay ** k for k in range(ttt_steps)]
    budget = StepBudget(steps, max_seconds, log)
    step = 0
    while step < steps:
        steps = budget.update(step)
        for g in opt.param_groups:
            g["lr"] = lr_at(step, steps, lr, warmup)
        ids = sampler.next()
        with torch.no_grad(), autocast(device):
            tlogits, captured = target(ids, capture_layers=aux_layers)
            aux = torch.cat(captured, dim=-1).float()
        with autocast(device):
            outs = head.ttt_forward(ids, aux, ttt_steps)
        tn = ids.shape[1] - 1
        loss = 0.0
        accs = []
        logging = step % log_every == 0 or step == steps - 1
        for k, logits in enumerate(outs):
            probs, mask, top = eagle_targets(tlogits, head.draft_ids, head.t2d, k, tn)
            l = soft_ce(logits, probs)
            m = mask.float()
            loss = loss + weights[k] * (l * m).sum() / m.sum().clamp(min=1)
            if logging:
                pred = head.draft_ids[logits.argmax(-1)]
                accs.append(((pred == top).float() * m).sum().item() / max(m.sum().item(), 1))
        loss = loss / sum(weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_([p for p in head.parameters() if p.requires_grad], clip)
        opt.step()
        tokens += ids.numel()
        if step >= steps - 50:
            recent.append(loss.item())
        if logging:
            el = time.time() - t0
            history.append({"step": step, "loss": round(loss.item(), 4), "top1_per_step": [round(a, 4) for a in accs]})
            log(f"  step {step:5d}/{steps} loss {loss.item():.4f} acc/step {' '.join(f'{a:.3f}' for a in accs)} "
                f"{tokens / max(el, 1e-9) / 1e6:.2f} Mtok/s {el:.0f}s")
        step += 1
    return {"steps": steps, "training_tokens": tokens, "final_train_loss": sum(recent) / len(recent),
            "train_seconds": time.time() - t0, "ttt_steps": ttt_steps, "history": history}


@torch.no_grad()
def eval_eagle3(head, target, aux_layers, rows, ttt_steps=4, batch_size=16):
    """Teacher-forced top-1 agreement with the target's argmax for each chained step, on held-out rows."""
    device = next(head.parameters()).device
    head.eval()
    hit = [0.0] * ttt_steps
    cnt = [0.0] * ttt_steps
    for i in range(0, rows.shape[0], batch_size):
        ids = rows[i:i + batch_size].to(device)
        with autocast(device):
            tlogits, captured = target(ids, capture_layers=aux_layers)
            outs = head.ttt_forward(ids, torch.cat(captured, dim=-1).float(), ttt_steps)
        tn = ids.shape[1] - 1
        for k, logits in enumerate(outs):
            _, mask, top = eagle_targets(tlogits, head.draft_ids, head.t2d, k, tn)
            valid = torch.zeros_like(mask)
            valid[:, :tn - k] = True  # anchors t with a label at t+k+1 <= T-1
            pred = head.draft_ids[logits.argmax(-1)]
            hit[k] += ((pred == top) & valid).sum().item()
            cnt[k] += valid.sum().item()
    head.train()
    return [h / max(c, 1) for h, c in zip(hit, cnt)]

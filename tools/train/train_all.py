#!/usr/bin/env python3
"""The whole recipe for tachyon's embedded default models, from nothing: corpus -> tokenizer -> target
(tachyon-tiny) -> draft (tachyon-tiny-draft, distilled) -> EAGLE-3 head (tachyon-tiny-eagle3) ->
measurements through transformers -> results.json, the greedy fixture and models/README.md.

    python3 train_all.py --out /tmp/out            # the real run (one H100, a few minutes)
    python3 train_all.py --out /tmp/out --smoke    # the same path with tiny step counts

Writes OUT/models/<name>/..., OUT/models/README.md, OUT/results.json, OUT/greedy.json.
"""
import argparse
import json
import os
import platform
import random
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import build_tokenizer as bt  # noqa: E402
import checkpoint as ckpt  # noqa: E402
import corpus  # noqa: E402
import data  # noqa: E402
import evaluate  # noqa: E402
import train  # noqa: E402
from eagle3 import Eagle3Draft, Eagle3Shape, default_aux_layers, load_eagle3  # noqa: E402
from llama import LlamaForCausalLM, LlamaShape  # noqa: E402

TARGET = "tachyon-tiny"
DRAFT = "tachyon-tiny-draft"
EAGLE = "tachyon-tiny-eagle3"

TARGET_SHAPE = LlamaShape(vocab_size=bt.VOCAB_SIZE, hidden_size=256, intermediate_size=768, num_hidden_layers=8,
                          num_attention_heads=8, num_key_value_heads=2, head_dim=32, tie_word_embeddings=False)
DRAFT_SHAPE = LlamaShape(vocab_size=bt.VOCAB_SIZE, hidden_size=128, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True)
EAGLE_SHAPE = Eagle3Shape(hidden_size=256, target_hidden_size=256, intermediate_size=768, num_attention_heads=8,
                          num_key_value_heads=2, head_dim=32, vocab_size=bt.VOCAB_SIZE, draft_vocab_size=2048)

PRESETS = {
    "full": dict(train_samples=1_000_000, heldout_samples=20_000, tokenizer_samples=300_000, seq_len=512,
                 target_steps=2800, target_batch=64, target_lr=2e-3, target_warmup=150, target_max_seconds=170,
                 draft_steps=2500, draft_batch=64, draft_lr=3e-3, draft_warmup=100, kd_weight=0.7, draft_max_seconds=100,
                 eagle_steps=2200, eagle_batch=48, eagle_lr=2e-3, eagle_warmup=100, ttt_steps=4, eagle_max_seconds=140,
                 ppl_rows=256, eagle_eval_rows=64, accept_prompts=40, accept_max_new=64, log_every=250),
    "cpu": dict(train_samples=150_000, heldout_samples=2000, tokenizer_samples=150_000, seq_len=128,
                target_steps=3, target_batch=4, target_lr=2e-3, target_warmup=1,
                draft_steps=3, draft_batch=4, draft_lr=3e-3, draft_warmup=1, kd_weight=0.7,
                eagle_steps=3, eagle_batch=4, eagle_lr=2e-3, eagle_warmup=1, ttt_steps=4,
                ppl_rows=4, eagle_eval_rows=4, accept_prompts=4, accept_max_new=8, log_every=1),
    "smoke": dict(train_samples=200_000, heldout_samples=4000, tokenizer_samples=200_000, seq_len=512,
                  target_steps=60, target_batch=64, target_lr=2e-3, target_warmup=10,
                  draft_steps=40, draft_batch=64, draft_lr=3e-3, draft_warmup=5, kd_weight=0.7,
                  eagle_steps=40, eagle_batch=32, eagle_lr=2e-3, eagle_warmup=5, ttt_steps=4,
                  ppl_rows=16, eagle_eval_rows=8, accept_prompts=4, accept_max_new=16, log_every=10),
}
SEED = 1234
TRAIN_CORPUS_SEED = corpus.TRAIN_CORPUS_SEED
HELDOUT_CORPUS_SEED = corpus.HELDOUT_CORPUS_SEED
SHARD_BYTES = 12_000_000  # save_pretrained's "12MB"
ACCEPT_K = 4
FIXTURE_MAX_NEW = 24

SAMPLE_PROMPTS = [
    {"kind": "chat", "messages": [{"role": "user", "content": "What is the battery level of Kestrel?"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "How do I calibrate the lidar?"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "What is 7 plus 5?"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "How much GPU memory is free on the Jetson Thor?"}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "Tell me a short story about a robot named Pico."}]},
    {"kind": "chat", "messages": [{"role": "user", "content": "What is speculative decoding?"}]},
    {"kind": "text", "text": "Once upon a time, there was"},
    {"kind": "text", "text": "[08:15:02] Kestrel: battery="},
    {"kind": "text", "text": "Q: What day comes after Friday?\nA:"},
]


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.cuda.manual_seed_all(seed)


def prompt_text(sample, rng):
    """A held-out prompt: a chat up to its first user turn with the generation prompt (without the BOS the
    tokenizer adds), or the first few words of a plain text."""
    if sample["kind"] == "chat":
        msgs = []
        for m in sample["messages"]:
            msgs.append(m)
            if m["role"] == "user":
                break
        return bt.render_chat(msgs, add_generation_prompt=True, bos=False), msgs
    words = sample["text"].split(" ")
    return " ".join(words[:rng.randint(3, 9)]), None


def heldout_prompts(heldout, n_chat, n_text, rng, skip=0):
    chats = [s for s in heldout if s["kind"] == "chat"][skip:skip + n_chat]
    texts = [s for s in heldout if s["kind"] == "text"][skip:skip + n_text]
    out = []
    for s in [x for pair in zip(chats, texts) for x in pair] + chats[len(texts):] + texts[len(chats):]:
        text, msgs = prompt_text(s, rng)
        out.append({"kind": s["kind"], "text": text, "messages": msgs})
    return out


def sample_prompt_text(p):
    return bt.render_chat(p["messages"], add_generation_prompt=True, bos=False) if p["kind"] == "chat" else p["text"]


def save_llama(model, shape, out_dir, tok, shard_bytes):
    ids = bt.special_ids(tok)
    eos = [ids[bt.EOT_TEXT], ids[bt.EOT]]
    sd = model.hf_state_dict()
    files = ckpt.save_safetensors({k: sd[k] for k in ckpt.hf_order(sd)}, out_dir, shard_bytes)
    ckpt.write_json(os.path.join(out_dir, "config.json"), shape.hf_config(ids[bt.BOS], eos))
    ckpt.write_json(os.path.join(out_dir, "generation_config.json"),
                    ckpt.generation_config(ids[bt.BOS], eos, ids[bt.EOT_TEXT]))
    bt.write_tokenizer(tok, out_dir)
    return files


def bf16_copy(model, shape):
    """The model as its saved bf16 weights (what engines serve), for teaching and features."""
    m = LlamaForCausalLM(shape).to(next(model.parameters()).device)
    m.load_state_dict(model.state_dict())
    return m.to(torch.bfloat16).eval().requires_grad_(False)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True)
    ap.add_argument("--smoke", action="store_true", help="tiny step counts, same code path")
    ap.add_argument("--preset", choices=sorted(PRESETS), help="full (default), smoke, or cpu (a local test)")
    ap.add_argument("--processes", type=int, default=min(16, os.cpu_count() or 1))
    for k in ("target_steps", "draft_steps", "eagle_steps", "train_samples"):
        ap.add_argument("--" + k.replace("_", "-"), type=int)
    args = ap.parse_args()
    preset = args.preset or ("smoke" if args.smoke else "full")
    cfg = dict(PRESETS[preset])
    for k in ("target_steps", "draft_steps", "eagle_steps", "train_samples"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t_start = time.time()
    stages = {}
    models_dir = os.path.join(args.out, "models")
    os.makedirs(models_dir, exist_ok=True)
    seed_everything(SEED)
    torch.backends.cuda.matmul.allow_tf32 = True
    log(f"preset {preset} on {device} "
        f"({torch.cuda.get_device_name() if device.type == 'cuda' else platform.processor()}): {cfg}")

    # ---- corpus
    t = time.time()
    train_samples = corpus.generate_shards(TRAIN_CORPUS_SEED, cfg["train_samples"], 64, args.processes)
    train_keys = set(corpus.sample_key(s) for s in train_samples)
    heldout_all = corpus.generate_shards(HELDOUT_CORPUS_SEED, cfg["heldout_samples"], 8, args.processes)
    heldout = [s for s in heldout_all if corpus.sample_key(s) not in train_keys]
    del train_keys
    stages["corpus"] = time.time() - t
    log(f"corpus: {len(train_samples)} train samples, {len(heldout)} held-out "
        f"({len(heldout_all) - len(heldout)} dropped as duplicates of training samples) in {stages['corpus']:.1f}s")

    # ---- tokenizer
    t = time.time()
    bt.check_chat_template()
    tok = bt.train_tokenizer(bt.sample_plain(s) for s in train_samples[:cfg["tokenizer_samples"]])
    special = bt.special_ids(tok)
    eos_ids = [special[bt.EOT_TEXT], special[bt.EOT]]
    train_stream, train_starts = data.encode_samples(tok, train_samples)
    held_stream, held_starts = data.encode_samples(tok, heldout)
    train_rows = data.pack_rows(train_stream, train_starts, cfg["seq_len"] + 1)
    held_rows = torch.from_numpy(data.pack_rows(held_stream, held_starts, cfg["seq_len"] + 1).astype(np.int64))
    counts = np.bincount(train_stream, minlength=bt.VOCAB_SIZE)
    chars = sum(len(bt.sample_text(s)) for s in train_samples[:20000])
    toks20k = int(train_starts[20000]) if len(train_starts) > 20000 else len(train_stream)
    stages["tokenizer_and_encoding"] = time.time() - t
    log(f"tokenizer: {tok.get_vocab_size()} ids, specials {special}; train stream {len(train_stream)} tokens -> "
        f"{train_rows.shape[0]} rows of {cfg['seq_len'] + 1}; held-out {len(held_stream)} tokens, "
        f"{held_rows.shape[0]} rows ({stages['tokenizer_and_encoding']:.1f}s)")
    results = {
        "recipe": {"seed": SEED, "train_corpus_seed": TRAIN_CORPUS_SEED, "heldout_corpus_seed": HELDOUT_CORPUS_SEED,
                   "preset": preset, "config": cfg,
                   "command": "cd tools/train && python3 train_all.py --out /tmp/out" + ("" if preset == "full" else f" --preset {preset}")},
        "corpus": {"train_samples": len(train_samples), "heldout_samples": len(heldout),
                   "train_tokens": int(len(train_stream)), "heldout_tokens": int(len(held_stream)),
                   "train_rows": int(train_rows.shape[0]), "heldout_rows": int(held_rows.shape[0]),
                   "seq_len": cfg["seq_len"],
                   "chat_fraction": sum(s["kind"] == "chat" for s in train_samples) / len(train_samples)},
        "tokenizer": {"type": "byte-level BPE (Llama 3 pre-tokenizer, ignore_merges)", "vocab_size": bt.VOCAB_SIZE,
                      "special_tokens": special, "bos_token": bt.BOS, "eos_token": bt.EOT,
                      "eos_token_ids": eos_ids, "chat_template": bt.CHAT_TEMPLATE,
                      "chars_per_token": chars / max(1, toks20k)},
        "models": {},
        "checks": {},
    }
    del train_samples

    # ---- target
    t = time.time()
    seed_everything(SEED)
    target = LlamaForCausalLM(TARGET_SHAPE).to(device)
    log(f"target {TARGET}: {target.num_parameters():,} parameters")
    sampler = data.RowSampler(train_rows, cfg["target_batch"], SEED, device)
    stats = train.train_lm(target, sampler, cfg["target_steps"], cfg["target_lr"], cfg["target_warmup"], log=log,
                           log_every=cfg["log_every"], max_seconds=cfg.get("target_max_seconds"))
    target_dir = os.path.join(models_dir, TARGET)
    files = save_llama(target, TARGET_SHAPE, target_dir, tok, SHARD_BYTES)
    stages["target"] = time.time() - t
    log(f"target done: final train loss {stats['final_train_loss']:.4f}, {stats['training_tokens']:,} tokens, "
        f"{stats['train_seconds']:.0f}s; files {files}")
    results["models"][TARGET] = {"role": "target", "architecture": "LlamaForCausalLM",
                                 "config": TARGET_SHAPE.hf_config(special[bt.BOS], eos_ids),
                                 "parameters": target.num_parameters(),
                                 "training": {k: v for k, v in stats.items()},
                                 "optimizer": {"name": "AdamW", "lr": cfg["target_lr"], "warmup": cfg["target_warmup"],
                                               "schedule": "cosine to 10%", "batch_rows": cfg["target_batch"],
                                               "weight_decay": 0.1, "betas": [0.9, 0.95], "precision": "bf16 autocast"}}
    teacher = bf16_copy(target, TARGET_SHAPE)
    del target

    # ---- draft (distilled from the bf16 target)
    t = time.time()
    seed_everything(SEED + 1)
    draft = LlamaForCausalLM(DRAFT_SHAPE).to(device)
    log(f"draft {DRAFT}: {draft.num_parameters():,} parameters")
    sampler = data.RowSampler(train_rows, cfg["draft_batch"], SEED + 1, device)
    stats = train.train_lm(draft, sampler, cfg["draft_steps"], cfg["draft_lr"], cfg["draft_warmup"], teacher=teacher,
                           kd_weight=cfg["kd_weight"], log=log, log_every=cfg["log_every"],
                           max_seconds=cfg.get("draft_max_seconds"))
    draft_dir = os.path.join(models_dir, DRAFT)
    files = save_llama(draft, DRAFT_SHAPE, draft_dir, tok, None)
    stages["draft"] = time.time() - t
    log(f"draft done: final train CE {stats['final_train_loss']:.4f} ({stats['train_seconds']:.0f}s); files {files}")
    results["models"][DRAFT] = {"role": "draft model", "architecture": "LlamaForCausalLM",
                                "config": DRAFT_SHAPE.hf_config(special[bt.BOS], eos_ids),
                                "parameters": draft.num_parameters(),
                                "training": stats,
                                "optimizer": {"name": "AdamW", "lr": cfg["draft_lr"], "warmup": cfg["draft_warmup"],
                                              "schedule": "cosine to 10%", "batch_rows": cfg["draft_batch"],
                                              "loss": f"{1 - cfg['kd_weight']:.1f} x CE(corpus) + {cfg['kd_weight']:.1f} x "
                                                      "CE(target bf16 probabilities)"}}
    del draft

    # ---- EAGLE-3 head (on the frozen bf16 target's hidden states)
    t = time.time()
    seed_everything(SEED + 2)
    aux_layers = default_aux_layers(TARGET_SHAPE.num_hidden_layers)
    draft_vocab = sorted(np.argsort(-counts, kind="stable")[:EAGLE_SHAPE.draft_vocab_size].tolist())
    coverage = counts[draft_vocab].sum() / counts.sum()
    head = Eagle3Draft(EAGLE_SHAPE).to(device)
    head.set_vocab(draft_vocab)
    with torch.no_grad():
        head.embed_tokens.weight.copy_(teacher.model.embed_tokens.weight.float())
    results["checks"]["eagle3_chain_equals_training_time_test"] = _self_check_eagle(head, teacher, aux_layers, device)
    trainable = sum(p.numel() for n, p in head.named_parameters() if n != "embed_tokens.weight")
    log(f"eagle3 {EAGLE}: {trainable:,} trainable parameters (+ {head.embed_tokens.weight.numel():,} frozen embedding), "
        f"aux layers {aux_layers}, draft vocab {len(draft_vocab)} ids covering {coverage:.3%} of training tokens")
    sampler = data.RowSampler(train_rows, cfg["eagle_batch"], SEED + 2, device)
    stats = train.train_eagle3(head, teacher, aux_layers, sampler, cfg["eagle_steps"], cfg["eagle_lr"],
                               cfg["eagle_warmup"], ttt_steps=cfg["ttt_steps"], log=log, log_every=cfg["log_every"],
                               max_seconds=cfg.get("eagle_max_seconds"))
    top1 = train.eval_eagle3(head, teacher, aux_layers, held_rows[:cfg["eagle_eval_rows"]], cfg["ttt_steps"])
    eagle_dir = os.path.join(models_dir, EAGLE)
    files = ckpt.save_safetensors(head.hf_state_dict(), eagle_dir)
    ckpt.write_json(os.path.join(eagle_dir, "config.json"), EAGLE_SHAPE.hf_config(special[bt.BOS], eos_ids))
    stages["eagle3"] = time.time() - t
    log(f"eagle3 done: final loss {stats['final_train_loss']:.4f}, held-out teacher-forced top-1 per step "
        f"{[round(x, 3) for x in top1]} ({stats['train_seconds']:.0f}s); files {files}")
    results["models"][EAGLE] = {"role": "EAGLE-3 head for " + TARGET, "architecture": "LlamaForCausalLMEagle3",
                                "config": EAGLE_SHAPE.hf_config(special[bt.BOS], eos_ids),
                                "parameters": trainable + head.embed_tokens.weight.numel(),
                                "trainable_parameters": trainable,
                                "aux_hidden_state_layers": list(aux_layers),
                                "draft_vocab_coverage_of_training_tokens": float(coverage),
                                "tensors": {k: [list(v.shape), str(ckpt.to_storage(v).dtype).replace("torch.", "")]
                                            for k, v in head.hf_state_dict().items()},
                                "training": stats,
                                "heldout_teacher_forced_top1_per_step": top1,
                                "optimizer": {"name": "AdamW", "lr": cfg["eagle_lr"], "warmup": cfg["eagle_warmup"],
                                              "schedule": "cosine to 10%", "batch_rows": cfg["eagle_batch"],
                                              "loss": "soft CE against the target's distribution restricted to the "
                                                      "draft vocabulary, TTT steps weighted 0.8^k"}}
    del head, teacher
    torch.cuda.empty_cache()

    # ---- measurements through transformers on the saved files
    t = time.time()
    evaluate.disable_tf32()
    results["checks"].update(_check_transformers(target_dir, tok, held_rows, device, results))
    hf_target = evaluate.load_hf(target_dir, device)
    hf_draft = evaluate.load_hf(draft_dir, device)
    eagle = load_eagle3(eagle_dir, device=device, dtype=torch.float32)
    ppl_rows = held_rows[:cfg["ppl_rows"]]
    for name, m in ((TARGET, hf_target), (DRAFT, hf_draft)):
        results["models"][name].update(evaluate.hf_perplexity(m, ppl_rows))
        results["models"][name]["samples"] = []
        for p in SAMPLE_PROMPTS:
            text = sample_prompt_text(p)
            out, _ = evaluate.greedy(m, tok.encode(text).ids, 48, eos_ids)
            results["models"][name]["samples"].append({"prompt": p.get("messages") or text, "kind": p["kind"],
                                                       "output": tok.decode(out, skip_special_tokens=True),
                                                       "stopped_at_eos": bool(out and out[-1] in eos_ids)})
        log(f"{name}: held-out perplexity {results['models'][name]['heldout_perplexity']:.3f}")
    rng = random.Random(SEED)
    accept_prompts = heldout_prompts(heldout, cfg["accept_prompts"] // 2, cfg["accept_prompts"] - cfg["accept_prompts"] // 2,
                                     rng, skip=100)
    references = []
    for p in accept_prompts:
        ids = tok.encode(p["text"]).ids
        out, _ = evaluate.greedy(hf_target, ids, cfg["accept_max_new"], eos_ids)
        references.append((len(ids), ids + out))
    acc_draft = evaluate.acceptance(references, lambda prefix, k: evaluate.propose_with_draft_model(hf_draft, prefix, k),
                                    ACCEPT_K)
    acc_eagle = evaluate.acceptance(references, evaluate.make_eagle_proposer(hf_target, eagle, aux_layers), ACCEPT_K)
    for name, acc in ((DRAFT, acc_draft), (EAGLE, acc_eagle)):
        acc["max_new_tokens"] = cfg["accept_max_new"]
        results["models"][name]["acceptance"] = acc
        log(f"{name}: mean acceptance length at k={ACCEPT_K}: {acc['mean_acceptance_length']:.3f} "
            f"(per position {[round(x, 3) for x in acc['acceptance_rate_per_position']]}, {acc['steps']} steps)")
    stages["evaluation"] = time.time() - t

    # ---- greedy fixture
    t = time.time()
    fixture_prompts = heldout_prompts(heldout, 12, 8, random.Random(SEED + 7), skip=0)
    fixture = {"about": "Greedy continuations by transformers of held-out prompts, from the saved bf16 checkpoints "
                        "loaded with dtype float32 (fp32 compute, TF32 off, eager attention, no KV cache). prompt_ids "
                        "are tokenizer.encode(prompt, add_special_tokens=True) (BOS first); output_ids are the new "
                        "tokens, ending with the eos id when generation stopped there; min_logit_margin is the "
                        "smallest top-1 minus top-2 logit gap over the steps.",
               "max_new_tokens": FIXTURE_MAX_NEW, "eos_token_ids": eos_ids,
               "versions": _versions(), "target": [], "draft": []}
    for name, key, m in ((TARGET, "target", hf_target), (DRAFT, "draft", hf_draft)):
        for p in fixture_prompts:
            ids = tok.encode(p["text"], add_special_tokens=True).ids
            out, margins = evaluate.greedy(m, ids, FIXTURE_MAX_NEW, eos_ids)
            fixture[key].append({"prompt": p["text"], "kind": p["kind"], "prompt_ids": ids, "output_ids": out,
                                 "output_text": tok.decode(out, skip_special_tokens=True),
                                 "stopped_at_eos": bool(out and out[-1] in eos_ids),
                                 "min_logit_margin": min(margins), "logit_margins": [round(x, 5) for x in margins]})
        fixture[key + "_model"] = "models/" + name
    with open(os.path.join(args.out, "greedy.json"), "w") as f:
        json.dump(fixture, f, indent=1, ensure_ascii=False)
        f.write("\n")
    stages["fixture"] = time.time() - t

    # ---- results and README
    for name in (TARGET, DRAFT, EAGLE):
        results["models"][name]["files"] = ckpt.dir_files(os.path.join(models_dir, name))
    stages["total"] = time.time() - t_start
    results["pipeline"] = {"device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
                           "versions": _versions(), "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
                           "wall_seconds": round(stages["total"], 1)}
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=1, ensure_ascii=False)
        f.write("\n")
    import write_readme
    write_readme.write(results, os.path.join(models_dir, "README.md"))
    total = sum(sum(ckpt.dir_files(os.path.join(models_dir, n)).values()) for n in (TARGET, DRAFT, EAGLE))
    log(f"all done in {stages['total']:.0f}s; models total {total / 1e6:.1f} MB; stages {results['pipeline']['stage_seconds']}")


def _versions():
    import safetensors
    import tokenizers
    v = {"python": platform.python_version(), "torch": torch.__version__, "tokenizers": tokenizers.__version__,
         "safetensors": safetensors.__version__, "cuda": torch.version.cuda}
    try:
        import transformers
        v["transformers"] = transformers.__version__
    except ImportError:
        pass
    return v


def _self_check_eagle(head, target, aux_layers, device):
    """The chained proposal path (inference) and the training-time-test path give the same tokens, on a
    randomly re-initialised fp32 copy of the head (fp32, TF32 off, so ties are not an issue)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, bt.VOCAB_SIZE - 5, (1, 24), generator=g).to(device)
    n = 17
    head32 = Eagle3Draft(head.s).to(device)
    head32.load_state_dict(head.state_dict())
    head32.draft_ids = head.draft_ids
    torch.manual_seed(0)
    for p in head32.parameters():
        torch.nn.init.normal_(p, std=0.2)
    with torch.no_grad():
        _, cap = target(ids, capture_layers=aux_layers)
        aux = torch.cat(cap, -1).float()[:, :n]
        props = head32.propose(ids[:, 1:n + 1], aux, 4)
        ids2 = torch.cat([ids[:, :n + 1], torch.tensor([props], device=device)], 1)
        aux2 = torch.cat([aux, torch.zeros(1, ids2.shape[1] - n, aux.shape[-1], device=device)], 1)
        outs = head32.ttt_forward(ids2, aux2, 4)
    ttt = [int(head32.draft_ids[o[0, n - 1].argmax()]) for o in outs]
    torch.backends.cuda.matmul.allow_tf32 = tf32
    log(f"eagle3 self-check: inference chain {props}, training-time-test {ttt}: {'same' if ttt == props else 'DIFFERENT'}")
    return ttt == props


def _check_transformers(target_dir, tok, held_rows, device, results):
    """The files load in transformers and compute what our training model computes; the transformers
    tokenizer and chat template agree with tokenizer.json."""
    from transformers import AutoTokenizer
    checks = {}
    hf = evaluate.load_hf(target_dir, device)
    ours = LlamaForCausalLM(TARGET_SHAPE).to(device)
    from safetensors.torch import load_file
    sd = {}
    for f in sorted(os.listdir(target_dir)):
        if f.endswith(".safetensors"):
            sd.update(load_file(os.path.join(target_dir, f)))
    ours.load_state_dict({k: v.float() for k, v in sd.items()})
    ours.eval()
    x = held_rows[:4, :256].to(device)
    with torch.no_grad():
        a = hf(x, use_cache=False).logits.float()
        b = ours(x).float()
    checks["target_logits_max_abs_diff_transformers_vs_recipe_model"] = float((a - b).abs().max())
    del hf, ours
    hft = AutoTokenizer.from_pretrained(target_dir)
    texts = ["Hello world 12345 GPU", "Once upon a time, there was a robot.\n\nIt  rolled   on.",
             bt.render_chat([{"role": "user", "content": "What is 7 plus 5?"}], True, bos=False)]
    checks["transformers_tokenizer_matches_tokenizer_json"] = all(
        list(hft(s)["input_ids"]) == tok.encode(s).ids for s in texts)
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Is the lidar working?"}]
    rendered = hft.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    checks["transformers_chat_template_matches"] = rendered == bt.render_chat(msgs, True)
    chat_ids = hft.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
    if isinstance(chat_ids, dict) or hasattr(chat_ids, "keys"):
        chat_ids = chat_ids["input_ids"]
    checks["transformers_chat_ids_match_bos_plus_encode"] = list(chat_ids) == tok.encode(
        bt.render_chat(msgs, True, bos=False)).ids
    checks["bos_count_in_chat_ids"] = list(chat_ids).count(bt.special_ids(tok)[bt.BOS])
    log(f"checks: {checks}")
    return checks


if __name__ == "__main__":
    main()

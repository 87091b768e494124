"""Writing Hugging Face style checkpoint directories: bf16 safetensors (sharded with an index when over the
shard size, as save_pretrained does), config.json, generation_config.json."""
import json
import os

import torch
from safetensors.torch import save_file


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def to_storage(t):
    t = t.detach().cpu()
    return t.to(torch.bfloat16).contiguous() if t.is_floating_point() else t.contiguous()


def save_safetensors(tensors, out_dir, max_shard_bytes=None):
    """tensors: name -> tensor, in the order they should be written. Returns the list of file names.
    Floating tensors are stored as bf16, integer and bool tensors as they are."""
    os.makedirs(out_dir, exist_ok=True)
    tensors = {k: to_storage(v) for k, v in tensors.items()}
    total = sum(t.numel() * t.element_size() for t in tensors.values())
    meta = {"format": "pt"}
    if max_shard_bytes is None or total <= max_shard_bytes:
        save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata=meta)
        return ["model.safetensors"]
    shards, cur, cur_bytes = [], {}, 0
    for name, t in tensors.items():
        nbytes = t.numel() * t.element_size()
        if cur and cur_bytes + nbytes > max_shard_bytes:
            shards.append(cur)
            cur, cur_bytes = {}, 0
        cur[name] = t
        cur_bytes += nbytes
    if cur:
        shards.append(cur)
    n = len(shards)
    weight_map, files = {}, []
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        save_file(shard, os.path.join(out_dir, fname), metadata=meta)
        files.append(fname)
        for name in shard:
            weight_map[name] = fname
    write_json(os.path.join(out_dir, "model.safetensors.index.json"),
               {"metadata": {"total_size": total}, "weight_map": weight_map})
    return files + ["model.safetensors.index.json"]


def hf_order(names):
    """embed, layers in numeric order, final norm, lm_head: the order save_pretrained uses."""
    def key(n):
        parts = n.split(".")
        if n.startswith("model.embed_tokens"):
            return (0, 0, n)
        if n.startswith("model.layers."):
            return (1, int(parts[2]), n)
        if n.startswith("model.norm"):
            return (2, 0, n)
        return (3, 0, n)
    return sorted(names, key=key)


def generation_config(bos_id, eos_ids, pad_id):
    return {"bos_token_id": bos_id, "eos_token_id": eos_ids, "pad_token_id": pad_id, "do_sample": True,
            "temperature": 0.7, "top_p": 0.9}


def dir_files(path):
    return {f: os.path.getsize(os.path.join(path, f)) for f in sorted(os.listdir(path))}

"""Writes, from held-out corpus documents (seed 2, none seen in training), for `tachyon eval` and GPTQ calibration:
- models/tachyon-tiny/heldout.txt: documents in the model's own format (chat through the template, text between
  BOS and end-of-text), back to back as the training stream has them. The special tokens are in the text:
  tokenize it without adding special tokens.
- models/tachyon-tiny/heldout-tasks.jsonl: {prompt, answer} pairs from held-out "Q: ...\nA: ..." documents
  (a different slice of the held-out list), for exact-match accuracy.

    python3 heldout_text.py [--count 400] [--tasks 200] [--out-dir ../../models/tachyon-tiny]
"""
import argparse
import json
import os

import corpus
from build_tokenizer import sample_text


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=400, help="documents to write")
    ap.add_argument("--tasks", type=int, default=200, help="question/answer tasks to write")
    ap.add_argument("--out-dir", default=os.path.join(here, "..", "..", "models", "tachyon-tiny"))
    # The sample counts of train_all.py's "full" preset, which trained the shipped models.
    ap.add_argument("--train-samples", type=int, default=1_000_000)
    ap.add_argument("--heldout-samples", type=int, default=20_000)
    args = ap.parse_args()
    # The same streams train_all.py draws, so "held out" means exactly what it meant in training.
    train_keys = {corpus.sample_key(s) for s in corpus.generate_shards(corpus.TRAIN_CORPUS_SEED, args.train_samples, 64)}
    heldout = [s for s in corpus.generate_shards(corpus.HELDOUT_CORPUS_SEED, args.heldout_samples, 8) if corpus.sample_key(s) not in train_keys]
    # Past the prompts evaluate.py and the greedy fixture take from the front of the held-out list.
    docs = heldout[-args.count:]
    text_path = os.path.join(args.out_dir, "heldout.txt")
    with open(text_path, "w", encoding="utf-8") as f:
        f.write("".join(sample_text(s) for s in docs))
    print(f"wrote {len(docs)} held-out documents to {text_path}")

    # Tasks from the middle of the list: neither the fixture prompts nor the documents above.
    tasks = []
    for s in heldout[2000:-args.count]:
        if s["kind"] == "text" and s["text"].startswith("Q: "):
            question, answer = s["text"].split("\n\n")[0].split("\nA: ", 1)
            if "\n" not in answer:
                tasks.append({"prompt": question + "\nA:", "answer": answer})
        if len(tasks) == args.tasks:
            break
    tasks_path = os.path.join(args.out_dir, "heldout-tasks.jsonl")
    with open(tasks_path, "w", encoding="utf-8") as f:
        f.writelines(json.dumps(t, ensure_ascii=False) + "\n" for t in tasks)
    print(f"wrote {len(tasks)} question/answer tasks to {tasks_path}")


if __name__ == "__main__":
    main()

"""Writes models/tachyon-tiny/heldout.txt: held-out corpus documents (seed 2, none seen in training) in the
model's own format (chat through the template, text between BOS and end-of-text), for `tachyon eval` and
GPTQ calibration. The special tokens are in the text: tokenize it without adding special tokens.

    python3 heldout_text.py [--count 400] [--out ../../models/tachyon-tiny/heldout.txt]
"""
import argparse
import os

import corpus
from build_tokenizer import sample_text


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=400, help="documents to write")
    ap.add_argument("--out", default=os.path.join(here, "..", "..", "models", "tachyon-tiny", "heldout.txt"))
    # The sample counts of train_all.py's "full" preset, which trained the shipped models.
    ap.add_argument("--train-samples", type=int, default=1_000_000)
    ap.add_argument("--heldout-samples", type=int, default=20_000)
    args = ap.parse_args()
    # The same streams train_all.py draws, so "held out" means exactly what it meant in training.
    train_keys = {corpus.sample_key(s) for s in corpus.generate_shards(corpus.TRAIN_CORPUS_SEED, args.train_samples, 64)}
    heldout = [s for s in corpus.generate_shards(corpus.HELDOUT_CORPUS_SEED, args.heldout_samples, 8) if corpus.sample_key(s) not in train_keys]
    # Past the prompts evaluate.py and the greedy fixture take from the front of the held-out list.
    docs = heldout[-args.count:]
    with open(args.out, "w", encoding="utf-8") as f:
        f.write("\n".join(sample_text(s) for s in docs))
    print(f"wrote {len(docs)} held-out documents to {args.out}")


if __name__ == "__main__":
    main()

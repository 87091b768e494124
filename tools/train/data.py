"""Token streams from corpus samples, packed into fixed-length training rows that start at a document."""
import numpy as np

from build_tokenizer import sample_text


def encode_samples(tok, samples, chunk=50_000):
    """All samples as one int32 token stream (each document starts with BOS) and the document start offsets."""
    pieces, lengths = [], []
    for i in range(0, len(samples), chunk):
        texts = [sample_text(s) for s in samples[i:i + chunk]]
        for enc in tok.encode_batch_fast(texts, add_special_tokens=False):
            ids = enc.ids
            pieces.append(np.asarray(ids, dtype=np.int32))
            lengths.append(len(ids))
    stream = np.concatenate(pieces)
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
    return stream, starts


def pack_rows(stream, starts, seq_len):
    """Rows of seq_len tokens, each beginning at a document start; a document cut at a row's end is not
    continued (the next row starts at the following document), so every row reads like the start of a text."""
    rows = []
    p, total = 0, len(stream)
    while p + seq_len <= total:
        rows.append(stream[p:p + seq_len])
        j = np.searchsorted(starts, p + seq_len, side="left")
        if j >= len(starts):
            break
        p = int(starts[j])
    return np.stack(rows) if rows else np.zeros((0, seq_len), dtype=np.int32)


class RowSampler:
    """Batches of rows in a seeded random order, epoch after epoch."""

    def __init__(self, rows, batch_size, seed, device):
        import torch
        self.torch = torch
        self.rows = torch.from_numpy(rows.astype(np.int64)).to(device)
        self.batch_size = batch_size
        self.gen = torch.Generator(device="cpu")
        self.gen.manual_seed(seed)
        self.order, self.pos, self.epochs = None, 0, 0
        self._shuffle()

    def _shuffle(self):
        self.order = self.torch.randperm(self.rows.shape[0], generator=self.gen).to(self.rows.device)
        self.pos = 0

    def next(self):
        if self.pos + self.batch_size > self.order.numel():
            self.epochs += 1
            self._shuffle()
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return self.rows[idx]

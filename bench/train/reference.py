#!/usr/bin/env python3
"""PyTorch eager reference for Lathe's BERT classification training step.

Written independently of Lathe's C++ code, but computing the same thing:
  - the same rows in the same order: the SpamAssassin JSONL file, shuffled per
    epoch exactly as worker/train/trainer.cc does (std::mt19937_64 seeded via
    SplitMix64's finaliser, Fisher-Yates with `rng() % i`),
  - the same token ids: an uncased BERT WordPiece tokenizer (clean, split on
    whitespace and punctuation, lowercase, strip accents, greedy longest match
    with "##"), truncated to max_length with [CLS] ... [SEP],
  - the same model: HF-style BERT encoder + pooler + classifier (GELU erf,
    LayerNorm eps from config.json, additive -10000 mask, dropout from config),
  - the same optimizer: AdamW (eps 1e-8, biases and LayerNorm weights not
    decayed), HF linear warmup/decay schedule, gradient clipping by norm.
Initial weights come from a Lathe checkpoint's model.safetensors, read with the
small reader below (header JSON + raw little-endian F32; nothing is unpickled).

Subcommands (each prints one JSON object on stdout):
  train  --model DIR --data FILE --steps N ... : trains, reports per-step
         losses, steady-state samples/s (step wall time, first step excluded)
         and, with --save-final FILE, the final weights (raw safetensors).
  gemm   --n 2048 --reps 10 : median F32 matmul GFLOP/s with the same BLAS.
"""
import argparse
import json
import math
import os
import statistics
import struct
import sys
import time
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F

MASK64 = (1 << 64) - 1


# --------------------------------------------------------------------------
# Data order: std::mt19937_64 + SplitMix64 finaliser, as in trainer.cc.
class MT19937_64:
    def __init__(self, seed):
        self.mt = [0] * 312
        self.mt[0] = seed & MASK64
        for i in range(1, 312):
            prev = self.mt[i - 1]
            self.mt[i] = (6364136223846793005 * (prev ^ (prev >> 62)) + i) & MASK64
        self.idx = 312

    def _twist(self):
        mt = self.mt
        for i in range(312):
            x = (mt[i] & 0xFFFFFFFF80000000) | (mt[(i + 1) % 312] & 0x7FFFFFFF)
            xa = x >> 1
            if x & 1:
                xa ^= 0xB5026F5AA96619E9
            mt[i] = mt[(i + 156) % 312] ^ xa
        self.idx = 0

    def __call__(self):
        if self.idx >= 312:
            self._twist()
        y = self.mt[self.idx]
        self.idx += 1
        y ^= (y >> 29) & 0x5555555555555555
        y ^= (y << 17) & 0x71D67FFFEDA60000
        y ^= (y << 37) & 0xFFF7EEE000000000
        y ^= y >> 43
        return y & MASK64


def mix64(x):
    x = (x + 0x9E3779B97F4A7C15) & MASK64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK64
    return x ^ (x >> 31)


def epoch_order(seed, epoch, n):
    order = list(range(n))
    rng = MT19937_64(mix64(mix64(seed & MASK64) ^ (epoch & MASK64)))
    for i in range(n, 1, -1):
        j = rng() % i
        order[i - 1], order[j] = order[j], order[i - 1]
    return order


# --------------------------------------------------------------------------
# Uncased BERT WordPiece.
def _is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _is_control(ch):
    if ch in "\t\n\r":
        return False
    return unicodedata.category(ch) in ("Cc", "Cf")


def _is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or
            0x20000 <= cp <= 0x2A6DF or 0x2A700 <= cp <= 0x2B73F or
            0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF or
            0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


class WordPiece:
    def __init__(self, vocab_path):
        with open(vocab_path, encoding="utf-8") as f:
            tokens = f.read().split("\n")
        if tokens and tokens[-1] == "":
            tokens.pop()
        self.ids = {}
        for i, t in enumerate(tokens):
            self.ids[t.rstrip("\r")] = i
        self.unk, self.cls = self.ids["[UNK]"], self.ids["[CLS]"]
        self.sep, self.pad = self.ids["[SEP]"], self.ids["[PAD]"]

    def _basic(self, text):
        words, cur = [], []
        for ch in text:
            cp = ord(ch)
            if cp == 0 or cp == 0xFFFD or _is_control(ch):
                continue
            if _is_whitespace(ch):
                if cur:
                    words.append(cur)
                cur = []
            elif _is_cjk(cp):
                if cur:
                    words.append(cur)
                words.append([ch])
                cur = []
            else:
                cur.append(ch)
        if cur:
            words.append(cur)
        for word in words:
            piece = []
            for ch in word:
                low = ch.lower()
                low = low[0] if low else ch  # simple (one code point) mapping
                for d in unicodedata.normalize("NFD", low):
                    if unicodedata.category(d) == "Mn":
                        continue
                    if _is_punct(d):
                        if piece:
                            yield "".join(piece)
                        piece = []
                        yield d
                    elif _is_whitespace(d):
                        if piece:
                            yield "".join(piece)
                        piece = []
                    else:
                        piece.append(d)
            if piece:
                yield "".join(piece)

    def _wordpiece(self, word):
        if len(word) > 100:
            return [self.unk]
        out, start = [], 0
        while start < len(word):
            end = len(word)
            found = None
            while start < end:
                sub = word[start:end]
                if start > 0:
                    sub = "##" + sub
                if sub in self.ids:
                    found = self.ids[sub]
                    break
                end -= 1
            if found is None:
                return [self.unk]
            out.append(found)
            start = end
        return out

    def encode(self, text, max_length):
        budget = max_length - 2
        ids = []
        for word in self._basic(text):  # Lazy: stop once the budget is full.
            ids.extend(self._wordpiece(word))
            if len(ids) >= budget:
                break
        return [self.cls] + ids[:budget] + [self.sep]


# --------------------------------------------------------------------------
# Safetensors (F32 only), without pickle.
def read_safetensors(path):
    with open(path, "rb") as f:
        blob = f.read()
    (n,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        if info["dtype"] != "F32":
            raise ValueError(f"{path}: {name} is {info['dtype']}, expected F32")
        b, e = info["data_offsets"]
        t = torch.frombuffer(bytearray(blob[base + b:base + e]), dtype=torch.float32)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def write_safetensors(path, tensors):
    header, chunks, off = {}, [], 0
    for name, t in tensors.items():
        data = t.detach().contiguous().to(torch.float32).numpy().tobytes()
        header[name] = {"dtype": "F32", "shape": list(t.shape),
                        "data_offsets": [off, off + len(data)]}
        chunks.append(data)
        off += len(data)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for c in chunks:
            f.write(c)


# --------------------------------------------------------------------------
# Model: attribute names give Hugging Face parameter paths.
class Box(nn.Module):
    pass


class Layer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.heads = c["num_attention_heads"]
        self.head_dim = h // self.heads
        eps = c["layer_norm_eps"]
        self.attention = Box()
        sa = Box()
        sa.query, sa.key, sa.value = nn.Linear(h, h), nn.Linear(h, h), nn.Linear(h, h)
        setattr(self.attention, "self", sa)
        self.attention.output = Box()
        self.attention.output.dense = nn.Linear(h, h)
        self.attention.output.LayerNorm = nn.LayerNorm(h, eps=eps)
        self.intermediate = Box()
        self.intermediate.dense = nn.Linear(h, i)
        self.output = Box()
        self.output.dense = nn.Linear(i, h)
        self.output.LayerNorm = nn.LayerNorm(h, eps=eps)
        self.attn_dropout = nn.Dropout(c["attention_probs_dropout_prob"])
        self.hidden_dropout = nn.Dropout(c["hidden_dropout_prob"])

    def forward(self, x, additive_mask):
        b, t, h = x.shape
        sa = getattr(self.attention, "self")

        def split(y):
            return y.view(b, t, self.heads, self.head_dim).transpose(1, 2)

        q, k, v = split(sa.query(x)), split(sa.key(x)), split(sa.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        probs = self.attn_dropout(torch.softmax(scores + additive_mask, -1))
        ctx = torch.matmul(probs, v).transpose(1, 2).contiguous().view(b, t, h)
        ao = self.attention.output
        attn = ao.LayerNorm(self.hidden_dropout(ao.dense(ctx)) + x)
        inter = F.gelu(self.intermediate.dense(attn))
        return self.output.LayerNorm(
            self.hidden_dropout(self.output.dense(inter)) + attn)


class BertClassifier(nn.Module):
    def __init__(self, c, num_labels):
        super().__init__()
        h = c["hidden_size"]
        self.bert = Box()
        e = Box()
        e.word_embeddings = nn.Embedding(c["vocab_size"], h,
                                         padding_idx=c.get("pad_token_id", 0))
        e.position_embeddings = nn.Embedding(c["max_position_embeddings"], h)
        e.token_type_embeddings = nn.Embedding(c["type_vocab_size"], h)
        e.LayerNorm = nn.LayerNorm(h, eps=c["layer_norm_eps"])
        self.bert.embeddings = e
        self.bert.encoder = Box()
        self.bert.encoder.layer = nn.ModuleList(
            [Layer(c) for _ in range(c["num_hidden_layers"])])
        self.bert.pooler = Box()
        self.bert.pooler.dense = nn.Linear(h, h)
        self.emb_dropout = nn.Dropout(c["hidden_dropout_prob"])
        self.dropout = nn.Dropout(c["hidden_dropout_prob"])
        self.classifier = nn.Linear(h, num_labels)

    def forward(self, ids, types, mask):
        e = self.bert.embeddings
        pos = torch.arange(ids.shape[1]).unsqueeze(0)
        x = e.word_embeddings(ids) + e.position_embeddings(pos) + \
            e.token_type_embeddings(types)
        x = self.emb_dropout(e.LayerNorm(x))
        additive = (1.0 - mask.to(x.dtype)).unsqueeze(1).unsqueeze(2) * -10000.0
        for layer in self.bert.encoder.layer:
            x = layer(x, additive)
        pooled = torch.tanh(self.bert.pooler.dense(x[:, 0]))
        return self.classifier(self.dropout(pooled))


def load_model(model_dir, dropout):
    with open(os.path.join(model_dir, "config.json")) as f:
        c = json.load(f)
    if dropout is not None:
        c["hidden_dropout_prob"] = c["attention_probs_dropout_prob"] = dropout
    num_labels = len(c["id2label"])
    model = BertClassifier(c, num_labels)
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    names = dict(model.named_parameters())
    if set(names) != set(weights):
        raise ValueError(f"parameter names differ: only in model "
                         f"{sorted(set(names) - set(weights))[:5]}, only in file "
                         f"{sorted(set(weights) - set(names))[:5]}")
    with torch.no_grad():
        for n, p in names.items():
            p.copy_(weights[n])
    return model, c


# --------------------------------------------------------------------------
def lr_at(step0, base, warmup, total):
    if step0 < warmup:
        return base * step0 / max(1, warmup)
    return base * max(0.0, (total - step0) / max(1, total - warmup))


def cmd_train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    model, cfg = load_model(a.model, a.dropout)
    model.train()
    tok = WordPiece(os.path.join(a.model, "vocab.txt"))
    with open(a.data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    labels = sorted({r["label"] for r in rows})
    label_index = {l: i for i, l in enumerate(labels)}
    n = len(rows)
    steps_per_epoch = (n + a.batch_size - 1) // a.batch_size
    total = min(a.steps, a.epochs * steps_per_epoch)
    warmup = math.ceil(a.warmup_ratio * total)

    # The batches' rows, tokenized up front (Lathe also tokenizes before its
    # first step), so step time covers collation + forward/backward/update.
    batches, epoch, order, cursor = [], -1, [], 0
    for _ in range(total):
        if cursor >= len(order):
            epoch += 1
            order = epoch_order(a.seed, epoch, n)
            cursor = 0
        end = min(n, cursor + a.batch_size)
        batches.append([(tok.encode(rows[i]["text"], a.max_length),
                         label_index[rows[i]["label"]]) for i in order[cursor:end]])
        cursor = end

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if name.endswith(".bias") or "LayerNorm." in name else decay).append(p)
    opt = torch.optim.AdamW([
        {"params": decay, "weight_decay": a.weight_decay},
        {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, eps=1e-8)
    params = list(model.parameters())

    losses, times, token_ids = [], [], set()
    for step0, batch in enumerate(batches):
        t0 = time.perf_counter()
        longest = max(len(ids) for ids, _ in batch)
        ids = torch.full((len(batch), longest), tok.pad, dtype=torch.long)
        mask = torch.zeros((len(batch), longest), dtype=torch.long)
        for r, (row, _) in enumerate(batch):
            ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
            mask[r, :len(row)] = 1
        types = torch.zeros_like(ids)
        y = torch.tensor([lab for _, lab in batch], dtype=torch.long)
        lr = lr_at(step0, a.lr, warmup, total)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(ids, types, mask), y)
        loss.backward()
        if a.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, a.max_grad_norm)
        opt.step()
        losses.append(loss.item())
        times.append(time.perf_counter() - t0)
        for row, _ in batch:
            token_ids.update(row)
    steady = times[1:] if len(times) > 1 else times
    samples = sum(len(b) for b in (batches[1:] if len(batches) > 1 else batches))
    if a.save_final:
        write_safetensors(a.save_final, dict(model.named_parameters()))
    print(json.dumps({
        "losses": losses,
        "samples_per_second": samples / sum(steady),
        "step_seconds": times,
        "batch_shape": [len(batches[0]), max(len(r) for r, _ in batches[0])],
        "padded_tokens_first_batch": sum(max(len(r) for r, _ in batches[0]) - len(r)
                                         for r, _ in batches[0]),
        "token_ids": sorted(token_ids) if a.report_ids else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


def cmd_gemm(a):
    torch.set_num_threads(a.threads)
    x = torch.randn(a.n, a.n)
    y = torch.randn(a.n, a.n)
    out = torch.empty(a.n, a.n)
    torch.mm(x, y, out=out)  # warm-up
    rates = []
    for _ in range(a.reps):
        t0 = time.perf_counter()
        torch.mm(x, y, out=out)
        rates.append(2.0 * a.n ** 3 / (time.perf_counter() - t0) / 1e9)
    blas = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "blas" in line.lower() and line.split()[-1].startswith("/")})
    print(json.dumps({"gflops": rates, "median_gflops": statistics.median(rates),
                      "n": a.n, "threads": torch.get_num_threads(),
                      "blas_libraries": blas, "torch": torch.__version__}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--steps", type=int, required=True)
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument("--max-length", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-4)
    t.add_argument("--warmup-ratio", type=float, default=0.1)
    t.add_argument("--weight-decay", type=float, default=0.01)
    t.add_argument("--max-grad-norm", type=float, default=1.0)
    t.add_argument("--seed", type=int, default=42)
    t.add_argument("--threads", type=int, default=os.cpu_count())
    t.add_argument("--dropout", type=float, default=None,
                   help="override both dropout probabilities of config.json")
    t.add_argument("--save-final", default="")
    t.add_argument("--report-ids", action="store_true")
    g = sub.add_parser("gemm")
    g.add_argument("--n", type=int, default=2048)
    g.add_argument("--reps", type=int, default=10)
    g.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    {"train": cmd_train, "gemm": cmd_gemm}[a.cmd](a)


if __name__ == "__main__":
    main()

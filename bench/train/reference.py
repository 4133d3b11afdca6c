#!/usr/bin/env python3
"""PyTorch eager reference for Lathe's training steps (BERT classification,
Llama causal LM).

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

The causal LM (--task causal-lm) is an HF-style Llama (RMSNorm in float32,
rotary embeddings with rotate_half, SwiGLU MLP, untied lm_head) trained on
raw text rows: [BOS] + tokens + [EOS] truncated to max_length, loss on every
real token (shifted cross-entropy). Its token ids come from a JSONL file of
{"ids": [...]} per row, as `lathe tokenize --jsonl` writes them with the
model's tokenizer (that tokenizer is checked against an independent
implementation by Lathe's tokenizers_oracle test), so this script does not
re-implement SentencePiece BPE.

Image classification (--task image-classification, --data a folder of class
folders of PNGs) decodes the pictures with the small PNG reader below (zlib
and the five scanline filters; 8-bit gray, RGB or RGBA), replicates gray to
RGB and normalises with mean and std 0.5; the labels are the folder names in
order (numerically when all are integers), the rows sorted by path. Models:
lathe-cnn (conv 3x3 + ReLU + 2x2 max pool per block, then a linear
classifier on the flattened or averaged map, as config.json says) and an
HF-style ViT (patch convolution, CLS token, pre-LayerNorm blocks, classifier
on the CLS token).

--padding max_length pads every batch to max_length instead of its longest
row; --group-by-length orders rows as Lathe's params[group_by_length] does.

Subcommands (each prints one JSON object on stdout):
  train  --model DIR --data FILE --steps N ... : trains, reports per-step
         losses, steady-state samples/s (step wall time, first step excluded)
         and, with --save-final FILE, the final weights (raw safetensors).
  gemm   --n 2048 --reps 10 : median F32 matmul GFLOP/s with the same BLAS.
  dpo    --policy DIR --reference DIR --batch FILE --beta B : the DPO loss
         and rewards of one batch of pairs (FILE: safetensors input_ids,
         attention_mask and labels [2B, T] as float32, the B chosen rows then
         the B rejected ones, -100 where a token is not scored) with two
         Llama models, from the log-softmax of each model's logits.
"""
import argparse
import bisect
import json
import math
import os
import resource
import statistics
import struct
import sys
import time
import unicodedata

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint

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


def shuffle(v, rng):
    for i in range(len(v), 1, -1):
        j = rng() % i
        v[i - 1], v[j] = v[j], v[i - 1]


def epoch_order(seed, epoch, n):
    order = list(range(n))
    shuffle(order, MT19937_64(mix64(mix64(seed & MASK64) ^ (epoch & MASK64))))
    return order


def group_by_length(order, lengths, batch, mega, seed, epoch):
    """Runs of `mega` rows sorted by length (longest first, stable), cut into
    batches whose full ones are shuffled; as trainer.cc's GroupByLength."""
    rng = MT19937_64(mix64(mix64((seed & MASK64) ^ 0x6C656E67) ^ (epoch & MASK64)))
    out = list(order)
    for begin in range(0, len(out), mega):
        run = sorted(out[begin:begin + mega], key=lambda i: -lengths[i])
        chunks = list(range(len(run) // batch))
        shuffle(chunks, rng)
        grouped = [i for c in chunks for i in run[c * batch:(c + 1) * batch]]
        out[begin:begin + mega] = grouped + run[len(chunks) * batch:]
    return out


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
    load_weights(model, model_dir)
    return model, c


# --------------------------------------------------------------------------
# Llama causal LM with Hugging Face's parameter names.
class RMSNorm(nn.Module):
    def __init__(self, h, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(h))
        self.eps = eps

    def forward(self, x):
        y = x.float()
        y = y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


def rotate_half(x):
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


class LlamaLayer(nn.Module):
    def __init__(self, c):
        super().__init__()
        h, i = c["hidden_size"], c["intermediate_size"]
        self.heads = c["num_attention_heads"]
        self.kv_heads = c.get("num_key_value_heads", self.heads)
        self.head_dim = h // self.heads
        eps = c["rms_norm_eps"]
        self.input_layernorm = RMSNorm(h, eps)
        self.self_attn = Box()
        self.self_attn.q_proj = nn.Linear(h, self.heads * self.head_dim, bias=False)
        self.self_attn.k_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.self_attn.v_proj = nn.Linear(h, self.kv_heads * self.head_dim, bias=False)
        self.self_attn.o_proj = nn.Linear(self.heads * self.head_dim, h, bias=False)
        self.post_attention_layernorm = RMSNorm(h, eps)
        self.mlp = Box()
        self.mlp.gate_proj = nn.Linear(h, i, bias=False)
        self.mlp.up_proj = nn.Linear(h, i, bias=False)
        self.mlp.down_proj = nn.Linear(i, h, bias=False)

    def forward(self, x, cos, sin, mask):
        b, t, _ = x.shape
        a = self.self_attn
        y = self.input_layernorm(x)
        q = a.q_proj(y).view(b, t, self.heads, self.head_dim).transpose(1, 2)
        k = a.k_proj(y).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        v = a.v_proj(y).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        rep = self.heads // self.kv_heads
        if rep > 1:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim) + mask
        probs = torch.softmax(scores, -1, dtype=torch.float32).to(q.dtype)
        ctx = torch.matmul(probs, v).transpose(1, 2).reshape(b, t, -1)
        r = x + a.o_proj(ctx)
        y = self.post_attention_layernorm(r)
        m = self.mlp
        return r + m.down_proj(F.silu(m.gate_proj(y)) * m.up_proj(y))


class LlamaForCausalLM(nn.Module):
    def __init__(self, c):
        super().__init__()
        h = c["hidden_size"]
        self.model = Box()
        self.model.embed_tokens = nn.Embedding(c["vocab_size"], h)
        self.model.layers = nn.ModuleList(
            [LlamaLayer(c) for _ in range(c["num_hidden_layers"])])
        self.model.norm = RMSNorm(h, c["rms_norm_eps"])
        self.lm_head = nn.Linear(h, c["vocab_size"], bias=False)
        dim = h // c["num_attention_heads"]
        self.inv_freq = 1.0 / (c.get("rope_theta", 10000.0) **
                               (torch.arange(0, dim, 2).float() / dim))

    checkpointing = False  # recompute each layer in the backward pass

    def forward(self, ids, mask, positions=None, segments=None):
        """positions, segments [B, T]: packed rows (positions restart at
        each row; attention only between equal segment ids)."""
        t = ids.shape[1]
        x = self.model.embed_tokens(ids)
        if positions is None:
            positions = torch.arange(t, device=ids.device).view(1, t)
        freqs = positions.float().unsqueeze(-1) * self.inv_freq.to(ids.device)
        emb = torch.cat((freqs, freqs), -1).unsqueeze(1)
        cos = emb.cos().to(x.dtype)
        sin = emb.sin().to(x.dtype)
        allowed = torch.ones(t, t, dtype=torch.bool, device=ids.device).tril()
        allowed = allowed.view(1, 1, t, t) & mask.bool().view(-1, 1, 1, t)
        if segments is not None:
            allowed = allowed & (segments.unsqueeze(2) == segments.unsqueeze(1)).unsqueeze(1)
        additive = torch.zeros(allowed.shape, dtype=x.dtype, device=ids.device)
        additive = additive.masked_fill(~allowed, torch.finfo(x.dtype).min)
        for layer in self.model.layers:
            if self.checkpointing and self.training:
                x = torch.utils.checkpoint.checkpoint(layer, x, cos, sin, additive)
            else:
                x = layer(x, cos, sin, additive)
        return self.lm_head(self.model.norm(x))


# --------------------------------------------------------------------------
# Images.
def read_png(path):
    """An 8-bit, non-interlaced PNG as a [H][W][C] nested list (C = 1, 3, 4)."""
    import zlib
    with open(path, "rb") as f:
        blob = f.read()
    if blob[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG")
    pos, idat, header = 8, [], None
    while pos < len(blob):
        (n,) = struct.unpack(">I", blob[pos:pos + 4])
        kind, body = blob[pos + 4:pos + 8], blob[pos + 8:pos + 8 + n]
        pos += 12 + n
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif kind == b"IDAT":
            idat.append(body)
        elif kind == b"IEND":
            break
    w, h, depth, color, _, _, interlace = header
    channels = {0: 1, 2: 3, 6: 4}.get(color)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"{path}: only 8-bit gray, RGB or RGBA PNGs here")
    raw = zlib.decompress(b"".join(idat))
    stride, prev, rows = w * channels, bytearray(w * channels), []
    for y in range(h):
        kind = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            ul = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 255
            elif kind == 2:
                line[i] = (line[i] + up) & 255
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 255
            elif kind == 4:
                p = left + up - ul
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
                pred = left if pa <= pb and pa <= pc else up if pb <= pc else ul
                line[i] = (line[i] + pred) & 255
        rows.append([list(line[x * channels:(x + 1) * channels]) for x in range(w)])
        prev = line
    return rows


def image_rows(folder):
    """(pixels [3, H, W] normalised, label index) per picture, by path."""
    files = sorted(f"{label}/{name}" for label in os.listdir(folder)
                   if os.path.isdir(os.path.join(folder, label))
                   for name in os.listdir(os.path.join(folder, label))
                   if name.lower().endswith(".png"))
    labels = sorted({f.split("/")[0] for f in files})
    if all(l.lstrip("-").isdigit() for l in labels):
        labels.sort(key=int)
    index = {l: i for i, l in enumerate(labels)}
    out = []
    for f in files:
        px = torch.tensor(read_png(os.path.join(folder, f)), dtype=torch.float32)
        if px.shape[2] == 1:
            px = px.expand(-1, -1, 3)
        px = (px[:, :, :3].permute(2, 0, 1) / 255.0 - 0.5) / 0.5
        out.append((px.contiguous(), index[f.split("/")[0]]))
    return out, labels


class CnnClassifier(nn.Module):
    def __init__(self, cfg, labels):
        super().__init__()
        self.cnn = Box()
        self.cnn.encoder = Box()
        c_in, side = cfg.get("num_channels", 3), cfg.get("image_size", 32)
        for i, c_out in enumerate(cfg["hidden_sizes"]):
            block = Box()
            block.conv = nn.Conv2d(c_in, c_out, 3, padding=1)
            setattr(self.cnn.encoder, str(i), block)
            c_in = c_out
            side = side // 2 if side >= 2 else side
        self.blocks = len(cfg["hidden_sizes"])
        self.flatten = cfg.get("pooling", "mean") == "flatten"
        self.classifier = nn.Linear(c_in * side * side if self.flatten else c_in, labels)

    def forward(self, x):
        for i in range(self.blocks):
            x = F.relu(getattr(self.cnn.encoder, str(i)).conv(x))
            if x.shape[2] >= 2 and x.shape[3] >= 2:
                x = F.max_pool2d(x, 2)
        x = x.flatten(1) if self.flatten else x.mean((2, 3))
        return self.classifier(x)


class VitClassifier(nn.Module):
    def __init__(self, cfg, labels):
        super().__init__()
        h, patch = cfg["hidden_size"], cfg["patch_size"]
        n = (cfg["image_size"] // patch) ** 2
        eps = cfg.get("layer_norm_eps", 1e-12)
        self.heads, self.act = cfg["num_attention_heads"], cfg.get("hidden_act", "gelu")
        self.vit = Box()
        e = self.vit.embeddings = Box()
        e.cls_token = nn.Parameter(torch.zeros(1, 1, h))
        e.position_embeddings = nn.Parameter(torch.zeros(1, n + 1, h))
        e.patch_embeddings = Box()
        e.patch_embeddings.projection = nn.Conv2d(cfg.get("num_channels", 3), h,
                                                  patch, stride=patch)
        self.vit.encoder = Box()
        self.vit.encoder.layer = nn.ModuleList()
        for _ in range(cfg["num_hidden_layers"]):
            L = Box()
            L.layernorm_before = nn.LayerNorm(h, eps=eps)
            L.attention = Box()
            L.attention.attention = Box()
            bias = cfg.get("qkv_bias", True)
            for name in ("query", "key", "value"):
                setattr(L.attention.attention, name, nn.Linear(h, h, bias=bias))
            L.attention.output = Box()
            L.attention.output.dense = nn.Linear(h, h)
            L.layernorm_after = nn.LayerNorm(h, eps=eps)
            L.intermediate = Box()
            L.intermediate.dense = nn.Linear(h, cfg["intermediate_size"])
            L.output = Box()
            L.output.dense = nn.Linear(cfg["intermediate_size"], h)
            self.vit.encoder.layer.append(L)
        self.vit.layernorm = nn.LayerNorm(h, eps=eps)
        self.classifier = nn.Linear(h, labels)

    def forward(self, px):
        e = self.vit.embeddings
        x = e.patch_embeddings.projection(px).flatten(2).transpose(1, 2)
        b = x.shape[0]
        x = torch.cat([e.cls_token.expand(b, -1, -1), x], 1) + e.position_embeddings
        t, h = x.shape[1], x.shape[2]
        d = h // self.heads
        split = lambda y: y.view(b, t, self.heads, d).transpose(1, 2)
        for L in self.vit.encoder.layer:
            a = L.attention.attention
            z = L.layernorm_before(x)
            q, k, v = split(a.query(z)), split(a.key(z)), split(a.value(z))
            probs = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(d), -1)
            ctx = (probs @ v).transpose(1, 2).reshape(b, t, h)
            x = L.attention.output.dense(ctx) + x
            y = L.intermediate.dense(L.layernorm_after(x))
            y = F.gelu(y) if self.act == "gelu" else F.relu(y)
            x = L.output.dense(y) + x
        return self.classifier(self.vit.layernorm(x)[:, 0])


def load_weights(model, model_dir):
    weights = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    names = dict(model.named_parameters())
    if set(names) != set(weights):
        raise ValueError(f"parameter names differ: only in model "
                         f"{sorted(set(names) - set(weights))[:5]}, only in file "
                         f"{sorted(set(weights) - set(names))[:5]}")
    with torch.no_grad():
        for n, p in names.items():
            p.copy_(weights[n])


def causal_lm_loss(logits, labels):
    v = logits.shape[-1]
    return F.cross_entropy(logits[:, :-1].reshape(-1, v).float(),
                           labels[:, 1:].reshape(-1), ignore_index=-100)


# --------------------------------------------------------------------------
def lr_at(step0, base, warmup, total):
    if step0 < warmup:
        return base * step0 / max(1, warmup)
    return base * max(0.0, (total - step0) / max(1, total - warmup))


def prepare_rows(a, cfg):
    """Features (ids, target) of every training row, and the pad id."""
    with open(a.data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f if line.strip()]
    if a.task == "text-classification":
        tok = WordPiece(os.path.join(a.model, "vocab.txt"))
        labels = sorted({r["label"] for r in rows})
        index = {l: i for i, l in enumerate(labels)}
        return [(tok.encode(r["text"], a.max_length), index[r["label"]])
                for r in rows], tok.pad
    with open(a.ids, encoding="utf-8") as f:
        ids = [json.loads(line)["ids"] for line in f if line.strip()]
    if len(ids) != len(rows):
        raise SystemExit(f"{a.ids}: {len(ids)} rows, {a.data}: {len(rows)}")
    eos = cfg["eos_token_id"]
    return [((r + [eos])[:a.max_length], None) for r in ids], eos


def pack_rows(lengths, capacity):
    """Best fit by decreasing length, as Lathe's packing=1: each row goes to
    the pack with the least room that fits it; packs ordered by first row."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    packs, room, opened = [], [], 0  # room: sorted (left, opened, pack)
    for row in order:
        n = lengths[row]
        k = bisect.bisect_left(room, (n, -1, -1))
        if k == len(room) or n > capacity:
            packs.append([row])
            if n < capacity:
                bisect.insort(room, (capacity - n, opened, len(packs) - 1))
                opened += 1
            continue
        left, _, pack = room.pop(k)
        packs[pack].append(row)
        if left - n > 0:
            bisect.insort(room, (left - n, opened, pack))
            opened += 1
    return sorted((sorted(p) for p in packs), key=lambda p: p[0])


def collate_packs(batch, pad, device):
    """Each pack's rows end to end: positions restart per row, segment ids
    1, 2, ... per row (0 for padding), no label on a row's first token."""
    width = max(sum(len(r) for r in rows) for rows, _ in batch)
    shape = (len(batch), width)
    ids = torch.full(shape, pad, dtype=torch.long)
    mask, pos, seg = (torch.zeros(shape, dtype=torch.long) for _ in range(3))
    y = torch.full(shape, -100, dtype=torch.long)
    for b, (rows, _) in enumerate(batch):
        at = 0
        for s, row in enumerate(rows, 1):
            n = len(row)
            ids[b, at:at + n] = torch.tensor(row, dtype=torch.long)
            y[b, at + 1:at + n] = ids[b, at + 1:at + n]
            mask[b, at:at + n] = 1
            pos[b, at:at + n] = torch.arange(n)
            seg[b, at:at + n] = s
            at += n
    return [t.to(device) for t in (ids, mask, y, pos, seg)]


def collate(a, batch, pad, device):
    width = a.max_length if a.padding == "max_length" else max(len(r) for r, _ in batch)
    ids = torch.full((len(batch), width), pad, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for r, (row, _) in enumerate(batch):
        ids[r, :len(row)] = torch.tensor(row, dtype=torch.long)
        mask[r, :len(row)] = 1
    if a.task == "text-classification":
        y = torch.tensor([lab for _, lab in batch], dtype=torch.long)
    else:
        y = ids.masked_fill(mask == 0, -100)
    return ids.to(device), mask.to(device), y.to(device)


def cmd_train(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    device = torch.device(a.device)
    with open(os.path.join(a.model, "config.json")) as f:
        cfg = json.load(f)
    images = a.task == "image-classification"
    if a.task == "text-classification":
        model, cfg = load_model(a.model, a.dropout)
    elif images:
        labels = len(cfg["id2label"])
        model = (CnnClassifier(cfg, labels) if cfg["model_type"] == "lathe-cnn"
                 else VitClassifier(cfg, labels))
        load_weights(model, a.model)
    else:
        model = LlamaForCausalLM(cfg)
        load_weights(model, a.model)
    model.to(device)
    model.train()
    # Tokenized up front (Lathe also tokenizes before its first step), so
    # step time covers collation + forward/backward/update.
    if images:
        features, names = image_rows(a.data)
        pad = None
        if names != [cfg["id2label"][str(i)] for i in range(len(names))]:
            raise SystemExit(f"{a.data}: labels {names} differ from the model's")
    else:
        features, pad = prepare_rows(a, cfg)
    if a.packing:
        packs = pack_rows([len(r) for r, _ in features], a.max_length)
        features = [([features[i][0] for i in p], None) for p in packs]
    if a.checkpointing:
        model.checkpointing = True
    lengths = [1 if images else len(r) for r, _ in features]
    n = len(features)
    steps_per_epoch = (n + a.batch_size - 1) // a.batch_size
    total = min(a.steps, a.epochs * steps_per_epoch)
    warmup = math.ceil(a.warmup_ratio * total)

    batches, epoch, order, cursor = [], -1, [], 0
    for _ in range(total):
        if cursor >= len(order):
            epoch += 1
            order = epoch_order(a.seed, epoch, n)
            if a.group_by_length:
                order = group_by_length(order, lengths, a.batch_size,
                                        50 * a.batch_size, a.seed, epoch)
            cursor = 0
        end = min(n, cursor + a.batch_size)
        batches.append([features[i] for i in order[cursor:end]])
        cursor = end

    decay, no_decay = [], []
    for name, p in model.named_parameters():
        (no_decay if p.dim() <= 1 else decay).append(p)
    opt = torch.optim.AdamW([
        {"params": decay, "weight_decay": a.weight_decay},
        {"params": no_decay, "weight_decay": 0.0}], lr=a.lr, eps=1e-8)
    params = list(model.parameters())
    cuda = device.type == "cuda"

    losses, times, token_ids, events = [], [], set(), []
    real_tokens = padded_tokens = 0
    for step0, batch in enumerate(batches):
        if cuda:
            start_ev = torch.cuda.Event(enable_timing=True)
            start_ev.record()
        t0 = time.perf_counter()
        extra = {}
        if images:
            ids = torch.stack([px for px, _ in batch]).to(device)
            y = torch.tensor([lab for _, lab in batch], dtype=torch.long).to(device)
            mask = None
        elif a.packing:
            ids, mask, y, pos, seg = collate_packs(batch, pad, device)
            extra = {"positions": pos, "segments": seg}
        else:
            ids, mask, y = collate(a, batch, pad, device)
        lr = lr_at(step0, a.lr, warmup, total)
        for g in opt.param_groups:
            g["lr"] = lr
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16,
                            enabled=a.bf16):
            if images:
                loss = F.cross_entropy(model(ids), y)
            elif a.task == "text-classification":
                loss = F.cross_entropy(model(ids, torch.zeros_like(ids), mask), y)
            else:
                loss = causal_lm_loss(model(ids, mask, **extra), y)
        loss.backward()
        if a.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(params, a.max_grad_norm)
        opt.step()
        losses.append(loss.item())  # Synchronises the device, as Lathe does.
        times.append(time.perf_counter() - t0)
        if cuda:
            end_ev = torch.cuda.Event(enable_timing=True)
            end_ev.record()
            events.append((start_ev, end_ev))
        if step0 > 0 and not images:
            real_tokens += int(mask.sum())
            padded_tokens += mask.numel()
        for row, _ in (batch if not images else []):
            for r in (row if a.packing else [row]):
                token_ids.update(r)
    if cuda:
        torch.cuda.synchronize()
        times = [s.elapsed_time(e) / 1000.0 for s, e in events]
    steady = times[1:] if len(times) > 1 else times
    samples = sum(len(b) for b in (batches[1:] if len(batches) > 1 else batches))
    if a.save_final:
        write_safetensors(a.save_final, dict(model.named_parameters()))
    print(json.dumps({
        "losses": losses,
        "samples_per_second": samples / sum(steady),
        "tokens_per_second": real_tokens / sum(steady) if len(times) > 1 else None,
        "padding_efficiency": real_tokens / padded_tokens if padded_tokens else None,
        "step_seconds": times,
        "timer": "cuda events" if cuda else "perf_counter",
        "batch_shape": [len(batches[0])] + list(batches[0][0][0].shape)
                       if images else
                       list(collate_packs(batches[0], pad, "cpu")[0].shape)
                       if a.packing else
                       [len(batches[0]), max(len(r) for r, _ in batches[0])],
        "padded_tokens_first_batch": None if a.packing or images else
                                     sum(max(len(r) for r, _ in batches[0]) - len(r)
                                         for r, _ in batches[0]),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "token_ids": sorted(token_ids) if a.report_ids else None,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }))


def cmd_dpo(a):
    """Direct Preference Optimization on one batch, from its definition:
    the summed log-probability of each reply's scored tokens under the policy
    and the reference, reward = beta * (policy - reference), and
    loss = mean(-log sigmoid(reward_chosen - reward_rejected))."""
    torch.set_num_threads(a.threads)
    batch = read_safetensors(a.batch)
    ids = batch["input_ids"].long()
    mask = batch["attention_mask"].long()
    labels = batch["labels"].long()

    def logps(model_dir):
        with open(os.path.join(model_dir, "config.json")) as f:
            cfg = json.load(f)
        model = LlamaForCausalLM(cfg)
        load_weights(model, model_dir)
        model.eval()
        with torch.no_grad():
            logits = model(ids, mask).float()
        lp = torch.log_softmax(logits[:, :-1], -1)
        target = labels[:, 1:]
        scored = target != -100
        picked = lp.gather(-1, target.clamp(min=0).unsqueeze(-1)).squeeze(-1)
        return (picked * scored).sum(-1).double()

    pol, ref = logps(a.policy), logps(a.reference)
    b = ids.shape[0] // 2
    chosen = a.beta * (pol[:b] - ref[:b])
    rejected = a.beta * (pol[b:] - ref[b:])
    loss = -F.logsigmoid(chosen - rejected).mean()
    print(json.dumps({"loss": loss.item(),
                      "chosen_rewards": chosen.tolist(),
                      "rejected_rewards": rejected.tolist(),
                      "policy_logps": pol.tolist(),
                      "reference_logps": ref.tolist(),
                      "torch": torch.__version__}))


def cmd_gemm(a):
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    dtype = getattr(torch, a.dtype)
    x = torch.randn(a.n, a.n, device=device).to(dtype)
    y = torch.randn(a.n, a.n, device=device).to(dtype)
    out = torch.empty(a.n, a.n, device=device, dtype=dtype)
    torch.mm(x, y, out=out)  # warm-up
    rates = []
    for _ in range(a.reps):
        if device.type == "cuda":
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            torch.mm(x, y, out=out)
            e.record()
            torch.cuda.synchronize()
            seconds = s.elapsed_time(e) / 1000.0
        else:
            t0 = time.perf_counter()
            torch.mm(x, y, out=out)
            seconds = time.perf_counter() - t0
        rates.append(2.0 * a.n ** 3 / seconds / 1e9)
    blas = sorted({line.split()[-1] for line in open("/proc/self/maps")
                   if "blas" in line.lower() and line.split()[-1].startswith("/")})
    print(json.dumps({"gflops": rates, "median_gflops": statistics.median(rates),
                      "n": a.n, "threads": torch.get_num_threads(),
                      "device": a.device, "dtype": a.dtype,
                      "blas_libraries": blas, "torch": torch.__version__}))


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train")
    t.add_argument("--task", default="text-classification",
                   choices=["text-classification", "causal-lm",
                            "image-classification"])
    t.add_argument("--model", required=True)
    t.add_argument("--data", required=True)
    t.add_argument("--ids", default="",
                   help="causal-lm: JSONL of {\"ids\": [...]} per data row")
    t.add_argument("--padding", default="longest", choices=["longest", "max_length"])
    t.add_argument("--group-by-length", action="store_true")
    t.add_argument("--checkpointing", action="store_true",
                   help="causal-lm: recompute each layer in the backward pass")
    t.add_argument("--packing", action="store_true",
                   help="causal-lm: pack rows into --max-length sequences as Lathe does")
    t.add_argument("--device", default="cpu")
    t.add_argument("--bf16", action="store_true")
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
    g.add_argument("--device", default="cpu")
    g.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    d = sub.add_parser("dpo")
    d.add_argument("--policy", required=True)
    d.add_argument("--reference", required=True)
    d.add_argument("--batch", required=True)
    d.add_argument("--beta", type=float, default=0.1)
    d.add_argument("--threads", type=int, default=os.cpu_count())
    a = p.parse_args()
    {"train": cmd_train, "gemm": cmd_gemm, "dpo": cmd_dpo}[a.cmd](a)


if __name__ == "__main__":
    main()

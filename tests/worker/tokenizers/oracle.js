#!/usr/bin/env node
// Compares `lathe tokenize` with an independent JavaScript implementation of
// Hugging Face tokenizers (npm @lenml/tokenizers), token id for token id.
//
//   node oracle.js --lathe BIN --oracle DIR --assets DIR --testdata DIR
//                  [--corpus FILE] [--spam FILE] [--spam-lines N]
//
// --oracle is the folder holding node_modules/@lenml/tokenizers. For each
// tokenizer (bert-base-uncased from vocab.txt, gpt2 from vocab.json +
// merges.txt, llama2 and qwen3 from their tokenizer.json, and the synthetic
// tokenizer.json files under --testdata) it encodes every text with both and
// prints the first disagreement. The oracle reads a tokenizer.json, so for
// vocab.txt and vocab.json + merges.txt this script builds the tokenizer.json
// Hugging Face's converters would write; Lathe reads the original files.
// Texts are passed to `lathe tokenize --jsonl` as JSON strings, so texts
// with newlines are compared too. Exit status: 0 all agree, 1 a
// disagreement, 2 a setup error.
'use strict';

const fs = require('fs');
const path = require('path');
const {spawnSync} = require('child_process');

function die(msg, code = 2) {
  process.stderr.write(`oracle: ${msg}\n`);
  process.exit(code);
}

function parseArgs(argv) {
  const a = {'spam-lines': '500'};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--') || i + 1 >= argv.length) die(`bad argument ${argv[i]}`);
    a[argv[i].slice(2)] = argv[i + 1];
  }
  for (const k of ['lathe', 'oracle', 'assets', 'testdata']) {
    if (!a[k]) die(`--${k} is required`);
  }
  return a;
}

function readJson(file) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

// The tokenizer.json of bert-base-uncased as converted from vocab.txt.
function bertJson(dir) {
  const lines = fs.readFileSync(path.join(dir, 'vocab.txt'), 'utf8').split('\n');
  if (lines[lines.length - 1] === '') lines.pop();
  const vocab = {};
  lines.forEach((t, i) => { vocab[t.replace(/\r$/, '')] = i; });
  const added = ['[PAD]', '[UNK]', '[CLS]', '[SEP]', '[MASK]']
      .filter((t) => t in vocab)
      .map((t) => ({id: vocab[t], content: t, single_word: false, lstrip: false,
                    rstrip: false, normalized: false, special: true}));
  const sp = (id, typeId) => ({SpecialToken: {id, type_id: typeId}});
  const seq = (id, typeId) => ({Sequence: {id, type_id: typeId}});
  return {
    json: {
      version: '1.0', truncation: null, padding: null, added_tokens: added,
      normalizer: {type: 'BertNormalizer', clean_text: true,
                   handle_chinese_chars: true, strip_accents: null, lowercase: true},
      pre_tokenizer: {type: 'BertPreTokenizer'},
      post_processor: {
        type: 'TemplateProcessing',
        single: [sp('[CLS]', 0), seq('A', 0), sp('[SEP]', 0)],
        pair: [sp('[CLS]', 0), seq('A', 0), sp('[SEP]', 0), seq('B', 1), sp('[SEP]', 1)],
        special_tokens: {
          '[CLS]': {id: '[CLS]', ids: [vocab['[CLS]']], tokens: ['[CLS]']},
          '[SEP]': {id: '[SEP]', ids: [vocab['[SEP]']], tokens: ['[SEP]']},
        },
      },
      decoder: {type: 'WordPiece', prefix: '##', cleanup: true},
      model: {type: 'WordPiece', unk_token: '[UNK]', continuing_subword_prefix: '##',
              max_input_chars_per_word: 100, vocab},
    },
    config: {tokenizer_class: 'BertTokenizer', do_lower_case: true,
             unk_token: '[UNK]', sep_token: '[SEP]', pad_token: '[PAD]',
             cls_token: '[CLS]', mask_token: '[MASK]'},
  };
}

// GPT-2's tokenizer.json as converted from vocab.json + merges.txt.
function gpt2Json(dir) {
  const vocab = readJson(path.join(dir, 'vocab.json'));
  const merges = fs.readFileSync(path.join(dir, 'merges.txt'), 'utf8').split('\n')
      .map((l) => l.replace(/\r$/, ''))
      .filter((l) => l.length > 0 && !l.startsWith('#version'));
  const level = {type: 'ByteLevel', add_prefix_space: false, trim_offsets: true,
                 use_regex: true};
  return {
    json: {
      version: '1.0', truncation: null, padding: null,
      added_tokens: [{id: vocab['<|endoftext|>'], content: '<|endoftext|>',
                      single_word: false, lstrip: false, rstrip: false,
                      normalized: false, special: true}],
      normalizer: null, pre_tokenizer: level, post_processor: level, decoder: level,
      model: {type: 'BPE', dropout: null, unk_token: null,
              continuing_subword_prefix: '', end_of_word_suffix: '',
              fuse_unk: false, vocab, merges},
    },
    config: readJson(path.join(dir, 'tokenizer_config.json')),
  };
}

function fromFiles(dir) {
  const cfgFile = path.join(dir, 'tokenizer_config.json');
  return {
    json: readJson(path.join(dir, 'tokenizer.json')),
    config: fs.existsSync(cfgFile) ? readJson(cfgFile)
                                   : {tokenizer_class: 'PreTrainedTokenizer'},
  };
}

function readTexts(args, withSpam) {
  const texts = [];
  if (args.corpus) {
    const lines = fs.readFileSync(args.corpus, 'utf8').split('\n');
    if (lines[lines.length - 1] === '') lines.pop();
    texts.push(...lines);
  }
  // Newlines cannot appear in corpus lines; these cover them.
  texts.push('line one\nline two', '\n', '\n\n\n', 'a\r\nb', ' \n \n x',
             'trailing newline\n', '\tindented\n\t\tmore', 'end  \n  start');
  if (args.spam && withSpam) {
    const n = parseInt(args['spam-lines'], 10);
    const lines = fs.readFileSync(args.spam, 'utf8').split('\n').filter((l) => l);
    for (const l of lines.slice(0, n)) {
      const t = JSON.parse(l).text;
      // Mojibake (U+FFFD runs next to combining marks) is left out: there the
      // oracle's BERT control-character cleaning differs from the reference
      // library's (which drops all of Unicode's C* categories, as Lathe does).
      if (t.includes('\ufffd')) continue;
      texts.push(t);
      // Re-insert line breaks at sentence ends so e-mail newlines are covered.
      texts.push(t.replace(/\. /g, '.\n'));
    }
  }
  return texts;
}

function runLathe(bin, dir, texts) {
  const input = texts.map((t) => JSON.stringify(t)).join('\n') + '\n';
  const r = spawnSync(bin, ['tokenize', '--tokenizer', dir, '--jsonl'],
                      {input, maxBuffer: 1 << 30, encoding: 'utf8'});
  if (r.error) die(`running ${bin}: ${r.error.message}: ${r.stderr || ''}`);
  if (r.status !== 0) die(`${bin} tokenize --tokenizer ${dir} failed (${r.status}): ${r.stderr}`);
  const out = r.stdout.split('\n').filter((l) => l).map((l) => JSON.parse(l));
  if (out.length !== texts.length) {
    die(`lathe printed ${out.length} lines for ${texts.length} texts`);
  }
  return out;
}

function main() {
  const args = parseArgs(process.argv.slice(2));
  const libDir = path.join(path.resolve(args.oracle), 'node_modules', '@lenml', 'tokenizers');
  if (!fs.existsSync(libDir)) die(`${libDir} is missing (run ./run setup)`);
  const {TokenizerLoader} = require(libDir);
  const assets = path.resolve(args.assets);
  const cases = [
    ['bert-base-uncased', path.join(assets, 'bert-base-uncased'), bertJson],
    ['gpt2', path.join(assets, 'gpt2'), gpt2Json],
    ['llama2', path.join(assets, 'llama2'), fromFiles],
    ['qwen3', path.join(assets, 'qwen3'), fromFiles],
  ];
  const testdata = path.resolve(args.testdata);
  for (const name of fs.readdirSync(testdata).sort()) {
    const dir = path.join(testdata, name);
    if (fs.existsSync(path.join(dir, 'tokenizer.json'))) {
      cases.push([`synthetic/${name}`, dir, fromFiles, false]);
    }
  }
  // The synthetic tokenizers check components on the corpus only: the
  // e-mails' mojibake exposes places where the oracle departs from the
  // reference library (JavaScript's \\s and punctuation classes).
  const allTexts = readTexts(args, true);
  const corpusTexts = readTexts(args, false);
  let failed = 0;
  for (const [name, dir, load, withSpam = true] of cases) {
    const texts = withSpam ? allTexts : corpusTexts;
    const {json, config} = load(dir);
    // The oracle logs a warning for classes it does not know; quiet it.
    const warn = console.warn;
    console.warn = () => {};
    const oracle = TokenizerLoader.fromPreTrained({tokenizerJSON: json, tokenizerConfig: config});
    console.warn = warn;
    const t0 = Date.now();
    const ours = runLathe(args.lathe, dir, texts);
    const latheMs = Date.now() - t0;
    let bad = -1;
    let want = null;
    for (let i = 0; i < texts.length; i++) {
      want = oracle.encode(texts[i], {add_special_tokens: true});
      if (JSON.stringify(want) !== JSON.stringify(ours[i].ids)) {
        bad = i;
        break;
      }
    }
    if (bad >= 0) {
      failed++;
      const shown = texts[bad].length > 300 ? texts[bad].slice(0, 300) + '...' : texts[bad];
      process.stdout.write(
          `FAIL ${name}: text ${bad} ${JSON.stringify(shown)}\n` +
          `  lathe : ${JSON.stringify(ours[bad].ids)}\n` +
          `  oracle: ${JSON.stringify(want)}\n`);
    } else {
      process.stdout.write(`ok   ${name}: ${texts.length} texts agree ` +
                           `(lathe tokenize ${latheMs} ms)\n`);
    }
  }
  process.exit(failed ? 1 : 0);
}

main();

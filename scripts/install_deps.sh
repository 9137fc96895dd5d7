#!/usr/bin/env bash
# Installs the Debian 12 packages lclm builds and tests with. Installs only
# what is missing, so a second run is quick and needs no network.
set -euo pipefail

packages=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # engine libraries
  libopenblas-dev libhwy-dev nlohmann-json3-dev libcli11-dev libpcre2-dev libutf8proc-dev
  libsqlite3-dev libxxhash-dev libcpp-httplib-dev libdnnl-dev libssl-dev
  # the latent store shared over the network (--latent-cache redis://...), and
  # the server its tests start on a loopback port
  libhiredis-dev redis-server
  # torch.save's zip container (lclm compress --format prompt-embeds)
  libzip-dev
  # the Python module (build/python/lclm)
  python3-dev pybind11-dev python3-pybind11
  # the trainer; gloo's headers for c10d's ProcessGroupGloo (data parallel),
  # the version libtorch itself links
  libtorch-dev libgloo-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # independent references: PyTorch for the forward pass, Node.js for the tokenizer
  python3 python3-torch python3-numpy nodejs npm
  # the reference for chat templates: Hugging Face renders them with jinja2
  python3-jinja2
  # real text for the tokenizer parity corpus (Chinese man pages, emoji sequences)
  manpages-zh unicode-data
  # real English text for the trainer's examples (/usr/share/common-licenses)
  base-files
)
# The evaluation's default haystack is the copyright files of 23 of these
# packages and of Debian's required ones (src/eval/haystack.cc): removing one
# from this list changes it. Not python3-sentencepiece, which llama.cpp's
# gguf-py imports: bench/llama_cpp_gguf.py stands in for it.

missing=()
for p in "${packages[@]}"; do
  # Node.js may come from elsewhere than Debian (a newer build on PATH is fine).
  if [[ "$p" == nodejs || "$p" == npm ]] && command -v "${p/nodejs/node}" >/dev/null; then
    continue
  fi
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]} == 0)); then
  echo "install_deps.sh: all ${#packages[@]} packages present"
  exit 0
fi

echo "install_deps.sh: installing ${missing[*]}"
sudo=""
if ((EUID != 0)); then
  command -v sudo >/dev/null || { echo "install_deps.sh: run as root or install sudo" >&2; exit 1; }
  sudo="sudo"
fi
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

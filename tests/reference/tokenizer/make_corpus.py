#!/usr/bin/env python3
"""Builds the tokenizer parity corpus: a JSONL file of {"text": ...} lines.

The text comes from files that Debian packages put on the machine (licences,
package documentation, C headers, the Python standard library, the Chinese
man pages of manpages-zh, the emoji lists of unicode-data) plus generated
segments aimed at the tokenizer's edge cases: digit and whitespace runs,
special-token strings whole and malformed, mixed scripts, non-NFC text.

The output is a function of the files present and --seed: files are taken in
a fixed order, within fixed byte budgets, and all randomness comes from one
seeded generator.
"""

import argparse
import glob
import gzip
import hashlib
import json
import os
import random
import sys

# Bytes of text taken from each source.
BUDGETS = {
    "licenses": 250_000,
    "docs": 250_000,
    "c_headers": 200_000,
    "python": 150_000,
    "chinese": 250_000,
    "emoji": 100_000,
}
# Bytes taken from the start of any one file, so that many files contribute.
MAX_BYTES_PER_FILE = 24_000


def spread_order(paths):
    """A fixed order that mixes files from all directories, unlike sorting."""
    return sorted(set(paths), key=lambda p: hashlib.sha1(p.encode()).hexdigest())


def read_text(path):
    """The file's text (gunzipped for .gz), or None if it is not UTF-8."""
    try:
        opener = gzip.open if path.endswith(".gz") else open
        with opener(path, "rb") as f:
            data = f.read()
        return data.decode("utf-8")
    except (OSError, UnicodeDecodeError, EOFError):
        return None


def take_files(paths, budget):
    """Texts of the first files in `paths` that fit in `budget` bytes."""
    texts = []
    used = 0
    seen = set()
    for path in paths:
        real = os.path.realpath(path)
        if real in seen or not os.path.isfile(real):
            continue
        seen.add(real)
        text = read_text(path)
        if not text or "\ufeff" in text:
            # U+FEFF is where the two references disagree (see docs/tokenizer.md).
            continue
        text = text[:MAX_BYTES_PER_FILE]
        size = len(text.encode())
        if used + size > budget:
            continue
        texts.append(text)
        used += size
        if used >= budget * 0.98:
            break
    return texts


def split_documents(text, rng):
    """Cuts text at blank lines into documents of 200 to 6000 characters."""
    paragraphs = text.split("\n\n")
    documents = []
    current = []
    target = rng.randint(200, 6000)
    for i, paragraph in enumerate(paragraphs):
        current.append(paragraph + ("\n\n" if i + 1 < len(paragraphs) else ""))
        if sum(len(p) for p in current) >= target:
            documents.append("".join(current))
            current = []
            target = rng.randint(200, 6000)
    if current:
        documents.append("".join(current))
    return [d for d in documents if d]


def python_stdlib_files():
    """The .py files of Debian's python3.X package (not a pyenv or venv)."""
    for stdlib in sorted(glob.glob("/usr/lib/python3.[0-9]*")):
        if os.path.isfile(os.path.join(stdlib, "os.py")):
            return glob.glob(os.path.join(stdlib, "*.py")) + glob.glob(
                os.path.join(stdlib, "*/*.py"))
    return []


def emoji_texts(rng):
    """The emoji test list in chunks, and emoji sequences mixed into text."""
    texts = []
    test_file = read_text("/usr/share/unicode/emoji/emoji-test.txt") or ""
    lines = test_file.splitlines(keepends=True)
    emojis = []
    for line in lines:
        if "; fully-qualified" in line and "#" in line:
            emojis.append(line.split("#", 1)[1].split()[0])
    zwj_file = read_text("/usr/share/unicode/emoji/emoji-zwj-sequences.txt") or ""
    for line in zwj_file.splitlines():
        if line and not line.startswith("#"):
            code_points = line.split(";", 1)[0].split()
            emojis.append("".join(chr(int(c, 16)) for c in code_points))

    used = 0
    budget = BUDGETS["emoji"]
    # Raw lines of the list: code points, padding runs and emoji side by side.
    for start in range(0, len(lines), 120):
        if used >= budget // 2:
            break
        chunk = "".join(lines[start:start + 120])
        texts.append(chunk)
        used += len(chunk.encode())
    if not emojis:
        return texts

    skin_tones = [chr(c) for c in range(0x1F3FB, 0x1F400)]
    flags = ["".join(chr(0x1F1E6 + ord(c) - ord("A")) for c in pair)
             for pair in ["CN", "US", "DE", "JP", "BR", "IN", "FR", "GB", "UA", "ZA"]]
    extras = [
        "1\ufe0f\u20e3", "#\ufe0f\u20e3", "\u2764\ufe0f", "\u2764\ufe0e",
        "\U0001F3F4\U000E0067\U000E0062\U000E0065\U000E006E\U000E0067\U000E007F",
        "\U0001F44B" + skin_tones[2], "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466",
    ]
    words = ["hello", "great", "done", "好的", "謝謝", "ok", "lol", "¡sí!", "ура", "👍"]
    while used < budget:
        parts = []
        for _ in range(rng.randint(5, 60)):
            kind = rng.random()
            if kind < 0.5:
                parts.append(rng.choice(emojis))
            elif kind < 0.6:
                parts.append(rng.choice(emojis) + rng.choice(skin_tones))
            elif kind < 0.7:
                parts.append(rng.choice(flags))
            elif kind < 0.8:
                parts.append(rng.choice(extras))
            else:
                parts.append(rng.choice(words))
            parts.append(rng.choice(["", "", " ", "  ", "\n", ", ", "!"]))
        text = "".join(parts)
        texts.append(text)
        used += len(text.encode())
    return texts


SPECIAL_TOKENS = ["<|im_start|>", "<|im_end|>", "<|endoftext|>", "<think>", "</think>",
                  "<tool_call>", "</tool_call>", "<|fim_prefix|>", "<|vision_pad|>"]
MALFORMED_SPECIAL = ["<|im_start", "im_start|>", "<|im_end|>>", "<<|im_start|>", "<|IM_START|>",
                     "<| im_start |>", "<|endoftext|", "<|im_end", "<think", "</think",
                     "<|im_st<|im_end|>art|>", "<|>", "<||>", "|>", "<|", "< |im_end| >"]

SCRIPT_WORDS = [
    "Hello", "world", "naïve", "façade", "Straße", "Ελληνικά", "русский", "язык", "עברית",
    "العربية", "हिन्दी", "ภาษาไทย", "한국어", "日本語", "ひらがな", "カタカナ", "中文", "汉字",
    "Tiếng", "Việt", "ქართული", "Հայերեն", "ꦧꦱꦗꦮ", "ᏣᎳᎩ", "𝔘𝔫𝔦𝔠𝔬𝔡𝔢", "𝓜𝓪𝓽𝓱",
    "ｆｕｌｌｗｉｄｔｈ", "ﾊﾝｶｸ", "O'Brien", "it's", "IT'S", "we'll", "WE'LL", "they've", "I'm",
    "she'd", "don't", "'S", "'t", "'re", "'ve", "'m", "'ll", "'d", "’s", "l'été",
]
COMBINING = ["e\u0301", "A\u030a", "\u212b", "\u2126", "o\u0308\u0304", "a\u0323\u0301",
             "a\u0301\u0323", "q\u0307\u0323", "\u1100\u1161\u11a8", "\u1112\u1161\u11ab",
             "\uf900", "\uf91f", "\u0958", "\u1e9b\u0323", "ﬁ", "x\u0338", "=\u0338",
             "\u00c5", "n\u0303", "\u0041\u030a\u0301", "\u0d4a", "\u0d46\u0d3e", "\u0cca"]
WHITESPACE = [" ", "  ", "\t", "\n", "\r\n", "\r", "\n\n", " \n", "\t\n", "\u00a0", "\u3000",
              "\u2003", "\u2009", "\u202f", "\u2028", "\u2029", "\x0b", "\x0c"]


def generated_texts(rng):
    texts = []
    # Digit runs, with the separators that numbers carry.
    for _ in range(120):
        parts = []
        for _ in range(rng.randint(1, 12)):
            run = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 400)))
            parts.append(run)
            parts.append(rng.choice([" ", ",", ".", "-", "/", ":", "", "\n", "e", "x", "%"]))
        texts.append("".join(parts))
    texts.append("1" * 5000)
    texts.append("3.14159265358979323846264338327950288419716939937510" * 20)
    texts.append("١٢٣٤٥ ０１２３４ १२३४ ²³ ½ ⅷ Ⅻ 一二三 𝟘𝟙𝟚 ①②③")

    # Whitespace runs: alone, between words, trailing, mixed.
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(1, 30)):
            parts.append("".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 40))))
            if rng.random() < 0.7:
                parts.append(rng.choice(SCRIPT_WORDS + ["x", "1", "!", "#", "//", "{"]))
        texts.append("".join(parts))
    texts.append(" " * 3000)
    texts.append("\n" * 500 + "end")
    texts.append("line\r\n" * 200)
    texts.append("\t\t  \t" * 100 + "x" + "   \n  " * 100)

    # Special tokens whole, glued, malformed, and inside chat-formatted text.
    for _ in range(150):
        parts = []
        for _ in range(rng.randint(1, 25)):
            kind = rng.random()
            if kind < 0.3:
                parts.append(rng.choice(SPECIAL_TOKENS))
            elif kind < 0.55:
                parts.append(rng.choice(MALFORMED_SPECIAL))
            elif kind < 0.75:
                parts.append(rng.choice(WHITESPACE))
            else:
                parts.append(rng.choice(SCRIPT_WORDS + ["user", "assistant", "system"]))
        texts.append("".join(parts))
    for _ in range(40):
        turns = []
        for role in ["system", "user", "assistant"] * rng.randint(1, 3):
            words = " ".join(rng.choice(SCRIPT_WORDS) for _ in range(rng.randint(1, 40)))
            think = f"<think>\n{words}\n</think>\n\n" if role == "assistant" else ""
            turns.append(f"<|im_start|>{role}\n{think}{words}<|im_end|>\n")
        texts.append("".join(turns) + "<|endoftext|>")
    # Combining marks right after a special token compose with '>' under
    # whole-text NFC; added tokens must be cut out before normalisation.
    texts.append("<|im_end|>\u0338 <think>\u0338x</think>\u0301")

    # Mixed scripts, punctuation and contractions.
    punctuation = list(".,;:!?…—–-'\"«»“”‘’()[]{}<>/\\@#$%^&*_+=|~`·。、，！？：；（）【】《》")
    for _ in range(300):
        parts = []
        for _ in range(rng.randint(3, 60)):
            kind = rng.random()
            if kind < 0.55:
                parts.append(rng.choice(SCRIPT_WORDS))
            elif kind < 0.75:
                parts.append(rng.choice(punctuation) * rng.randint(1, 3))
            elif kind < 0.85:
                parts.append(str(rng.randint(0, 10**rng.randint(1, 8))))
            else:
                parts.append(rng.choice(COMBINING))
            parts.append(rng.choice([" ", " ", "", "\n", "  "]))
        texts.append("".join(parts))

    # Non-NFC text: combining sequences in and around words.
    for _ in range(200):
        parts = []
        for _ in range(rng.randint(2, 40)):
            parts.append(rng.choice(COMBINING) if rng.random() < 0.5 else rng.choice(SCRIPT_WORDS))
            parts.append(rng.choice(["", " ", "\n"]))
        texts.append("".join(parts))

    # Control characters and rare code points. U+0085 is left out: the two
    # references disagree on whether it is whitespace (see docs/tokenizer.md).
    texts.append("".join(chr(c) for c in range(1, 32)) + "\x7f\x80\x9f")
    texts.append("\u200b\u200c\u200d\u2060\u00ad zero\u200bwidth soft\u00adhyphen")
    texts.append("\U0001F600\U000E0001\U0010FFFD\uFFFD\uE000 private use \U000F0000")
    return texts


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", required=True, help="JSONL file to write")
    parser.add_argument("--seed", type=int, default=20250601)
    args = parser.parse_args()
    rng = random.Random(args.seed)

    sources = {
        "licenses": spread_order(glob.glob("/usr/share/common-licenses/*")),
        "docs": spread_order(
            p for pattern in ["README*", "NEWS*", "*.txt", "*.md", "*.txt.gz", "*.md.gz"]
            for p in glob.glob(f"/usr/share/doc/*/{pattern}")),
        "c_headers": spread_order(glob.glob("/usr/include/**/*.h", recursive=True)),
        "python": spread_order(python_stdlib_files()),
        "chinese": spread_order(glob.glob("/usr/share/man/zh_CN/man*/*.gz")),
    }
    documents = []
    for name, paths in sources.items():
        texts = take_files(paths, BUDGETS[name])
        if not texts:
            sys.exit(f"make_corpus.py: no text found for {name}; "
                     "are the Debian packages manpages-zh and unicode-data installed?")
        for text in texts:
            documents.extend(split_documents(text, rng))
    emoji = emoji_texts(rng)
    if not emoji:
        sys.exit("make_corpus.py: /usr/share/unicode/emoji/emoji-test.txt is missing; "
                 "install the Debian package unicode-data")
    documents.extend(emoji)
    documents.extend(generated_texts(rng))

    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    partial = args.output + ".partial"
    with open(partial, "w", encoding="utf-8", newline="\n") as out:
        for text in documents:
            out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    os.replace(partial, args.output)
    size = sum(len(d.encode()) for d in documents)
    print(f"wrote {len(documents)} documents, {size} bytes of text, to {args.output}")


if __name__ == "__main__":
    main()

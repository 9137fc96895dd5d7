"""The Python module against the lclm CLI: the same model, prompt and settings
must give the same tokens, latents and text; streaming must give what the
call does at once; compute must let other Python threads run.

Run by CTest (tests/python/tests.cmake) with PYTHONPATH=build/python; by hand:
    PYTHONPATH=build/python LCLM_SOURCE_DIR=. LCLM_BINARY_DIR=build \\
        /usr/bin/python3 -m unittest discover -s tests/python -v
"""
import json
import math
import os
import pathlib
import shutil
import struct
import subprocess
import tempfile
import threading
import time
import unittest

import numpy as np

import lclm

SOURCE = pathlib.Path(os.environ.get("LCLM_SOURCE_DIR", "."))
BINARY = pathlib.Path(os.environ.get("LCLM_BINARY_DIR", "build"))
MODEL = SOURCE / "models" / "lclm-small"
CLI = BINARY / "bin" / "lclm"

DOC = ("The lighthouse keeper logs every ship. The pass key is 48213. "
       "On the fifth night she counted thirty-five ships, and on the sixth none. ") * 6
QUESTION = "What is the pass key?"


def cli(*args):
    return subprocess.run([str(CLI), *args], check=True, capture_output=True).stdout


def read_latents_file(path):
    """The F32 tensor "latents" of a safetensors file, read by hand."""
    raw = pathlib.Path(path).read_bytes()
    (header_len,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + header_len])
    entry = header["latents"]
    begin, end = entry["data_offsets"]
    data = np.frombuffer(raw[8 + header_len + begin:8 + header_len + end], dtype="<f4")
    return data.reshape(entry["shape"]), header["__metadata__"]


class ModelTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.model = lclm.Model(str(MODEL), threads=1)

    def test_describes_the_checkpoint(self):
        m = self.model
        self.assertTrue(m.is_lclm)
        config = json.loads((MODEL / "model_config.json").read_text())
        self.assertEqual(m.ratio, config["compression_ratio"])
        decoder = json.loads((MODEL / "decoder" / "config.json").read_text())
        self.assertEqual(m.hidden_size, decoder["hidden_size"])
        self.assertEqual(m.context_length, decoder["max_position_embeddings"])
        self.assertEqual(m.path, str(MODEL))

    def test_tokenize_gives_the_clis_ids_and_round_trips(self):
        text = "Héllo, wörld! 12345 <|im_start|>user\n日本語"
        want = json.loads(cli("tokenize", "-m", str(MODEL), "-p", text, "--json"))
        self.assertEqual(self.model.tokenize(text), want)
        self.assertEqual(self.model.detokenize(want), text)
        self.assertIsInstance(self.model.tokenize(text, encoder=True), list)
        # A token cut mid-character shows U+FFFD, as a client would.
        ids = self.model.tokenize("日")
        if len(ids) > 1:
            self.assertIn("\ufffd", self.model.detokenize(ids[:1]))

    def test_compress_gives_the_latents_file_of_lclm_compress(self):
        with tempfile.TemporaryDirectory() as tmp:
            doc = pathlib.Path(tmp) / "doc.txt"
            doc.write_text(DOC)
            for ratio in (4, 8):
                out = pathlib.Path(tmp) / f"x{ratio}.latents"
                cli("compress", "-m", str(MODEL), "-f", str(doc), "-o", str(out),
                    "--ratio", str(ratio), "-t", "1")
                want, meta = read_latents_file(out)
                got = self.model.compress(DOC, ratio=ratio)
                self.assertEqual(got.dtype, np.float32)
                self.assertEqual(got.shape, (int(meta["n_latents"]), self.model.hidden_size))
                np.testing.assert_array_equal(got, want)
        self.assertEqual(self.model.compress(DOC).shape, self.model.compress(DOC, ratio=4).shape)

    def test_greedy_generation_gives_the_clis_text(self):
        prompt = lclm.memory(DOC) + "\n" + QUESTION
        for ratio in (4, 16):
            want = cli("generate", "-m", str(MODEL), "-p", prompt, "--chat", "--temp", "0",
                       "-n", "24", "--ratio", str(ratio), "-t", "1").decode()
            got = self.model.generate(prompt, chat=True, temperature=0, max_tokens=24,
                                      ratio=ratio)
            self.assertEqual(got + "\n", want)

    def test_cache_types_give_the_clis_text_with_the_same_types(self):
        prompt = lclm.memory(DOC) + "\n" + QUESTION
        model = lclm.Model(str(MODEL), threads=1, cache_type_k="q8_0", cache_type_v="f32")
        want = cli("generate", "-m", str(MODEL), "-p", prompt, "--chat", "--temp", "0",
                   "-n", "24", "-ctk", "q8_0", "-ctv", "f32", "-t", "1").decode()
        self.assertEqual(model.generate(prompt, chat=True, temperature=0, max_tokens=24) + "\n",
                         want)

    def test_a_stream_gives_the_same_text_in_pieces(self):
        prompt = lclm.memory(DOC) + "\n" + QUESTION
        whole = self.model.generate(prompt, chat=True, temperature=0, max_tokens=20)
        stream = self.model.generate(prompt, chat=True, temperature=0, max_tokens=20,
                                     stream=True)
        with self.assertRaises(ValueError):
            stream.stats  # not ended yet
        pieces = list(stream)
        self.assertGreater(len(pieces), 1)
        self.assertEqual("".join(pieces), whole)
        stats = stream.stats
        self.assertEqual(stats["generated_tokens"], 20)
        self.assertEqual(stats["stop"], "length")
        self.assertGreater(stats["latents"], 0)

    def test_seeded_sampling_repeats_and_chat_messages_match_a_user_string(self):
        a = self.model.generate("Once upon a time", seed=7, max_tokens=16)
        b = self.model.generate("Once upon a time", seed=7, max_tokens=16)
        self.assertEqual(a, b)
        as_str = self.model.generate(QUESTION, chat=True, temperature=0, max_tokens=8)
        as_list = self.model.generate([{"role": "user", "content": QUESTION}], chat=True,
                                      temperature=0, max_tokens=8)
        self.assertEqual(as_str, as_list)
        with_system = self.model.generate(
            [{"role": "developer", "content": "Answer briefly."},
             {"role": "user", "content": QUESTION}], chat=True, temperature=0, max_tokens=8)
        want = cli("generate", "-m", str(MODEL), "-p", QUESTION, "--chat", "--system",
                   "Answer briefly.", "--temp", "0", "-n", "8", "-t", "1").decode()
        self.assertEqual(with_system + "\n", want)

    def test_json_schema_constrains_the_answer(self):
        schema = {"type": "object", "properties": {"ok": {"type": "boolean"},
                                                   "size": {"enum": ["S", "M", "L"]}},
                  "required": ["ok", "size"], "additionalProperties": False}
        done = 0
        for seed in range(1, 5):
            text = self.model.generate("Answer in JSON.", chat=True, seed=seed, max_tokens=64,
                                       json_schema=schema)
            try:
                doc = json.loads(text)
            except json.JSONDecodeError:
                continue  # cut off by max_tokens
            done += 1
            self.assertEqual(set(doc), {"ok", "size"})
            self.assertIsInstance(doc["ok"], bool)
            self.assertIn(doc["size"], ("S", "M", "L"))
        self.assertGreater(done, 0)
        any_object = self.model.generate("x", seed=1, max_tokens=8, json_schema={})
        self.assertTrue(any_object.lstrip().startswith("{"), any_object)
        with self.assertRaisesRegex(lclm.Error, "'pattern' is not supported"):
            self.model.generate("x", json_schema={"type": "string", "pattern": "a"})

    def test_logprobs_score_each_token_of_the_text(self):
        context = lclm.memory(DOC) + "\n" + QUESTION + "\n"
        scored = self.model.logprobs(" The pass key is 48213.", context=context)
        self.assertEqual([t for t, _ in scored], self.model.tokenize(" The pass key is 48213."))
        self.assertTrue(all(lp <= 0 for _, lp in scored))
        # The model's own greedy answer is at least as likely, token by token
        # on the first, as any other first token: its first logprob is the max.
        answer = self.model.generate(context, temperature=0, max_tokens=6)
        first = self.model.logprobs(answer, context=context)[0][1]
        other = self.model.logprobs(" zebra", context=context)[0][1]
        self.assertGreaterEqual(first, other)
        # No context: every token but the first.
        self.assertEqual(len(self.model.logprobs("one two three")),
                         len(self.model.tokenize("one two three")) - 1)
        ppl = math.exp(-sum(lp for _, lp in scored) / len(scored))
        self.assertGreater(ppl, 1.0)

    def test_compute_releases_the_gil(self):
        def spin_rate(seconds):
            spins, stop = 0, time.perf_counter() + seconds
            while time.perf_counter() < stop:
                spins += 1
            return spins / seconds

        def spins_during(work):
            done = threading.Event()
            t = threading.Thread(target=lambda: (work(), done.set()))
            spins, start = 0, time.perf_counter()
            t.start()
            while not done.is_set():
                spins += 1
                time.perf_counter()
            t.join()
            return spins, time.perf_counter() - start

        long_text = DOC * 4
        for name, work in [
            ("compress", lambda: self.model.compress(DOC * 20)),
            ("logprobs", lambda: self.model.logprobs(long_text)),
            # A plain prompt: its prefill runs inside the stream's steps
            # (twice the logprobs text: prefill on the bf16 attention kernels
            # took under 0.2 s for long_text).
            ("generate", lambda: self.model.generate(long_text * 2, max_tokens=2)),
        ]:
            with self.subTest(name):
                rate = spin_rate(0.05)
                spins, elapsed = spins_during(work)
                self.assertGreater(elapsed, 0.2, "too little work to tell")
                # Holding the GIL, the call would let this thread spin only
                # around it (a 5 ms switch interval, a few % of the call);
                # released, it spins the whole time, at half speed or more
                # even when the two threads share one core.
                self.assertGreater(spins, 0.15 * rate * elapsed)

    def test_errors_name_what_is_wrong(self):
        with self.assertRaisesRegex(lclm.Error, "no-such-model"):
            lclm.Model("/nonexistent/no-such-model")
        with self.assertRaisesRegex(ValueError, "q5"):
            lclm.Model(str(MODEL), quant="q5")
        with self.assertRaisesRegex(ValueError, "cache_type_v 'q5_1'"):
            lclm.Model(str(MODEL), cache_type_v="q5_1")
        with self.assertRaisesRegex(lclm.Error, "ratio"):
            self.model.compress(DOC, ratio=0)
        with self.assertRaisesRegex(lclm.Error, "temp"):
            self.model.generate("x", temperature=-1)
        with self.assertRaisesRegex(lclm.Error, "empty"):
            self.model.logprobs("")
        with self.assertRaisesRegex(ValueError, "role"):
            self.model.generate([{"role": "wizard", "content": "x"}], chat=True)
        with self.assertRaisesRegex(TypeError, "chat=True"):
            self.model.generate([{"role": "user", "content": "x"}])
        with self.assertRaisesRegex(lclm.Error, "positions"):
            self.model.generate("word " * 40000, max_tokens=1)


class PlainModelTest(unittest.TestCase):
    def test_a_plain_qwen3_model_generates_and_refuses_compression(self):
        with tempfile.TemporaryDirectory() as tmp:
            plain = pathlib.Path(tmp) / "plain"
            subprocess.run([str(BINARY / "bin" / "lclm-make-model"), "-o", str(plain),
                            "--seed", "3"], check=True, capture_output=True)
            for f in ("tokenizer.json", "tokenizer_config.json"):
                shutil.copy(SOURCE / "third_party" / "qwen3-tokenizer" / f, plain / f)
            m = lclm.Model(str(plain), threads=1)
            self.assertFalse(m.is_lclm)
            self.assertIsNone(m.ratio)
            text = m.generate("Hello", temperature=0, max_tokens=4)
            want = subprocess.run([str(CLI), "generate", "-m", str(plain), "-p", "Hello",
                                   "--temp", "0", "-n", "4", "-t", "1"],
                                  check=True, capture_output=True).stdout.decode()
            self.assertEqual(text + "\n", want)
            with self.assertRaisesRegex(lclm.Error, "plain model"):
                m.compress("x")
            with self.assertRaisesRegex(lclm.Error, "plain model"):
                m.tokenize("x", encoder=True)


if __name__ == "__main__":
    unittest.main()

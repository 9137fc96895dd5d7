// The Python module `lclm`: the Engine API (runtime/engine.h) for people who
// live in Python. Compute runs with the GIL released, under the model's own
// lock, so other Python threads go on while a model works and two threads
// sharing a model take turns instead of racing on its latent cache.
//
//   import lclm
//   m = lclm.Model("models/lclm-small", threads=2)
//   doc = lclm.memory(open("report.txt").read())          # compressed region
//   print(m.generate(doc + "\nWho signed it?", chat=True, ratio=8))
//   for piece in m.generate("Once", stream=True): print(piece, end="")
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "compression/memory_regions.h"
#include "format/dtype.h"
#include "runtime/chat_template.h"
#include "runtime/engine.h"
#include "runtime/json_schema.h"
#include "tokenizer/tokenizer.h"
#include "util/error.h"
#include "util/threads.h"

namespace py = pybind11;

namespace lclm::python {
namespace {

std::optional<DType> parse_quant(const std::optional<std::string>& quant) {
  if (!quant) return std::nullopt;
  if (*quant == "q8_0") return DType::Q8_0;
  if (*quant == "q4_0") return DType::Q4_0;
  throw py::value_error("quant must be None, 'q8_0' or 'q4_0', not '" + *quant + "'");
}

// The prompt a generate() call runs: plain text as given, or, with chat,
// one user turn (a str) or the messages (a list of {"role", "content"}) in
// the model's chat template, ending with the assistant's turn opened.
std::string prompt_text(const Engine& engine, const py::object& prompt, bool chat) {
  if (py::isinstance<py::str>(prompt)) {
    auto text = prompt.cast<std::string>();
    return chat ? engine.chat_template().render(messages_json({{"user", std::move(text)}}), true)
                : text;
  }
  if (!chat) throw py::type_error("prompt must be a str (a list of messages needs chat=True)");
  if (!py::isinstance<py::list>(prompt)) {
    throw py::type_error("prompt must be a str or a list of {'role', 'content'} dicts");
  }
  std::vector<ChatMessage> messages;
  for (const py::handle m : prompt.cast<py::list>()) {
    if (!py::isinstance<py::dict>(m)) throw py::type_error("each message must be a dict");
    const auto d = m.cast<py::dict>();
    if (!d.contains("role") || !d.contains("content")) {
      throw py::value_error("each message needs 'role' and 'content'");
    }
    auto role = d["role"].cast<std::string>();
    if (role == "developer") role = "system";  // OpenAI's newer name for it
    if (role != "system" && role != "user" && role != "assistant") {
      throw py::value_error("message role must be system, developer, user or assistant, not '" +
                            role + "'");
    }
    messages.push_back({std::move(role), d["content"].cast<std::string>()});
  }
  return engine.chat_template().render(messages_json(messages), true);
}

struct GenerateArgs {
  int max_tokens = 128;
  float temperature = 0.8f;
  int top_k = 40;
  float top_p = 0.95f;
  float min_p = 0.05f;
  float repeat_penalty = 1.0f;
  std::optional<std::uint64_t> seed;
  std::optional<std::int64_t> ratio;
  std::optional<std::string> json_schema;  // JSON text; "{}": any object
};

class Model;

// One generation handed out a piece of text at a time: each next() runs the
// engine (GIL released) until whole UTF-8 characters come out or it ends.
class Stream {
 public:
  // owner: the Python object of model, kept alive while the stream is.
  Stream(Model& model, py::object owner, std::string prompt, const GenerateArgs& args);
  Stream& iter() { return *this; }
  std::string next();
  // After the end: prompt_tokens, generated_tokens, ttft_s, decode_tokens_per_s, stop.
  py::dict stats() const;

 private:
  bool step();  // one engine step; false when the generation is done

  Model& model_;
  py::object owner_;
  Session session_;
  PreparedPrompt prompt_;
  std::unique_ptr<Generation> generation_;
  std::vector<float> logits_;
  Utf8Stream utf8_;
  std::deque<std::string> pieces_;
  std::optional<GenerationStats> stats_;
};

class Model {
 public:
  Model(const std::string& path, int threads, const std::optional<std::string>& quant,
        std::optional<std::int64_t> ratio, const std::optional<std::string>& latent_cache,
        const std::string& cache_type_k, const std::string& cache_type_v) {
    EngineOptions o;
    o.threads = threads;
    o.quant = parse_quant(quant);
    o.ratio = ratio;
    if (latent_cache) o.latent_store.location = *latent_cache;
    try {
      o.cache_types = {parse_kv_cache_type(cache_type_k, "cache_type_k"),
                       parse_kv_cache_type(cache_type_v, "cache_type_v")};
    } catch (const Error& e) {
      throw py::value_error(e.what());
    }
    py::gil_scoped_release unlocked;
    engine_ = Engine::load(path, o);
  }

  Engine& engine() { return *engine_; }
  std::mutex& lock() { return mutex_; }
  // Under lock().
  void pin_json_vocab() {
    if (!json_vocab_) json_vocab_ = JsonConstraint::vocab(engine_->tokenizer());
  }

  std::vector<std::int32_t> tokenize(const std::string& text, bool encoder) {
    if (encoder && !engine_->lclm()) {
      throw Error(engine_->dir().string() + " is a plain model: it has no encoder tokenizer");
    }
    const Tokenizer& t = encoder ? engine_->lclm()->encoder_tokenizer() : engine_->tokenizer();
    py::gil_scoped_release unlocked;
    return t.encode(text);
  }

  std::string detokenize(const std::vector<std::int32_t>& ids) const {
    return valid_utf8(engine_->tokenizer().decode(ids));
  }

  py::array_t<float> compress(const std::string& text, std::optional<std::int64_t> ratio) {
    if (!engine_->lclm()) {
      throw Error(engine_->dir().string() +
                  " is a plain model: compress() needs an LCLM checkpoint");
    }
    Latents latents;
    {
      py::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> hold(mutex_);
      set_num_threads(engine_->threads());
      latents = engine_->lclm()->compress(text, ratio);
    }
    py::array_t<float> out({latents.count(), latents.dim});
    std::memcpy(out.mutable_data(), latents.data.data(), latents.bytes());
    return out;
  }

  py::object generate(py::object self, const py::object& prompt, const GenerateArgs& args,
                      bool chat, bool stream) {
    std::string text = prompt_text(*engine_, prompt, chat);
    if (stream) return py::cast(std::make_unique<Stream>(*this, self, std::move(text), args));
    std::string out;
    {
      Stream s(*this, self, std::move(text), args);
      // Each piece returns to Python for a moment, so Ctrl-C stops a long
      // generation (KeyboardInterrupt) instead of waiting for its end.
      for (;;) {
        if (PyErr_CheckSignals() != 0) throw py::error_already_set();
        try {
          out += s.next();
        } catch (const py::stop_iteration&) {
          break;
        }
      }
    }
    return py::str(out);
  }

  std::vector<std::pair<std::int32_t, float>> logprobs(const std::string& text,
                                                       const std::string& context,
                                                       std::optional<std::int64_t> ratio) {
    ScoredText s;
    {
      py::gil_scoped_release unlocked;
      std::lock_guard<std::mutex> hold(mutex_);
      s = engine_->score(context, text, ratio);
    }
    std::vector<std::pair<std::int32_t, float>> out;
    for (std::size_t i = 0; i < s.ids.size(); ++i) out.emplace_back(s.ids[i], s.logprobs[i]);
    return out;
  }

 private:
  std::unique_ptr<Engine> engine_;
  std::mutex mutex_;
  std::shared_ptr<const JsonConstraint::Vocab> json_vocab_;
};

Stream::Stream(Model& model, py::object owner, std::string prompt, const GenerateArgs& args)
    : model_(model), owner_(std::move(owner)), session_(model.engine().new_session()) {
  GenerationOptions o;
  o.n_predict = args.max_tokens;
  o.sampling.temperature = args.temperature;
  o.sampling.top_k = args.top_k;
  o.sampling.top_p = args.top_p;
  o.sampling.min_p = args.min_p;
  o.sampling.repeat_penalty = args.repeat_penalty;
  o.sampling.seed = args.seed ? *args.seed : std::random_device{}();
  o.stop_ids = model.engine().stop_ids();
  o.sampling.validate();
  std::shared_ptr<const JsonGrammar> grammar;
  if (args.json_schema) {
    grammar = JsonGrammar::from_user_schema(nlohmann::json::parse(*args.json_schema));
  }
  Engine& engine = model.engine();
  logits_.resize(static_cast<std::size_t>(engine.decoder().config().vocab_size));
  py::gil_scoped_release unlocked;
  std::lock_guard<std::mutex> hold(model.lock());
  if (grammar) {
    // The vocabulary in byte order is sorted once per model, not per call.
    model.pin_json_vocab();
    o.constraint = std::make_shared<JsonConstraint>(grammar, engine.tokenizer(), o.stop_ids);
  }
  prompt_ = engine.prepare(prompt, args.ratio, engine.max_context() - 1);
  generation_ = std::make_unique<Generation>(
      session_, prompt_.ids, prompt_.embeddings.data(), o, [this](std::int32_t id) {
        std::string piece = utf8_.push(model_.engine().tokenizer().token_bytes(id));
        if (!piece.empty()) pieces_.push_back(std::move(piece));
        return true;
      });
}

bool Stream::step() {
  Generation& g = *generation_;
  const Qwen3Model& decoder = model_.engine().decoder();
  if (g.prefilling()) {
    g.prefill_step();
  } else if (!g.done()) {
    decoder.logits(g.row(), 1, logits_.data());
    if (g.accept(logits_.data())) {
      decoder.forward(g.row(), 1, g.cache(), AttentionMask::Causal);
      g.forwarded();
    }
  }
  return !g.done();
}

std::string Stream::next() {
  if (pieces_.empty() && !stats_) {
    py::gil_scoped_release unlocked;
    std::lock_guard<std::mutex> hold(model_.lock());
    set_num_threads(model_.engine().threads());
    while (pieces_.empty() && step()) {
    }
    if (generation_->done() && pieces_.empty()) {
      stats_ = generation_->finish();
      std::string rest = valid_utf8(utf8_.flush());
      if (!rest.empty()) pieces_.push_back(std::move(rest));
    }
  }
  if (pieces_.empty()) throw py::stop_iteration();
  std::string piece = std::move(pieces_.front());
  pieces_.pop_front();
  return piece;
}

py::dict Stream::stats() const {
  if (!stats_) throw py::value_error("the generation has not ended yet");
  py::dict d;
  d["prompt_tokens"] = stats_->prompt_tokens;
  d["generated_tokens"] = stats_->generated_tokens;
  d["ttft_s"] = stats_->ttft_seconds;
  d["decode_tokens_per_s"] = stats_->decode_tokens_per_second();
  d["stop"] = std::string(stop_reason_name(stats_->stop));
  d["latents"] = prompt_.stats.latents;
  d["cache_hits"] = prompt_.stats.cache_hits;
  return d;
}

}  // namespace
}  // namespace lclm::python

PYBIND11_MODULE(lclm, m) {
  using namespace lclm::python;
  m.doc() =
      "lclm: latent context language models on CPU. A Model loads a plain Qwen3 model or an "
      "LCLM checkpoint; text inside <|memory_start|>...<|memory_end|> (see memory()) is "
      "compressed to latents before the decoder reads it.";
  py::register_exception<lclm::Error>(m, "Error", PyExc_RuntimeError);
  m.attr("__version__") = "0.1.0";

  m.def(
      "memory",
      [](const std::string& text) {
        return std::string(lclm::kMemoryStart) + text + std::string(lclm::kMemoryEnd);
      },
      py::arg("text"),
      "The text marked as a memory region: an LCLM compresses it instead of reading it.");

  py::class_<Stream>(m, "Stream", "Pieces of a generation's text, as they are generated.")
      .def("__iter__", &Stream::iter, py::return_value_policy::reference_internal)
      .def("__next__", &Stream::next)
      .def_property_readonly("stats", &Stream::stats,
                             "After the last piece: prompt_tokens, generated_tokens, ttft_s, "
                             "decode_tokens_per_s, stop, latents, cache_hits.");

  py::class_<Model>(m, "Model")
      .def(py::init<const std::string&, int, const std::optional<std::string>&,
                    std::optional<std::int64_t>, const std::optional<std::string>&,
                    const std::string&, const std::string&>(),
           py::arg("path"), py::arg("threads") = 0, py::arg("quant") = py::none(),
           py::arg("ratio") = py::none(), py::arg("latent_cache") = py::none(),
           py::arg("cache_type_k") = "bf16", py::arg("cache_type_v") = "bf16",
           "Loads a model directory. threads: kernel threads (0: every core); quant: None, "
           "'q8_0' or 'q4_0' (matrices converted at load); ratio: the default compression ratio "
           "(LCLM checkpoints); latent_cache: an SQLite file or "
           "redis://[[USER]:PASSWORD@]HOST[:PORT][/DB] (or the password in LCLM_REDIS_PASSWORD) "
           "that keeps "
           "compressed regions across runs and processes; cache_type_k / cache_type_v: what the KV "
           "cache stores keys and values as ('f32', 'f16', 'bf16', 'q8_0', 'q4_0').")
      .def_property_readonly("path", [](Model& self) { return self.engine().dir().string(); })
      .def_property_readonly("is_lclm", [](Model& self) { return self.engine().lclm() != nullptr; })
      .def_property_readonly(
          "ratio",
          [](Model& self) -> std::optional<std::int64_t> {
            if (!self.engine().lclm()) return std::nullopt;
            return self.engine().ratio();
          },
          "The default compression ratio (None for a plain model).")
      .def_property_readonly(
          "hidden_size", [](Model& self) { return self.engine().decoder().config().hidden_size; })
      .def_property_readonly("vocab_size",
                             [](Model& self) { return self.engine().tokenizer().size(); })
      .def_property_readonly("context_length",
                             [](Model& self) { return self.engine().max_context(); })
      .def("tokenize", &Model::tokenize, py::arg("text"), py::arg("encoder") = false,
           "Token ids of text: the decoder's tokenizer, or the encoder's with encoder=True.")
      .def("detokenize", &Model::detokenize, py::arg("ids"),
           "The text of token ids (bytes that are not whole UTF-8 become U+FFFD).")
      .def("compress", &Model::compress, py::arg("text"), py::arg("ratio") = py::none(),
           "The latents of text at ratio (None: the default): a float32 array "
           "[n_latents, hidden_size], what the decoder reads in place of the text.")
      .def(
          "generate",
          [](const py::object& self, const py::object& prompt, int max_tokens, float temperature,
             int top_k, float top_p, float min_p, float repeat_penalty,
             std::optional<std::uint64_t> seed, bool chat, std::optional<std::int64_t> ratio,
             bool stream, const py::object& json_schema) {
            GenerateArgs a{max_tokens,     temperature, top_k, top_p,       min_p,
                           repeat_penalty, seed,        ratio, std::nullopt};
            if (!json_schema.is_none()) {
              a.json_schema =
                  py::module_::import("json").attr("dumps")(json_schema).cast<std::string>();
            }
            return self.cast<Model&>().generate(self, prompt, a, chat, stream);
          },
          py::arg("prompt"), py::arg("max_tokens") = 128, py::arg("temperature") = 0.8f,
          py::arg("top_k") = 40, py::arg("top_p") = 0.95f, py::arg("min_p") = 0.05f,
          py::arg("repeat_penalty") = 1.0f, py::arg("seed") = py::none(), py::arg("chat") = false,
          py::arg("ratio") = py::none(), py::arg("stream") = false,
          py::arg("json_schema") = py::none(),
          "Generates text after prompt, to a stop token or max_tokens (< 0: to the context's "
          "end). chat=True: prompt is one user message (a str) or a list of {'role', "
          "'content'} dicts, put in the chat format. temperature=0 is greedy; seed=None picks a "
          "random one. Memory regions in the prompt are compressed at ratio (None: the "
          "default). json_schema: a JSON Schema (a dict; {} for any object) the answer must "
          "match, by constrained decoding (docs/server.md lists the subset). Returns the text, "
          "or with stream=True a Stream of its pieces.")
      .def("logprobs", &Model::logprobs, py::arg("text"), py::arg("context") = "",
           py::arg("ratio") = py::none(),
           "[(token_id, log p)] for each token of text read after context (whose memory "
           "regions are compressed at ratio): log-probabilities at temperature 1, for "
           "perplexity, exp(-mean). With no context the first token is not scored.");
}

#include "compression/latents_file.h"

#include <cstring>
#include <string_view>

#include "compression/lclm_model.h"
#include "format/safetensors.h"
#include "util/error.h"

namespace lclm {
namespace {

const std::string kFormat = "lclm-latents";
const std::string kVersion = "1";

}  // namespace

void write_latents_file(const std::filesystem::path& path, const LatentsFile& file) {
  std::map<std::string, std::string> metadata = file.metadata;
  metadata.insert_or_assign("format", kFormat);
  metadata.insert_or_assign("version", kVersion);
  metadata.insert_or_assign("n_tokens", std::to_string(file.latents.n_tokens));
  metadata.insert_or_assign("n_latents", std::to_string(file.latents.count()));
  const auto& l = file.latents;
  const TensorToWrite tensor{
      "latents",
      DType::F32,
      {static_cast<std::int64_t>(l.count()), static_cast<std::int64_t>(l.dim)},
      {reinterpret_cast<const std::uint8_t*>(l.data.data()), l.bytes()}};
  write_safetensors(path, {&tensor, 1}, metadata);
}

LatentsFile read_latents_file(const std::filesystem::path& path) {
  const SafetensorsFile st(path);
  const auto& meta = st.metadata();
  const auto fail = [&](std::string_view why) {
    std::string message = path.string();
    message.append(" is not an lclm latents file: ").append(why);
    throw Error(message);
  };
  if (!meta.count("format") || meta.at("format") != kFormat) fail("format is not lclm-latents");
  if (!meta.count("version") || meta.at("version") != kVersion) fail("unsupported version");
  if (st.tensors().size() != 1 || st.tensors()[0].name != "latents") fail("no \"latents\" tensor");
  const TensorView& t = st.tensors()[0];
  if (t.dtype != DType::F32 || t.shape.size() != 2) fail("\"latents\" must be F32 [N, D]");
  LatentsFile out;
  out.metadata = meta;
  out.latents.dim = static_cast<std::size_t>(t.shape[1]);
  out.latents.data.resize(static_cast<std::size_t>(t.numel()));
  if (t.nbytes > 0) std::memcpy(out.latents.data.data(), t.data, t.nbytes);
  try {
    out.latents.n_tokens = std::stoull(meta.at("n_tokens"));
    if (std::stoull(meta.at("n_latents")) != static_cast<std::uint64_t>(t.shape[0])) {
      fail("n_latents disagrees with the tensor's shape");
    }
  } catch (const std::logic_error&) {
    fail("n_tokens / n_latents are missing or not numbers");
  }
  return out;
}

Latents read_checked_latents(const std::filesystem::path& path, LclmModel& model,
                             const std::string& what) {
  const std::string named = what + " " + path.string();
  LatentsFile file = read_latents_file(path);
  const auto field = [&](const char* name) {
    const auto it = file.metadata.find(name);
    if (it == file.metadata.end()) throw Error(named + ": no " + name + " metadata");
    return it->second;
  };
  const std::string ratio = field("compression_ratio"), made_by = field("checkpoint_fingerprint");
  if (ratio.empty() || ratio.find_first_not_of("0123456789") != std::string::npos ||
      ratio.size() > 6) {
    throw Error(named + ": compression_ratio '" + ratio + "' is not a ratio");
  }
  const std::string& expected = model.fingerprint(std::stoll(ratio));
  if (made_by != expected) {
    throw Error(named +
                " was made by another checkpoint (or another encoder configuration): its "
                "fingerprint " +
                made_by + " is not this one's at ratio " + ratio + " (" + expected +
                "); compress it again");
  }
  return std::move(file.latents);
}

}  // namespace lclm

#include "format/torch_file.h"

#include <zip.h>

#include <cstring>
#include <fstream>
#include <map>
#include <memory>
#include <optional>

#include "util/error.h"

namespace lclm {
namespace {

constexpr std::string_view kArchive = "archive";

// ---- the pickle ----

// Pickle opcodes of protocols 2-5 (Python's Lib/pickletools.py names them).
enum Op : unsigned char {
  kMark = '(',
  kStop = '.',
  kBinInt = 'J',
  kBinInt1 = 'K',
  kBinInt2 = 'M',
  kNone = 'N',
  kBinPersId = 'Q',
  kReduce = 'R',
  kBinUnicode = 'X',
  kEmptyList = ']',
  kAppends = 'e',
  kGlobal = 'c',
  kBinGet = 'h',
  kLongBinGet = 'j',
  kEmptyTuple = ')',
  kEmptyDict = '}',
  kSetItems = 'u',
  kSetItem = 's',
  kBinPut = 'q',
  kLongBinPut = 'r',
  kTuple = 't',
  kBuild = 'b',
  kProto = 0x80,
  kTuple1 = 0x85,
  kTuple2 = 0x86,
  kTuple3 = 0x87,
  kNewTrue = 0x88,
  kNewFalse = 0x89,
  kLong1 = 0x8a,
  kShortBinUnicode = 0x8c,
  kMemoize = 0x94,
  kStackGlobal = 0x93,
  kFrame = 0x95,
};

std::string_view storage_name(DType t) {
  switch (t) {
    case DType::F32:
      return "FloatStorage";
    case DType::BF16:
      return "BFloat16Storage";
    case DType::F16:
      return "HalfStorage";
    default:
      throw Error("a torch tensor file holds float32, bfloat16 or float16, not " +
                  std::string(dtype_name(t)));
  }
}

class PickleWriter {
 public:
  void op(unsigned char c) { out_ += static_cast<char>(c); }
  void integer(std::int64_t v) {
    if (v >= 0 && v < 256) {
      op(kBinInt1);
      out_ += static_cast<char>(v);
    } else if (v >= 0 && v < 65536) {
      op(kBinInt2);
      le(static_cast<std::uint64_t>(v), 2);
    } else if (v >= INT32_MIN && v <= INT32_MAX) {
      op(kBinInt);
      le(static_cast<std::uint64_t>(static_cast<std::uint32_t>(v)), 4);
    } else {
      op(kLong1);
      out_ += static_cast<char>(8);
      le(static_cast<std::uint64_t>(v), 8);
    }
  }
  void str(std::string_view s) {
    op(kBinUnicode);
    le(s.size(), 4);
    out_ += s;
  }
  void global(std::string_view module, std::string_view name) {
    op(kGlobal);
    out_ += module;
    out_ += '\n';
    out_ += name;
    out_ += '\n';
  }
  std::string take() { return std::move(out_); }

 private:
  void le(std::uint64_t v, int bytes) {
    for (int i = 0; i < bytes; ++i) out_ += static_cast<char>((v >> (8 * i)) & 0xff);
  }
  std::string out_;
};

// _rebuild_tensor_v2(('storage', torch.<T>Storage, '0', 'cpu', rows*cols),
//                    0, (rows, cols), (cols, 1), False, OrderedDict())
std::string tensor_pickle(std::size_t rows, std::size_t cols, DType dtype) {
  PickleWriter p;
  p.op(kProto);
  p.op(2);
  p.global("torch._utils", "_rebuild_tensor_v2");
  p.op(kMark);
  p.op(kMark);
  p.str("storage");
  p.global("torch", storage_name(dtype));
  p.str("0");
  p.str("cpu");
  p.integer(static_cast<std::int64_t>(rows * cols));
  p.op(kTuple);
  p.op(kBinPersId);
  p.integer(0);
  p.integer(static_cast<std::int64_t>(rows));
  p.integer(static_cast<std::int64_t>(cols));
  p.op(kTuple2);
  p.integer(static_cast<std::int64_t>(cols));
  p.integer(1);
  p.op(kTuple2);
  p.op(kNewFalse);
  p.global("collections", "OrderedDict");
  p.op(kEmptyTuple);
  p.op(kReduce);
  p.op(kTuple);
  p.op(kReduce);
  p.op(kStop);
  return p.take();
}

// What the reader's stack holds. Tuples and lists keep their items; a
// storage is a persistent id resolved by name; a tensor is the result of
// _rebuild_tensor_v2.
struct Value {
  enum class Kind { None, Bool, Int, Str, Tuple, Global, Storage, Tensor, Dict, Mark };
  Kind kind = Kind::None;
  std::int64_t i = 0;
  std::string s;  // Str; Global "module.name"; Storage its key
  std::vector<Value> items;
  DType dtype = DType::F32;                // Storage, Tensor
  std::int64_t numel = 0, offset = 0;      // Storage numel; Tensor storage offset
  std::vector<std::int64_t> size, stride;  // Tensor
  std::string key;                         // Tensor: its storage's key
};

Value make(Value::Kind kind, std::int64_t i = 0, std::string s = {}) {
  Value v;
  v.kind = kind;
  v.i = i;
  v.s = std::move(s);
  return v;
}

class PickleReader {
 public:
  PickleReader(std::string_view bytes, const std::string& what) : in_(bytes), what_(what) {}

  Value run() {
    for (std::size_t ops = 0;; ++ops) {
      if (ops > kMaxOps) fail("more than " + std::to_string(kMaxOps) + " pickle operations");
      const auto code = static_cast<unsigned char>(byte());
      switch (code) {
        case kProto:
          if (static_cast<unsigned char>(byte()) > 5) fail("a pickle protocol past 5");
          break;
        case kFrame:
          take(8);
          break;
        case kMark:
          push(make(Value::Kind::Mark));
          break;
        case kStop: {
          Value v = pop();
          return v;
        }
        case kNone:
          push({});
          break;
        case kNewTrue:
        case kNewFalse:
          push(make(Value::Kind::Bool, code == kNewTrue));
          break;
        case kBinInt1:
          push(int_value(le(1)));
          break;
        case kBinInt2:
          push(int_value(le(2)));
          break;
        case kBinInt:
          push(int_value(static_cast<std::int32_t>(le(4))));
          break;
        case kLong1: {
          const auto n = static_cast<unsigned char>(byte());
          if (n > 8) fail("an integer of more than 8 bytes");
          std::uint64_t v = le(n);
          if (n > 0 && n < 8 && (v >> (8 * n - 1)) & 1) v |= ~std::uint64_t{0} << (8 * n);
          push(int_value(static_cast<std::int64_t>(v)));
          break;
        }
        case kBinUnicode:
          push(str_value(take(le(4))));
          break;
        case kShortBinUnicode:
          push(str_value(take(le(1))));
          break;
        case kGlobal: {
          std::string module = line();
          push(make(Value::Kind::Global, 0, module + "." + line()));
          break;
        }
        case kStackGlobal: {
          Value name = pop(), module = pop();
          if (name.kind != Value::Kind::Str || module.kind != Value::Kind::Str) {
            fail("STACK_GLOBAL of something other than two strings");
          }
          push(make(Value::Kind::Global, 0, module.s + "." + name.s));
          break;
        }
        case kEmptyTuple:
          push(make(Value::Kind::Tuple));
          break;
        case kTuple1:
        case kTuple2:
        case kTuple3: {
          const std::size_t n = code - kTuple1 + 1;
          Value t = make(Value::Kind::Tuple);
          t.items.resize(n);
          for (std::size_t k = n; k-- > 0;) t.items[k] = pop();
          push(std::move(t));
          break;
        }
        case kTuple: {
          Value t = make(Value::Kind::Tuple);
          t.items = pop_to_mark();
          push(std::move(t));
        } break;
        case kEmptyList:
          push(make(Value::Kind::Tuple));
          break;
        case kAppends: {
          std::vector<Value> items = pop_to_mark();
          Value& list = top();
          if (list.kind != Value::Kind::Tuple) fail("APPENDS to something not a list");
          for (Value& v : items) list.items.push_back(std::move(v));
          break;
        }
        case kEmptyDict:
          push(make(Value::Kind::Dict));
          break;
        case kSetItem:
          pop();
          pop();
          if (top().kind != Value::Kind::Dict) fail("SETITEM on something not a dict");
          break;
        case kSetItems:
          pop_to_mark();
          if (top().kind != Value::Kind::Dict) fail("SETITEMS on something not a dict");
          break;
        case kBinPut:
          memo_[le(1)] = top();
          break;
        case kLongBinPut:
          memo_[le(4)] = top();
          break;
        case kMemoize:
          memo_[memo_.size()] = top();
          break;
        case kBinGet:
        case kLongBinGet: {
          const auto it = memo_.find(le(code == kBinGet ? 1 : 4));
          if (it == memo_.end()) fail("a memo reference to nothing");
          push(it->second);
          break;
        }
        case kBinPersId:
          push(storage(pop()));
          break;
        case kReduce: {
          Value args = pop(), callable = pop();
          push(reduce(callable, args));
          break;
        }
        case kBuild:
          pop();  // state set on an object (PyTorch sets none on a tensor's hooks dict)
          break;
        default:
          fail("pickle opcode 0x" + hex(code) + ", which a torch.save'd tensor does not use");
      }
    }
  }

 private:
  static constexpr std::size_t kMaxOps = 1u << 16;
  static constexpr std::size_t kMaxStack = 1u << 12;

  [[noreturn]] void fail(const std::string& why) const {
    throw Error(what_ + ": not a torch.save'd tensor lclm can read (" + why + ")");
  }
  static std::string hex(unsigned v) {
    const char* digits = "0123456789abcdef";
    return {digits[(v >> 4) & 15], digits[v & 15]};
  }
  char byte() {
    if (pos_ >= in_.size()) fail("the pickle ends early");
    return in_[pos_++];
  }
  std::string_view take(std::uint64_t n) {
    if (n > in_.size() - pos_) fail("the pickle ends early");
    const std::string_view s = in_.substr(pos_, n);
    pos_ += n;
    return s;
  }
  std::uint64_t le(std::size_t n) {
    const std::string_view s = take(n);
    std::uint64_t v = 0;
    for (std::size_t k = 0; k < n; ++k)
      v |= std::uint64_t{static_cast<unsigned char>(s[k])} << (8 * k);
    return v;
  }
  std::string line() {
    const std::size_t end = in_.find('\n', pos_);
    if (end == std::string_view::npos || end - pos_ > 256) fail("a GLOBAL without its end");
    std::string s(in_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }
  static Value int_value(std::int64_t v) { return make(Value::Kind::Int, v); }
  static Value str_value(std::string_view s) { return make(Value::Kind::Str, 0, std::string(s)); }
  void push(Value v) {
    if (stack_.size() >= kMaxStack) fail("a pickle stack deeper than " + std::to_string(kMaxStack));
    stack_.push_back(std::move(v));
  }
  Value& top() {
    if (stack_.empty()) fail("an operation on an empty stack");
    return stack_.back();
  }
  Value pop() {
    if (stack_.empty() || stack_.back().kind == Value::Kind::Mark) fail("a pop past the stack");
    Value v = std::move(stack_.back());
    stack_.pop_back();
    return v;
  }
  std::vector<Value> pop_to_mark() {
    std::size_t k = stack_.size();
    while (k > 0 && stack_[k - 1].kind != Value::Kind::Mark) --k;
    if (k == 0) fail("a MARK missing");
    std::vector<Value> items(
        std::make_move_iterator(stack_.begin() + static_cast<std::ptrdiff_t>(k)),
        std::make_move_iterator(stack_.end()));
    stack_.resize(k - 1);
    return items;
  }

  // ('storage', torch.<T>Storage, key, location, numel)
  Value storage(const Value& pid) {
    const auto& t = pid.items;
    if (pid.kind != Value::Kind::Tuple || t.size() != 5 || t[0].kind != Value::Kind::Str ||
        t[0].s != "storage" || t[1].kind != Value::Kind::Global || t[2].kind != Value::Kind::Str ||
        t[4].kind != Value::Kind::Int) {
      fail("a persistent id other than ('storage', type, key, location, numel)");
    }
    Value s = make(Value::Kind::Storage, 0, t[2].s);
    if (t[1].s == "torch.FloatStorage") {
      s.dtype = DType::F32;
    } else if (t[1].s == "torch.BFloat16Storage") {
      s.dtype = DType::BF16;
    } else if (t[1].s == "torch.HalfStorage") {
      s.dtype = DType::F16;
    } else {
      fail("storage " + t[1].s + "; float32, bfloat16 and float16 are read");
    }
    if (t[4].i < 0) fail("a negative storage size");
    s.numel = t[4].i;
    return s;
  }

  static std::vector<std::int64_t> ints(const Value& v, bool& ok) {
    std::vector<std::int64_t> out;
    ok = v.kind == Value::Kind::Tuple;
    for (const Value& x : v.items) {
      ok = ok && x.kind == Value::Kind::Int;
      out.push_back(x.i);
    }
    return out;
  }

  Value reduce(const Value& callable, const Value& args) {
    if (callable.kind != Value::Kind::Global) fail("a call of something not a global");
    if (callable.s == "collections.OrderedDict") return make(Value::Kind::Dict);
    if (callable.s != "torch._utils._rebuild_tensor_v2") {
      fail("a call of " + callable.s + ", which lclm does not run");
    }
    const auto& a = args.items;
    if (args.kind != Value::Kind::Tuple || a.size() < 4 || a[0].kind != Value::Kind::Storage ||
        a[1].kind != Value::Kind::Int) {
      fail("_rebuild_tensor_v2 without (storage, offset, size, stride, ...)");
    }
    bool size_ok = false, stride_ok = false;
    Value t = make(Value::Kind::Tensor);
    t.dtype = a[0].dtype;
    t.numel = a[0].numel;
    t.offset = a[1].i;
    t.size = ints(a[2], size_ok);
    t.stride = ints(a[3], stride_ok);
    t.key = a[0].s;
    if (!size_ok || !stride_ok || t.size.size() != t.stride.size())
      fail("a malformed size or stride");
    return t;
  }

  std::string_view in_;
  std::size_t pos_ = 0;
  const std::string& what_;
  std::vector<Value> stack_;
  std::map<std::uint64_t, Value> memo_;
};

// ---- the zip archive ----

struct ZipCloser {
  void operator()(zip_t* z) const { zip_discard(z); }
};
using ZipPtr = std::unique_ptr<zip_t, ZipCloser>;

std::string zip_message(zip_error_t* e) {
  std::string m = zip_error_strerror(e);
  zip_error_fini(e);
  return m;
}

}  // namespace

std::string torch_tensor_bytes(const float* data, std::size_t rows, std::size_t cols, DType dtype) {
  const std::size_t n = rows * cols;
  std::string payload(n * dtype_size(dtype), '\0');
  for (std::size_t i = 0; i < n; ++i) {
    if (dtype == DType::F32) {
      std::memcpy(payload.data() + 4 * i, data + i, 4);
    } else {
      const std::uint16_t h = dtype == DType::BF16 ? f32_to_bf16(data[i]) : f32_to_f16(data[i]);
      payload[2 * i] = static_cast<char>(h & 0xff);
      payload[2 * i + 1] = static_cast<char>(h >> 8);
    }
  }
  const std::string pickle = tensor_pickle(rows, cols, dtype);
  const std::string version = "3\n", byteorder = "little";

  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* buffer = zip_source_buffer_create(nullptr, 0, 0, &error);
  if (!buffer) throw Error("torch file: " + zip_message(&error));
  zip_t* archive = zip_open_from_source(buffer, ZIP_TRUNCATE, &error);
  if (!archive) {
    zip_source_free(buffer);
    throw Error("torch file: " + zip_message(&error));
  }
  zip_source_keep(buffer);
  const auto add = [&](const std::string& name, const std::string& bytes) {
    zip_source_t* s = zip_source_buffer(archive, bytes.data(), bytes.size(), 0);
    const zip_int64_t index = s ? zip_file_add(archive, name.c_str(), s, ZIP_FL_ENC_UTF_8) : -1;
    if (index < 0) {
      if (s) zip_source_free(s);
      return false;
    }
    // Stored, as torch.save writes, and dated 1980 so the bytes depend on
    // the tensor alone.
    return zip_set_file_compression(archive, static_cast<zip_uint64_t>(index), ZIP_CM_STORE, 0) ==
               0 &&
           zip_file_set_dostime(archive, static_cast<zip_uint64_t>(index), 0, 0x21, 0) == 0;
  };
  const std::string root(kArchive);
  const bool added = add(root + "/data.pkl", pickle) && add(root + "/byteorder", byteorder) &&
                     add(root + "/data/0", payload) && add(root + "/version", version);
  if (!added || zip_close(archive) != 0) {
    const std::string why = zip_strerror(archive);
    zip_discard(archive);
    zip_source_free(buffer);
    throw Error("torch file: " + why);
  }
  std::string out;
  zip_stat_t st;
  if (zip_source_stat(buffer, &st) != 0 || zip_source_open(buffer) != 0) {
    zip_source_free(buffer);
    throw Error("torch file: the archive could not be read back");
  }
  out.resize(st.size);
  const zip_int64_t got = zip_source_read(buffer, out.data(), st.size);
  zip_source_close(buffer);
  zip_source_free(buffer);
  if (got != static_cast<zip_int64_t>(st.size))
    throw Error("torch file: short read of the archive");
  return out;
}

void write_torch_tensor(const std::filesystem::path& path, const float* data, std::size_t rows,
                        std::size_t cols, DType dtype) {
  const std::string bytes = torch_tensor_bytes(data, rows, cols, dtype);
  std::filesystem::path tmp = path;
  tmp += ".tmp";
  {
    std::ofstream f(tmp, std::ios::binary | std::ios::trunc);
    f.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
    if (!f.flush()) throw Error("cannot write " + tmp.string());
  }
  std::error_code ec;
  std::filesystem::rename(tmp, path, ec);
  if (ec) {
    std::filesystem::remove(tmp, ec);
    throw Error("cannot write " + path.string() + ": " + ec.message());
  }
}

TorchTensor parse_torch_tensor(std::string_view bytes, const std::string& what,
                               std::size_t max_bytes) {
  zip_error_t error;
  zip_error_init(&error);
  zip_source_t* source = zip_source_buffer_create(bytes.data(), bytes.size(), 0, &error);
  if (!source) throw Error(what + ": " + zip_message(&error));
  ZipPtr archive(zip_open_from_source(source, ZIP_RDONLY | ZIP_CHECKCONS, &error));
  if (!archive) {
    zip_source_free(source);
    throw Error(what + ": not a torch.save file (not a zip archive: " + zip_message(&error) + ")");
  }
  // Every entry sits under one top-level folder, named after the file torch
  // saved to ("archive" for a buffer).
  const zip_int64_t entries = zip_get_num_entries(archive.get(), 0);
  std::string root;
  for (zip_int64_t k = 0; k < entries && root.empty(); ++k) {
    const std::string name = zip_get_name(archive.get(), static_cast<zip_uint64_t>(k), 0);
    if (name.size() > 9 && name.ends_with("/data.pkl")) root = name.substr(0, name.size() - 8);
  }
  if (root.empty()) throw Error(what + ": not a torch.save file (no data.pkl)");
  const auto read_entry = [&](const std::string& name, std::size_t limit) {
    zip_stat_t st;
    if (zip_stat(archive.get(), name.c_str(), 0, &st) != 0) {
      throw Error(what + ": not a torch.save file (no " + name + ")");
    }
    if (st.size > limit) {
      throw Error(what + ": " + name + " is " + std::to_string(st.size) +
                  " bytes, more than the limit of " + std::to_string(limit));
    }
    std::string out(st.size, '\0');
    zip_file_t* f = zip_fopen(archive.get(), name.c_str(), 0);
    const zip_int64_t got = f ? zip_fread(f, out.data(), st.size) : -1;
    if (f) zip_fclose(f);
    if (got != static_cast<zip_int64_t>(st.size)) throw Error(what + ": cannot read " + name);
    return out;
  };

  const std::string pickle = read_entry(root + "data.pkl", 1u << 20);
  const Value v = PickleReader(pickle, what).run();
  if (v.kind != Value::Kind::Tensor) {
    throw Error(what + ": holds something other than one tensor (torch.save(tensor) is read)");
  }
  // Contiguous, row-major, inside its storage.
  std::int64_t expect = 1, numel = 1;
  for (std::size_t d = v.size.size(); d-- > 0;) {
    if (v.size[d] < 0 || (v.size[d] > 1 && v.stride[d] != expect)) {
      throw Error(what + ": the tensor is not contiguous (save tensor.contiguous())");
    }
    if (v.size[d] > 0 && numel > INT64_MAX / v.size[d])
      throw Error(what + ": the tensor's size overflows");
    expect *= v.size[d];
    numel *= v.size[d];
  }
  const std::size_t elem = dtype_size(v.dtype);
  if (v.offset < 0 || numel > v.numel || v.offset > v.numel - numel) {
    throw Error(what + ": the tensor lies outside its storage");
  }
  if (static_cast<std::uint64_t>(v.numel) > max_bytes / elem) {
    throw Error(what + ": a storage of " + std::to_string(v.numel) +
                " elements, more than the limit of " + std::to_string(max_bytes) + " bytes");
  }
  const std::string data = read_entry(root + "data/" + v.key, max_bytes);
  if (data.size() != static_cast<std::size_t>(v.numel) * elem) {
    throw Error(what + ": storage " + v.key + " holds " + std::to_string(data.size()) +
                " bytes, not the " + std::to_string(v.numel * static_cast<std::int64_t>(elem)) +
                " its tensor needs");
  }
  TorchTensor t;
  t.shape = v.size;
  t.dtype = v.dtype;
  t.data.resize(static_cast<std::size_t>(numel));
  const char* p = data.data() + static_cast<std::size_t>(v.offset) * elem;
  for (std::size_t i = 0; i < t.data.size(); ++i) {
    if (v.dtype == DType::F32) {
      std::memcpy(&t.data[i], p + 4 * i, 4);
    } else {
      const auto h = static_cast<std::uint16_t>(static_cast<unsigned char>(p[2 * i]) |
                                                (static_cast<unsigned char>(p[2 * i + 1]) << 8));
      t.data[i] = v.dtype == DType::BF16 ? bf16_to_f32(h) : f16_to_f32(h);
    }
  }
  return t;
}

TorchTensor read_torch_tensor(const std::filesystem::path& path, std::size_t max_bytes) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    throw Error(path.string() + ": no such file (a torch.save'd tensor was expected)");
  }
  const auto size = std::filesystem::file_size(path, ec);
  if (ec || size > max_bytes + (1u << 20)) {
    throw Error(
        path.string() + ": " +
        (ec ? ec.message() : "larger than the limit of " + std::to_string(max_bytes) + " bytes"));
  }
  std::string bytes(size, '\0');
  std::ifstream f(path, std::ios::binary);
  if (!f.read(bytes.data(), static_cast<std::streamsize>(size))) {
    throw Error("cannot read " + path.string());
  }
  return parse_torch_tensor(bytes, path.string(), max_bytes);
}

}  // namespace lclm

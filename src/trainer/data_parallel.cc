#include "trainer/data_parallel.h"

#include <c10/util/Exception.h>

#include <algorithm>
#include <charconv>
#include <cstdlib>
#include <limits>
#include <sstream>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include "util/error.h"

namespace lclm::train {

namespace {

// A non-negative decimal number, or an error naming the variable.
std::int64_t parse_count(const char* name, const char* value) {
  const std::string s = value;
  std::int64_t n = -1;
  const auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), n);
  if (s.empty() || ec != std::errc() || end != s.data() + s.size() || n < 0) {
    throw Error(std::string(name) + "=\"" + s + "\" is not a non-negative whole number");
  }
  return n;
}

// c10's errors carry a backtrace and gloo's a source location on later
// lines; a user needs the first line.
std::string first_line(const std::exception& e) {
  const auto* c10_error = dynamic_cast<const c10::Error*>(&e);
  const std::string text = c10_error ? c10_error->what_without_backtrace() : e.what();
  return text.substr(0, text.find('\n'));
}

// --dist-timeout as it was given: "300", "2.5".
std::string seconds_of(std::chrono::milliseconds timeout) {
  std::ostringstream out;
  out << static_cast<double>(timeout.count()) / 1000.0;
  return out.str();
}

bool is_loopback(const std::string& addr) {
  return addr == "localhost" || addr.rfind("127.", 0) == 0 || addr == "::1";
}

}  // namespace

DistributedEnv distributed_env(const std::function<const char*(const char*)>& getenv) {
  DistributedEnv env;
  const char* world = getenv("WORLD_SIZE");
  if (world == nullptr) return env;
  const std::int64_t world_size = parse_count("WORLD_SIZE", world);
  if (world_size < 1 || world_size > 65536) {
    throw Error("WORLD_SIZE=" + std::string(world) + " is not a number of processes (1-65536)");
  }
  env.world_size = static_cast<int>(world_size);
  const char* rank = getenv("RANK");
  if (rank == nullptr && env.world_size > 1) {
    throw Error("RANK is not set: with WORLD_SIZE=" + std::string(world) +
                " each process needs its rank, 0 to " + std::to_string(world_size - 1));
  }
  if (rank != nullptr) {
    const std::int64_t r = parse_count("RANK", rank);
    if (r >= world_size) {
      throw Error("RANK=" + std::string(rank) + " is not below WORLD_SIZE=" + world +
                  " (ranks are 0 to " + std::to_string(world_size - 1) + ")");
    }
    env.rank = static_cast<int>(r);
  }
  if (const char* local = getenv("LOCAL_RANK")) {
    env.local_rank = static_cast<int>(
        std::min<std::int64_t>(parse_count("LOCAL_RANK", local), std::numeric_limits<int>::max()));
  }
  if (env.world_size == 1) return env;
  const char* addr = getenv("MASTER_ADDR");
  if (addr == nullptr || *addr == '\0') {
    throw Error("MASTER_ADDR is not set: with WORLD_SIZE=" + std::string(world) +
                " every rank needs the address of rank 0 (127.0.0.1 on one machine)");
  }
  env.master_addr = addr;
  const char* port = getenv("MASTER_PORT");
  if (port == nullptr) {
    throw Error("MASTER_PORT is not set: with WORLD_SIZE=" + std::string(world) +
                " every rank needs the port rank 0 listens on");
  }
  const std::int64_t p = parse_count("MASTER_PORT", port);
  if (p < 1 || p > 65535) throw Error("MASTER_PORT=" + std::string(port) + " is not a TCP port");
  env.master_port = static_cast<std::uint16_t>(p);
  if (const char* use = getenv("TORCHELASTIC_USE_AGENT_STORE")) {
    env.agent_store = std::string(use) == "True";
  }
  if (const char* restarts = getenv("TORCHELASTIC_RESTART_COUNT")) {
    env.restart_count = restarts;
  }
  return env;
}

GradientBuckets::GradientBuckets(std::vector<torch::Tensor> params) : params_(std::move(params)) {
  std::int64_t numel = 0, bytes = 0;
  const auto close_bucket = [&](std::int64_t end) {
    buckets_.push_back(torch::empty({numel}, params_[0].options()));
    bucket_end_.push_back(end);
    numel = bytes = 0;
  };
  for (std::size_t i = 0; i < params_.size(); ++i) {
    numel += params_[i].numel();
    bytes += params_[i].numel() * static_cast<std::int64_t>(params_[i].element_size());
    if (bytes >= DataParallel::kBucketBytes) close_bucket(static_cast<std::int64_t>(i) + 1);
  }
  if (numel > 0) close_bucket(static_cast<std::int64_t>(params_.size()));
}

struct DataParallel::Group {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> gloo;
};

DataParallel::DataParallel(const DistributedEnv& env, std::chrono::milliseconds timeout)
    : env_(env), timeout_(timeout), group_(std::make_unique<Group>()) {
  const std::string where = env_.master_addr + ":" + std::to_string(env_.master_port);
  const std::string seconds = seconds_of(timeout_);
  try {
    c10d::TCPStoreOptions store;
    store.port = env_.master_port;
    store.isServer = env_.rank == 0 && !env_.agent_store;
    store.numWorkers = static_cast<std::size_t>(env_.world_size);
    store.timeout = timeout_;
    auto tcp = c10::make_intrusive<c10d::TCPStore>(env_.master_addr, store);
    // The prefix torch.distributed puts before its keys under torchrun's agent.
    group_->store = env_.agent_store
                        ? c10::intrusive_ptr<c10d::Store>(c10::make_intrusive<c10d::PrefixStore>(
                              "/worker/attempt_" + env_.restart_count, tcp))
                        : c10::intrusive_ptr<c10d::Store>(tcp);
  } catch (const std::exception& e) {
    throw Error(std::string(env_.rank == 0 && !env_.agent_store ? "could not listen on"
                                                                : "could not reach rank 0 at") +
                " MASTER_ADDR:MASTER_PORT " + where + " within --dist-timeout " + seconds +
                " s: " + first_line(e));
  }
  // Each rank checks in under its own key, so that a rank that never came
  // can be named.
  const auto joined = [](int r) { return "lclm/joined/" + std::to_string(r); };
  std::vector<std::string> keys;
  for (int r = 0; r < env_.world_size; ++r) keys.push_back(joined(r));
  try {
    group_->store->set(joined(env_.rank), std::vector<std::uint8_t>{1});
    group_->store->wait(keys, timeout_);
  } catch (const std::exception& e) {
    std::string missing;
    try {
      for (int r = 0; r < env_.world_size; ++r) {
        if (!group_->store->check({joined(r)})) {
          missing += (missing.empty() ? "" : ", ") + std::to_string(r);
        }
      }
    } catch (const std::exception&) {
      missing.clear();  // the store is gone with rank 0
    }
    if (missing.empty()) {
      throw Error("lost MASTER_ADDR:MASTER_PORT " + where +
                  " while waiting for the other ranks: " + first_line(e));
    }
    throw Error("rank(s) " + missing + " did not join at MASTER_ADDR:MASTER_PORT " + where +
                " within --dist-timeout " + seconds + " s");
  }
  try {
    auto options = c10d::ProcessGroupGloo::Options::create(timeout_);
    // GLOO_SOCKET_IFNAME names the interface as it does for PyTorch; on one
    // machine loopback serves; otherwise the address this host's name
    // resolves to, as PyTorch does.
    if (const char* ifname = std::getenv("GLOO_SOCKET_IFNAME")) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(ifname));
    } else if (is_loopback(env_.master_addr)) {
      options->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env_.master_addr));
    } else {
      options->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
    }
    group_->gloo = c10::make_intrusive<c10d::ProcessGroupGloo>(group_->store, env_.rank,
                                                               env_.world_size, options);
  } catch (const std::exception& e) {
    throw Error("could not connect to every other rank within --dist-timeout " + seconds +
                " s: " + first_line(e));
  }
}

DataParallel::~DataParallel() = default;

namespace {

// Waits for every collective; the first failure becomes an error that says
// which rank this is, which peer to look at and how long it was waited for.
void wait_all(const std::vector<c10::intrusive_ptr<c10d::Work>>& works, const DistributedEnv& env,
              std::chrono::milliseconds timeout, const std::string& what) {
  for (const auto& work : works) {
    try {
      work->wait();
    } catch (const std::exception& e) {
      const std::string peer =
          env.world_size == 2 ? "rank " + std::to_string(1 - env.rank) : "another rank";
      throw Error(what + " failed: " + first_line(e) + " (" + peer +
                  " exited, or did not answer within --dist-timeout " + seconds_of(timeout) +
                  " s)");
    }
  }
}

}  // namespace

void DataParallel::sum_gradients(GradientBuckets& buckets, torch::Tensor& totals,
                                 const std::string& what) {
  const std::vector<torch::Tensor>& params = buckets.params_;
  const auto n = static_cast<std::int64_t>(params.size());
  // reached[i] counts the ranks where params[i] has a gradient.
  torch::Tensor meta = torch::zeros({n + totals.numel()}, torch::kFloat64);
  auto reached = meta.accessor<double, 1>();
  const auto each_slice = [&](const auto& visit) {
    std::int64_t first = 0;
    for (std::size_t b = 0; b < buckets.buckets_.size(); ++b) {
      std::int64_t offset = 0;
      for (std::int64_t i = first; i < buckets.bucket_end_[b]; ++i) {
        const std::int64_t numel = params[static_cast<std::size_t>(i)].numel();
        visit(i, buckets.buckets_[b].slice(0, offset, offset + numel));
        offset += numel;
      }
      first = buckets.bucket_end_[b];
    }
  };
  each_slice([&](std::int64_t i, torch::Tensor slice) {
    const torch::Tensor& grad = params[static_cast<std::size_t>(i)].grad();
    reached[i] = grad.defined() ? 1.0 : 0.0;
    if (grad.defined()) {
      slice.copy_(grad.reshape(-1));
    } else {
      slice.zero_();
    }
  });
  meta.slice(0, n).copy_(totals.reshape(-1));

  std::vector<c10::intrusive_ptr<c10d::Work>> works;
  std::vector<at::Tensor> one{meta};
  works.push_back(group_->gloo->allreduce(one));
  for (torch::Tensor& b : buckets.buckets_) {
    std::vector<at::Tensor> bucket{b};
    works.push_back(group_->gloo->allreduce(bucket));
  }
  wait_all(works, env_, timeout_, what);

  each_slice([&](std::int64_t i, torch::Tensor slice) {
    torch::Tensor p = params[static_cast<std::size_t>(i)];
    if (reached[i] > 0) {
      p.mutable_grad() = slice.view_as(p);
    } else {
      p.mutable_grad().reset();
    }
  });
  totals.copy_(meta.slice(0, n).view_as(totals));
}

void DataParallel::barrier(const std::string& what) {
  wait_all({group_->gloo->barrier()}, env_, timeout_, what);
}

std::vector<std::int64_t> DataParallel::all_gather(std::int64_t value, const std::string& what) {
  std::vector<at::Tensor> input{torch::tensor({value}, torch::kInt64)};
  std::vector<std::vector<at::Tensor>> output(1);
  for (int r = 0; r < env_.world_size; ++r) output[0].push_back(torch::zeros({1}, torch::kInt64));
  wait_all({group_->gloo->allgather(output, input)}, env_, timeout_, what);
  std::vector<std::int64_t> values;
  for (const at::Tensor& t : output[0]) values.push_back(t.item<std::int64_t>());
  return values;
}

}  // namespace lclm::train

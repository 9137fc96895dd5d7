// Data-parallel training over torch.distributed's c10d: one process per rank,
// launched as torchrun launches PyTorch jobs (RANK, WORLD_SIZE, MASTER_ADDR,
// MASTER_PORT, LOCAL_RANK in the environment), a TCPStore for the rendezvous
// and ProcessGroupGloo for the collectives. The trainer sums its gradients
// through it; see docs/training.md, "Several processes and machines".
#pragma once

#include <torch/types.h>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <vector>

namespace lclm::train {

// One process's place in the job, as torchrun's environment gives it.
struct DistributedEnv {
  int rank = 0, world_size = 1, local_rank = 0;
  std::string master_addr;
  std::uint16_t master_port = 0;
  // Set by torchrun: its agent hosts the store, so rank 0 connects to it as
  // every other rank does, under the restart attempt's prefix.
  bool agent_store = false;
  std::string restart_count = "0";
};

// Reads RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT (and torchrun's
// TORCHELASTIC_USE_AGENT_STORE, TORCHELASTIC_RESTART_COUNT) through `getenv`.
// WORLD_SIZE unset or 1 is one process, whatever else is set. Throws
// lclm::Error naming the variable that is missing, not a number, or out of
// range.
DistributedEnv distributed_env(const std::function<const char*(const char*)>& getenv);

// A set of parameters (a stage's trainable ones) laid out in flat buckets of
// about DataParallel::kBucketBytes, allocated once, so that a step only
// copies its gradients in.
class GradientBuckets {
 public:
  explicit GradientBuckets(std::vector<torch::Tensor> params);

 private:
  friend class DataParallel;
  std::vector<torch::Tensor> params_;
  std::vector<torch::Tensor> buckets_;
  std::vector<std::int64_t> bucket_end_;  // the parameter index after each bucket's last
};

class DataParallel {
 public:
  // Joins the group: rank 0 hosts the store at MASTER_ADDR:MASTER_PORT (unless
  // torchrun's agent does), then every rank connects to every other. Throws
  // lclm::Error when the group is not complete within `timeout`, which also
  // bounds every later collective.
  DataParallel(const DistributedEnv& env, std::chrono::milliseconds timeout);
  ~DataParallel();
  DataParallel(const DataParallel&) = delete;
  DataParallel& operator=(const DataParallel&) = delete;

  int rank() const { return env_.rank; }
  int world_size() const { return env_.world_size; }
  const DistributedEnv& env() const { return env_; }
  std::chrono::milliseconds timeout() const { return timeout_; }

  // Sums the gradient of each of the buckets' parameters over the ranks,
  // copied into the buckets, whose all-reduces are all in flight at once;
  // each gradient becomes a view of its bucket. A gradient undefined here
  // counts as zero; after the sum it is undefined only where it was on every
  // rank, so a parameter that no rank's sequences reached still skips the
  // optimizer update. `totals` (float64, any length) is summed alongside.
  // `what` names the step in errors.
  void sum_gradients(GradientBuckets& buckets, torch::Tensor& totals, const std::string& what);
  // Returns once every rank has called it.
  void barrier(const std::string& what);
  // Every rank's value, by rank.
  std::vector<std::int64_t> all_gather(std::int64_t value, const std::string& what);

  static constexpr std::int64_t kBucketBytes = 4 << 20;

 private:
  struct Group;
  DistributedEnv env_;
  std::chrono::milliseconds timeout_;
  std::unique_ptr<Group> group_;
};

}  // namespace lclm::train

// Data-parallel lclm-train, run as a user runs it: each rank its own
// build/bin/lclm-train process with torchrun's environment, meeting on a
// loopback port. Two ranks of --batch 1 train what one process of --batch 2
// trains, across a stop and --resume too; torchrun's agent store serves; a
// rank that exits or hangs fails the other within --dist-timeout; a signal
// to one stops both after the same step; ranks that start apart, and a bad
// environment, are refused with one line naming the cause.
#include "trainer/data_parallel.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <fstream>
#include <map>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <utility>
#include <vector>

#include "trainer/lclm_checkpoint.h"
#include "trainer/trainer_test_models.h"
#include "util/error.h"

extern char** environ;

namespace lclm::train {
namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using Env = std::map<std::string, std::string>;

// A port nothing listens on now (the kernel's pick, released at once).
int free_port() {
  const int fd = ::socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (::bind(fd, reinterpret_cast<sockaddr*>(&addr), len) != 0 ||
      ::getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    ::close(fd);
    ADD_FAILURE() << "no free port";
    return 0;
  }
  ::close(fd);
  return ntohs(addr.sin_port);
}

// One lclm-train process, its stdout and stderr going to `log`.
struct Process {
  pid_t pid = -1;
  fs::path log;
  Clock::time_point started;

  std::string output() const {
    std::ifstream in(log);
    std::stringstream s;
    s << in.rdbuf();
    return s.str();
  }
};

// Starts lclm-train ARGS with the test's environment less torchrun's
// variables, plus `env`. Everything exec needs is built before fork.
Process start(const std::vector<std::string>& args, const Env& env, const fs::path& log) {
  static const std::string binary = std::string(LCLM_BINARY_DIR) + "/bin/lclm-train";
  std::vector<std::string> vars;
  for (char** e = environ; *e != nullptr; ++e) {
    const std::string var = *e;
    const std::string name = var.substr(0, var.find('='));
    const bool torchrun = name == "RANK" || name == "WORLD_SIZE" || name == "LOCAL_RANK" ||
                          name == "MASTER_ADDR" || name == "MASTER_PORT" ||
                          name.rfind("TORCHELASTIC_", 0) == 0;
    if (!torchrun) vars.push_back(var);
  }
  for (const auto& [name, value] : env) vars.push_back(name + "=" + value);
  std::vector<char*> argv{const_cast<char*>(binary.c_str())}, envp;
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  for (std::string& v : vars) envp.push_back(v.data());
  envp.push_back(nullptr);
  const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  EXPECT_GE(fd, 0) << log;
  Process p{-1, log, Clock::now()};
  p.pid = ::fork();
  if (p.pid == 0) {
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    ::execve(binary.c_str(), argv.data(), envp.data());
    ::_exit(127);
  }
  ::close(fd);
  EXPECT_GT(p.pid, 0);
  return p;
}

struct Exit {
  int code = -1;  // the exit status; -1 when it had to be killed
  double seconds = 0;
  std::string output;
};

// Waits up to `limit` for p to end; kills it past that.
Exit finish(const Process& p, std::chrono::seconds limit = std::chrono::seconds(300)) {
  const auto deadline = p.started + limit;
  int status = 0;
  while (::waitpid(p.pid, &status, WNOHANG) == 0) {
    if (Clock::now() > deadline) {
      ::kill(p.pid, SIGKILL);
      ::waitpid(p.pid, &status, 0);
      return {-1, std::chrono::duration<double>(Clock::now() - p.started).count(), p.output()};
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  const int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return {code, std::chrono::duration<double>(Clock::now() - p.started).count(), p.output()};
}

// torchrun's variables for `rank` of `world` meeting at 127.0.0.1:port.
Env rank_env(int rank, int world, int port) {
  return {{"RANK", std::to_string(rank)},
          {"WORLD_SIZE", std::to_string(world)},
          {"LOCAL_RANK", std::to_string(rank)},
          {"MASTER_ADDR", "127.0.0.1"},
          {"MASTER_PORT", std::to_string(port)}};
}

// Runs `world` ranks of lclm-train ARGS to their end; logs go to NAME-rankR.log.
std::vector<Exit> run_ranks(int world, const std::vector<std::string>& args,
                            const std::string& name) {
  const int port = free_port();
  const fs::path logs = lclm::testing::scratch_dir(name + "-logs");
  std::vector<Process> ranks;
  for (int r = 0; r < world; ++r) {
    ranks.push_back(
        start(args, rank_env(r, world, port), logs / ("rank" + std::to_string(r) + ".log")));
  }
  std::vector<Exit> exits;
  for (const Process& p : ranks) exits.push_back(finish(p));
  return exits;
}

Exit run_alone(const std::vector<std::string>& args, const std::string& name) {
  return finish(start(args, {}, lclm::testing::scratch_dir(name + "-logs") / "run.log"));
}

// The loss of each progress line, by global step.
std::map<int, std::string> losses(const std::string& log) {
  static const std::regex line(R"(step (\d+)/\d+ stage \d+ loss ([0-9.]+))");
  std::map<int, std::string> out;
  for (auto it = std::sregex_iterator(log.begin(), log.end(), line); it != std::sregex_iterator();
       ++it) {
    out[std::stoi((*it)[1])] = (*it)[2];
  }
  return out;
}

// The largest difference between two saved checkpoints' parameters.
double max_weight_difference(const fs::path& a, const fs::path& b) {
  const auto pa = load_lclm_checkpoint(a)->parameters();
  const auto pb = load_lclm_checkpoint(b)->parameters();
  EXPECT_EQ(pa.size(), pb.size());
  double worst = 0;
  for (std::size_t i = 0; i < std::min(pa.size(), pb.size()); ++i) {
    worst = std::max(worst, (pa[i] - pb[i]).abs().max().item<double>());
  }
  return worst;
}

fs::path tiny_checkpoint(const std::string& name, std::uint64_t seed = 11) {
  return testing::write_tiny_lclm(name, testing::small_vocab_tokenizer_dir(), DType::F32, seed);
}

// Stage 0 (adapter and memory rows, a masked gradient) and stage 2
// (everything), two steps each, on short sequences, one torch thread a process.
std::vector<std::string> run_args(const fs::path& init, const fs::path& out,
                                  const std::string& batch) {
  return {"--init",     init.string(), "-o",          out.string(),
          "--stages",   "0,2",         "--steps",     "2",
          "--seq-len",  "64",          "--batch",     batch,
          "--lr-scale", "10",          "--warmup",    "1",
          "--seed",     "3",           "--log-every", "1",
          "-t",         "1",           "--text",      "/usr/share/common-licenses"};
}

// The one-process reference for a checkpoint: --batch 2, all four steps.
struct Reference {
  fs::path init, out;
  std::map<int, std::string> losses;
};

Reference one_rank_of_batch_two(const std::string& name) {
  Reference ref{tiny_checkpoint(name + "-init"), lclm::testing::scratch_dir(name + "-out"), {}};
  const Exit e = run_alone(run_args(ref.init, ref.out, "2"), name);
  EXPECT_EQ(e.code, 0) << e.output;
  ref.losses = losses(e.output);
  EXPECT_EQ(ref.losses.size(), 4u) << e.output;
  EXPECT_NE(e.output.find(" batch 2 "), std::string::npos) << e.output;
  return ref;
}

// Both runs consume the same sequences (each step's two packs, in stream
// order) and sum the same two gradients, a + b on both sides, so the losses
// agree to the 4 decimals the log prints and the weights to 1e-6 (they come
// out bit-identical here; the bound leaves room for another gloo summation
// order).
TEST(DataParallel, TwoRanksOfBatchOneTrainWhatOneRankOfBatchTwoTrains) {
  const Reference ref = one_rank_of_batch_two("dp-same");
  const fs::path out = lclm::testing::scratch_dir("dp-same-two");
  const std::vector<Exit> ranks = run_ranks(2, run_args(ref.init, out, "1"), "dp-same-two");
  ASSERT_EQ(ranks[0].code, 0) << ranks[0].output;
  ASSERT_EQ(ranks[1].code, 0) << ranks[1].output;
  EXPECT_EQ(losses(ranks[0].output), ref.losses) << ranks[0].output;
  // Rank 0 alone logs, and says how many ranks there are.
  EXPECT_NE(ranks[0].output.find("data parallel: 2 ranks met at 127.0.0.1:"), std::string::npos);
  EXPECT_NE(ranks[0].output.find(" world 2 x batch 1 wait "), std::string::npos) << ranks[0].output;
  EXPECT_EQ(ranks[1].output, "");
  EXPECT_LE(max_weight_difference(ref.out, out), 1e-6);
  const auto state = read_json_file(out / "trainer_state" / "state.json");
  const auto want = read_json_file(ref.out / "trainer_state" / "state.json");
  EXPECT_EQ(state.at("global_batch"), 2);
  EXPECT_EQ(state.at("next_example"), want.at("next_example"));
}

// Two ranks stop at step 2 (--until) and go on with --resume; so does one
// process from the same save (it takes the run's global batch of 2 as its
// batch). Both end where the straight one-process run ends.
TEST(DataParallel, RanksResumeWhereTheyStopped) {
  const Reference ref = one_rank_of_batch_two("dp-resume");
  const fs::path out = lclm::testing::scratch_dir("dp-resume-two");
  std::vector<std::string> first = run_args(ref.init, out, "1");
  first.insert(first.end(), {"--until", "2"});
  std::vector<Exit> ranks = run_ranks(2, first, "dp-resume-first");
  ASSERT_EQ(ranks[0].code, 0) << ranks[0].output;
  ASSERT_EQ(ranks[1].code, 0) << ranks[1].output;
  const fs::path alone = lclm::testing::scratch_dir("dp-resume-alone");
  fs::copy(out, alone, fs::copy_options::recursive);

  ranks = run_ranks(2, {"--resume", "-o", out.string(), "-t", "1"}, "dp-resume-second");
  ASSERT_EQ(ranks[0].code, 0) << ranks[0].output;
  ASSERT_EQ(ranks[1].code, 0) << ranks[1].output;
  std::map<int, std::string> resumed = losses(ranks[0].output);
  EXPECT_EQ(resumed.size(), 2u) << ranks[0].output;
  for (const auto& [step, loss] : resumed) EXPECT_EQ(loss, ref.losses.at(step)) << step;
  EXPECT_LE(max_weight_difference(ref.out, out), 1e-6);

  const Exit one = run_alone({"--resume", "-o", alone.string(), "-t", "1"}, "dp-resume-one");
  ASSERT_EQ(one.code, 0) << one.output;
  for (const auto& [step, loss] : losses(one.output)) {
    EXPECT_EQ(loss, ref.losses.at(step)) << step;
  }
  EXPECT_LE(max_weight_difference(ref.out, alone), 1e-6);
}

// Under torchrun the agent hosts the store and every rank connects to it,
// keys under /worker/attempt_N/: here the test plays the agent.
TEST(DataParallel, RanksMeetAtTorchrunsAgentStore) {
  c10d::TCPStoreOptions agent;
  agent.port = 0;  // any free port
  agent.isServer = true;
  agent.waitWorkers = false;
  c10d::TCPStore store("127.0.0.1", agent);
  const fs::path init = tiny_checkpoint("dp-agent-init");
  const fs::path out = lclm::testing::scratch_dir("dp-agent-out");
  const fs::path logs = lclm::testing::scratch_dir("dp-agent-logs");
  std::vector<Process> ranks;
  for (int r = 0; r < 2; ++r) {
    Env env = rank_env(r, 2, store.getPort());
    env["TORCHELASTIC_USE_AGENT_STORE"] = "True";
    env["TORCHELASTIC_RESTART_COUNT"] = "3";
    ranks.push_back(start({"--init", init.string(), "-o", out.string(), "--stages", "2", "--steps",
                           "1", "--seq-len", "64", "-t", "1"},
                          env, logs / ("rank" + std::to_string(r) + ".log")));
  }
  for (const Process& p : ranks) {
    const Exit e = finish(p);
    EXPECT_EQ(e.code, 0) << e.output;
  }
  EXPECT_TRUE(store.check({"/worker/attempt_3/lclm/joined/1"}));
  EXPECT_TRUE(fs::exists(out / "trainer_state" / "state.json"));
}

// A long run of two ranks, once rank 0 has logged step 2.
struct LongRun {
  std::vector<Process> ranks;
  fs::path out;
};

LongRun start_long_run(const std::string& name, const std::string& timeout) {
  const fs::path init = tiny_checkpoint(name + "-init");
  const fs::path logs = lclm::testing::scratch_dir(name + "-logs");
  const fs::path out = lclm::testing::scratch_dir(name + "-out");
  const std::vector<std::string> args = {
      "--init",         init.string(), "-o",      out.string(),
      "--stages",       "2",           "--steps", "100000",
      "--seq-len",      "64",          "-t",      "1",
      "--log-every",    "1",           "--text",  "/usr/share/common-licenses",
      "--dist-timeout", timeout};
  const int port = free_port();
  std::vector<Process> ranks;
  for (int r = 0; r < 2; ++r) {
    ranks.push_back(
        start(args, rank_env(r, 2, port), logs / ("rank" + std::to_string(r) + ".log")));
  }
  const auto deadline = Clock::now() + std::chrono::seconds(120);
  while (ranks[0].output().find("step 2/") == std::string::npos && Clock::now() < deadline) {
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  EXPECT_NE(ranks[0].output().find("step 2/"), std::string::npos) << ranks[0].output();
  return {ranks, out};
}

// Rank 1 killed mid-run: rank 0 sees the connection close at its next
// gradient sum and exits at once, well inside the 60 s it would wait for a
// silent peer.
TEST(DataParallel, ARankThatExitsFailsTheOtherAtOnce) {
  const std::vector<Process> ranks = start_long_run("dp-killed", "60").ranks;
  ::kill(ranks[1].pid, SIGKILL);
  finish(ranks[1]);
  const auto killed = Clock::now();
  const Exit e = finish(ranks[0]);
  const double after_kill = std::chrono::duration<double>(Clock::now() - killed).count();
  EXPECT_EQ(e.code, 1) << e.output;
  EXPECT_LT(after_kill, 30.0) << e.output;
  EXPECT_TRUE(std::regex_search(
      e.output, std::regex(R"(\nerror: rank 0 of 2 \(local rank 0\): summing the )"
                           R"(gradients of step \d+ failed: .+ \(rank 1 exited, or did not )"
                           R"(answer within --dist-timeout 60 s\)\n$)")))
      << e.output;
}

// SIGTERM to rank 1 alone: the ranks agree to stop after the same step,
// rank 0 saves it, rank 1 ends by the signal.
TEST(DataParallel, ASignalToOneRankStopsAllAfterTheSameStep) {
  const LongRun run = start_long_run("dp-signal", "60");
  ::kill(run.ranks[1].pid, SIGTERM);
  const Exit one = finish(run.ranks[1]);
  const Exit zero = finish(run.ranks[0]);
  EXPECT_EQ(one.code, 128 + SIGTERM) << one.output;
  EXPECT_EQ(one.output, "");
  ASSERT_EQ(zero.code, 0) << zero.output;
  std::smatch saved;
  ASSERT_TRUE(
      std::regex_search(zero.output, saved, std::regex(R"(interrupted: saved step (\d+) )")))
      << zero.output;
  const auto state = read_json_file(run.out / "trainer_state" / "state.json");
  EXPECT_EQ(state.at("global_step").get<int>(), std::stoi(saved[1])) << zero.output;
}

// Rank 1 stopped (SIGSTOP) mid-run: its connections stay open and silent,
// and rank 0 gives up after --dist-timeout, not later.
TEST(DataParallel, ARankThatHangsFailsTheOtherWithinTheTimeout) {
  // 8 s: short for a test, long enough that a loaded CI machine does not
  // trip it while the ranks start.
  const std::vector<Process> ranks = start_long_run("dp-hung", "8").ranks;
  ::kill(ranks[1].pid, SIGSTOP);
  const auto stopped = Clock::now();
  const Exit e = finish(ranks[0]);
  const double after_stop = std::chrono::duration<double>(Clock::now() - stopped).count();
  ::kill(ranks[1].pid, SIGKILL);
  finish(ranks[1]);
  EXPECT_EQ(e.code, 1) << e.output;
  EXPECT_GE(after_stop, 7.0) << e.output;
  EXPECT_LT(after_stop, 8.0 + 25.0) << e.output;
  EXPECT_NE(e.output.find("(rank 1 exited, or did not answer within --dist-timeout 8 s)"),
            std::string::npos)
      << e.output;
}

// A rank whose peer never comes: rank 0 waits --dist-timeout for rank 1 to
// join and names it, rank 1 as long for rank 0 to listen.
TEST(DataParallel, AMissingRankFailsTheOtherWithinTheTimeout) {
  const fs::path init = tiny_checkpoint("dp-missing-init");
  const fs::path logs = lclm::testing::scratch_dir("dp-missing-logs");
  for (int rank = 0; rank < 2; ++rank) {
    const fs::path out = lclm::testing::scratch_dir("dp-missing-out" + std::to_string(rank));
    std::vector<std::string> args = run_args(init, out, "1");
    args.insert(args.end(), {"--dist-timeout", "3"});
    const int port = free_port();
    const Exit e = finish(
        start(args, rank_env(rank, 2, port), logs / ("rank" + std::to_string(rank) + ".log")));
    EXPECT_EQ(e.code, 1) << e.output;
    EXPECT_LT(e.seconds, 3.0 + 30.0) << e.output;
    const std::string where =
        "MASTER_ADDR:MASTER_PORT 127.0.0.1:" + std::to_string(port) + " within --dist-timeout 3 s";
    const std::string want =
        rank == 0 ? "error: rank 0 of 2 (local rank 0): rank(s) 1 did not join at " + where + "\n"
                  : "error: rank 1 of 2 (local rank 1): could not reach rank 0 at " + where + ": ";
    EXPECT_NE(e.output.find(want), std::string::npos) << e.output;
  }
}

// Ranks given different checkpoints would drift apart silently: both refuse.
TEST(DataParallel, RanksThatStartApartAreRefused) {
  const fs::path a = tiny_checkpoint("dp-apart-a", 11), b = tiny_checkpoint("dp-apart-b", 12);
  const fs::path logs = lclm::testing::scratch_dir("dp-apart-logs");
  const int port = free_port();
  std::vector<Process> ranks;
  for (int r = 0; r < 2; ++r) {
    const fs::path out = lclm::testing::scratch_dir("dp-apart-out" + std::to_string(r));
    ranks.push_back(start(run_args(r == 0 ? a : b, out, "1"), rank_env(r, 2, port),
                          logs / ("rank" + std::to_string(r) + ".log")));
  }
  for (const Process& p : ranks) {
    const Exit e = finish(p);
    EXPECT_EQ(e.code, 1) << e.output;
    EXPECT_NE(e.output.find("rank(s) 1 start from other weights, optimizer state, settings or "
                            "data than rank 0"),
              std::string::npos)
        << e.output;
  }
}

std::string env_error(const Env& env) {
  try {
    distributed_env([&](const char* name) -> const char* {
      const auto it = env.find(name);
      return it == env.end() ? nullptr : it->second.c_str();
    });
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(DataParallelEnv, ReadsTorchrunsVariables) {
  const Env env = {{"RANK", "1"},
                   {"WORLD_SIZE", "4"},
                   {"LOCAL_RANK", "1"},
                   {"MASTER_ADDR", "node0"},
                   {"MASTER_PORT", "29500"}};
  const DistributedEnv d = distributed_env([&](const char* name) -> const char* {
    const auto it = env.find(name);
    return it == env.end() ? nullptr : it->second.c_str();
  });
  EXPECT_EQ(d.rank, 1);
  EXPECT_EQ(d.world_size, 4);
  EXPECT_EQ(d.local_rank, 1);
  EXPECT_EQ(d.master_addr, "node0");
  EXPECT_EQ(d.master_port, 29500);
  EXPECT_FALSE(d.agent_store);
  // No WORLD_SIZE, or 1: one process, whatever else is set.
  EXPECT_EQ(env_error({{"RANK", "3"}}), "");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "1"}}), "");
}

TEST(DataParallelEnv, ErrorsNameTheVariable) {
  EXPECT_EQ(env_error({{"WORLD_SIZE", "two"}}),
            "WORLD_SIZE=\"two\" is not a non-negative whole number");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "0"}}),
            "WORLD_SIZE=0 is not a number of processes (1-65536)");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "2"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "1"}}),
            "RANK is not set: with WORLD_SIZE=2 each process needs its rank, 0 to 1");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "2"}, {"RANK", "2"}}),
            "RANK=2 is not below WORLD_SIZE=2 (ranks are 0 to 1)");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "2"}, {"RANK", "-1"}}),
            "RANK=\"-1\" is not a non-negative whole number");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"LOCAL_RANK", "x"}}),
            "LOCAL_RANK=\"x\" is not a non-negative whole number");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "2"}, {"RANK", "1"}}),
            "MASTER_ADDR is not set: with WORLD_SIZE=2 every rank needs the address of rank 0 "
            "(127.0.0.1 on one machine)");
  EXPECT_EQ(env_error({{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "h"}}),
            "MASTER_PORT is not set: with WORLD_SIZE=2 every rank needs the port rank 0 listens "
            "on");
  EXPECT_EQ(
      env_error(
          {{"WORLD_SIZE", "2"}, {"RANK", "1"}, {"MASTER_ADDR", "h"}, {"MASTER_PORT", "70000"}}),
      "MASTER_PORT=70000 is not a TCP port");
}

// lclm-train prints the error as its one line and exits 1.
TEST(DataParallelEnv, TheCommandPrintsOneLine) {
  const fs::path out = lclm::testing::scratch_dir("dp-env-out");
  const Exit e =
      finish(start({"--init", "x", "-o", out.string()}, {{"WORLD_SIZE", "2"}, {"RANK", "2"}},
                   lclm::testing::scratch_dir("dp-env-logs") / "run.log"));
  EXPECT_EQ(e.code, 1);
  EXPECT_EQ(e.output, "error: RANK=2 is not below WORLD_SIZE=2 (ranks are 0 to 1)\n");
}

}  // namespace
}  // namespace lclm::train

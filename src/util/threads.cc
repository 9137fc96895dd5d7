#include "util/threads.h"

#include <omp.h>

#include <string>
#include <thread>

#include "util/error.h"

extern "C" void openblas_set_num_threads(int num_threads);

namespace lclm {

int resolve_threads(int n) {
  if (n > kMaxThreads) {
    throw Error("-t " + std::to_string(n) + ": at most " + std::to_string(kMaxThreads) +
                " threads");
  }
  if (n <= 0) n = static_cast<int>(std::thread::hardware_concurrency());
  return n <= 0 ? 1 : n;
}

void set_num_threads(int n) {
  n = resolve_threads(n);
  omp_set_num_threads(n);
  openblas_set_num_threads(n);
}

int num_threads() {
  return omp_get_max_threads();
}

}  // namespace lclm

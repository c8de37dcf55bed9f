// The parts of the CPU kernels' API that no instruction-set level changes.
#include "pymakemore/kernels.h"

namespace pymakemore {
namespace {

uint64_t mix64(uint64_t z) {  // splitmix64's finaliser: a bijection with good avalanche
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

}  // namespace

void serial_for(int64_t n, int64_t /*grain*/, const RangeFn& fn) {
  if (n > 0) fn(0, n);
}

int64_t mlp_batch_index(uint64_t seed, int64_t step, int64_t b, int64_t n_train) {
  const uint64_t h = mix64(mix64(seed ^ 0x9e3779b97f4a7c15ULL) + static_cast<uint64_t>(step) *
                                                                  0x9e3779b97f4a7c15ULL +
                           static_cast<uint64_t>(b));
  // the high 64 bits of h * n: uniform on [0, n) up to n / 2^64
  return static_cast<int64_t>((static_cast<unsigned __int128>(h) *
                               static_cast<uint64_t>(n_train)) >> 64);
}

}  // namespace pymakemore

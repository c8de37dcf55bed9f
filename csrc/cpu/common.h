// Helpers shared by the CPU kernels.
#pragma once

#include "this_level.h"

namespace pymakemore::PYMAKEMORE_LEVEL::cpu {

// Lowest position at which a check failed, collected across threads.
class FirstInvalid {
 public:
  void report(int64_t pos) {
    int64_t seen = pos_.load(std::memory_order_relaxed);
    while (pos < seen && !pos_.compare_exchange_weak(seen, pos, std::memory_order_relaxed)) {
    }
  }
  int64_t result() const {
    const int64_t pos = pos_.load(std::memory_order_relaxed);
    return pos == kNone ? kAllValid : pos;
  }

 private:
  static constexpr int64_t kNone = std::numeric_limits<int64_t>::max();
  std::atomic<int64_t> pos_{kNone};
};

inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// Items per reduction piece: at least min_items, and few enough pieces to bound the partial
// buffers. Depends on the shape only, so the summation order never depends on threads.
inline int64_t piece_size(int64_t n, int64_t min_items, int64_t max_pieces) {
  return std::max<int64_t>(min_items, ceil_div(std::max<int64_t>(n, 1), max_pieces));
}

// Threads get at least this much work (elements touched) per piece: below it, opening a
// parallel region (several microseconds) costs more than the second core saves.
constexpr int64_t kGrainElements = int64_t(1) << 18;
inline int64_t grain_for(int64_t elements_per_item) {
  return std::max<int64_t>(1, kGrainElements / std::max<int64_t>(elements_per_item, 1));
}

// Scratch memory that a thread keeps between calls: no allocation and no zeroing once warm
// (the contents are left over from the last call; callers write before they read). One slot
// per kind of buffer, so buffers alive at the same time on one thread never share one (the
// calling thread is also a worker of the parallel regions).
enum ScratchSlot : int {
  kPackedWeight,        // the weight transposed or zero-padded for the register tiles
  kPackedBias,          // the bias zero-padded to whole tiles
  kPartialWeightGrads,  // one weight gradient per piece of rows, summed in a fixed order
  kPartialBiasGrads,    // likewise for the bias
  kTileOutputGrads,     // a worker's rows of the gradient before the activation
  kTileInputsT,         // a worker's rows of the input, transposed
  kSlots
};

template <typename T>
T* scratch(ScratchSlot slot, size_t count) {
  thread_local std::vector<T> buffers[kSlots];
  std::vector<T>& buffer = buffers[slot];
  if (buffer.size() < count) buffer.resize(count);
  return buffer.data();
}

}  // namespace pymakemore::PYMAKEMORE_LEVEL::cpu

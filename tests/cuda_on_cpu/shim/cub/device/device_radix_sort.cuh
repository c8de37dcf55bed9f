// The shim's cub::DeviceRadixSort::SortPairs: a stable host sort on the same key bits, with
// cub's calling convention (a first call with no storage asks for its size). It counts as one
// call that can fail, like the launches it stands for.
#pragma once
#include <algorithm>
#include <numeric>
#include <vector>

#include "../../sim.h"

namespace cub {
struct DeviceRadixSort {
  template <typename Key, typename Value>
  static cudaError_t SortPairs(void* temp, size_t& temp_bytes, const Key* keys_in,
                               Key* keys_out, const Value* values_in, Value* values_out,
                               int n, int begin_bit = 0, int end_bit = int(sizeof(Key) * 8),
                               cudaStream_t = nullptr) {
    if (!temp) {
      temp_bytes = 256;
      return cudaSuccess;
    }
    if (cuda_on_cpu::fails_now(cudaErrorLaunchOutOfResources)) return cudaErrorLaunchOutOfResources;
    using Bits = std::make_unsigned_t<Key>;
    const Bits mask =
        end_bit - begin_bit >= int(sizeof(Key) * 8) ? Bits(~Bits(0))
                                                     : Bits((Bits(1) << (end_bit - begin_bit)) - 1);
    auto digit = [&](int i) { return Bits(Bits(keys_in[i]) >> begin_bit) & mask; };
    std::vector<int> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](int a, int b) { return digit(a) < digit(b); });
    for (int i = 0; i < n; ++i) {
      keys_out[i] = keys_in[order[i]];
      values_out[i] = values_in[order[i]];
    }
    return cudaSuccess;
  }
};
}  // namespace cub

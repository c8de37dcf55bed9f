#include "pymakemore/kernels.h"

namespace pymakemore {

void serial_for(int64_t n, int64_t /*grain*/, const RangeFn& fn) {
  if (n > 0) fn(0, n);
}

}  // namespace pymakemore

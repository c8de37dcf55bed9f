// The CUDA launchers' contract on a real device: a launch that cannot be configured returns
// its error (it is not left for a later, unrelated call to find), and the next launch works.
// Without a GPU (CI) it reports itself skipped: exit code 77, ctest's SKIP_RETURN_CODE.
#include <cuda_runtime.h>

#include <cstdio>
#include <vector>

#include "pymakemore/cuda_kernels.h"

using namespace pymakemore;

namespace {

int failures = 0;

void check(bool ok, const char* what) {
  if (ok) return;
  ++failures;
  std::printf("FAIL: %s\n", what);
}

}  // namespace

int main() {
  int devices = 0;
  if (cudaGetDeviceCount(&devices) != cudaSuccess || devices == 0) {
    std::printf("skipped: no CUDA device\n");
    return 77;
  }
  int limit = 0;
  check(cudaDeviceGetAttribute(&limit, cudaDevAttrMaxSharedMemoryPerBlockOptin, 0) ==
            cudaSuccess, "shared memory limit");

  // The MLP engine sized past one block's shared memory: refused, with the error returned.
  // (Nothing runs, so the parameter pointers are never read.)
  int64_t n_hidden = 200;
  while (cuda::mlp_engine_shared_bytes(27, 3, 10, n_hidden, 32) <= size_t(limit)) n_hidden *= 2;
  const cuda::Status refused = cuda::mlp_train_steps(
      27, 3, 10, n_hidden, 32, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, 1,
      nullptr, 1, 0, 0, nullptr, nullptr, nullptr);
  check(refused != 0, "an engine too large for shared memory returns an error");

  // then a good launch: a gather of rows 2 and 0 of a 3 x 2 table
  const std::vector<float> table = {0, 1, 10, 11, 20, 21};
  const std::vector<int64_t> indices = {2, 0};
  float *weight = nullptr, *out = nullptr;
  int64_t* idx = nullptr;
  check(cudaMalloc(&weight, table.size() * sizeof(float)) == cudaSuccess, "cudaMalloc");
  check(cudaMalloc(&out, 4 * sizeof(float)) == cudaSuccess, "cudaMalloc");
  check(cudaMalloc(&idx, indices.size() * sizeof(int64_t)) == cudaSuccess, "cudaMalloc");
  cudaMemcpy(weight, table.data(), table.size() * sizeof(float), cudaMemcpyHostToDevice);
  cudaMemcpy(idx, indices.data(), indices.size() * sizeof(int64_t), cudaMemcpyHostToDevice);
  check(cuda::embedding_forward(cuda::Dtype::Float32, cuda::IndexDtype::Int64, idx, 2, weight, 3,
                                2, out, nullptr) == 0,
        "a good launch after a refused one returns 0");
  std::vector<float> got(4);
  check(cudaMemcpy(got.data(), out, 4 * sizeof(float), cudaMemcpyDeviceToHost) == cudaSuccess,
        "copy back");
  check(got == std::vector<float>({20, 21, 0, 1}), "gathered rows");
  cudaFree(weight);
  cudaFree(out);
  cudaFree(idx);

  if (failures) std::printf("%d check(s) failed\n", failures);
  else std::printf("all CUDA launcher checks passed\n");
  return failures ? 1 : 0;
}

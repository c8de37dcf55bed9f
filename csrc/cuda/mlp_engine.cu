// The makemore MLP's whole training steps in one persistent kernel: one block keeps every
// parameter (11,897 floats at the lecture's size) and the step's activations in shared memory
// and runs many steps per launch, with block-wide barriers between the phases of a step.
// Minibatches use the same counter-based draws as the CPU engine (mlp_batch_index), so both
// engines follow the same trajectory. Every value is computed by one thread in a fixed order:
// the results do not depend on scheduling.
#include "common.cuh"

namespace pymakemore::cuda {
namespace {

constexpr int kThreads = 1024;

__device__ __forceinline__ uint64_t mix64(uint64_t z) {
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
  return z ^ (z >> 31);
}

// The same as pymakemore::mlp_batch_index on the CPU.
__device__ __forceinline__ int64_t batch_index(uint64_t seed, int64_t step, int64_t b,
                                               int64_t n_train) {
  const uint64_t h = mix64(mix64(seed ^ 0x9e3779b97f4a7c15ULL) +
                           static_cast<uint64_t>(step) * 0x9e3779b97f4a7c15ULL +
                           static_cast<uint64_t>(b));
  return static_cast<int64_t>(__umul64hi(h, static_cast<uint64_t>(n_train)));
}

struct Sizes {
  int V, T, D, K, H, B;
};

// Shared memory: parameters, then the step's activations (floats), then the batch (ints).
struct Smem {
  float *C, *W1, *b1, *W2, *b2, *emb, *hidden, *logits, *d_logits, *gz, *d_emb, *row_loss;
  int *xb, *yb;
  __device__ Smem(float* base, const Sizes& s) {
    float* p = base;
    C = p; p += s.V * s.D;
    W1 = p; p += s.H * s.K;
    b1 = p; p += s.H;
    W2 = p; p += s.V * s.H;
    b2 = p; p += s.V;
    emb = p; p += s.B * s.K;
    hidden = p; p += s.B * s.H;
    logits = p; p += s.B * s.V;
    d_logits = p; p += s.B * s.V;
    gz = p; p += s.B * s.H;
    d_emb = p; p += s.B * s.K;
    row_loss = p; p += s.B;
    xb = reinterpret_cast<int*>(p);
    yb = xb + s.B * s.T;
  }
};

size_t smem_bytes(const Sizes& s) {
  const size_t floats = size_t(s.V) * s.D + size_t(s.H) * s.K + s.H + size_t(s.V) * s.H + s.V +
                        2 * size_t(s.B) * s.K + 2 * size_t(s.B) * s.H + 2 * size_t(s.B) * s.V +
                        s.B;
  return floats * sizeof(float) + (size_t(s.B) * s.T + s.B) * sizeof(int);
}

__device__ void copy(float* dst, const float* src, int n) {
  for (int e = threadIdx.x; e < n; e += blockDim.x) dst[e] = src[e];
}

__global__ void __launch_bounds__(kThreads)
train_steps(Sizes s, float* C, float* W1, float* b1, float* W2, float* b2,
            const int64_t* __restrict__ X, const int64_t* __restrict__ Y, int64_t n_train,
            const float* __restrict__ lrs, int64_t steps, int64_t first_step, uint64_t seed,
            const int64_t* __restrict__ batch_indices, float* __restrict__ losses) {
  extern __shared__ float smem[];
  Smem m(smem, s);
  const int tid = threadIdx.x, nt = blockDim.x;
  const int V = s.V, T = s.T, D = s.D, K = s.K, H = s.H, B = s.B;
  copy(m.C, C, V * D);
  copy(m.W1, W1, H * K);
  copy(m.b1, b1, H);
  copy(m.W2, W2, V * H);
  copy(m.b2, b2, V);
  __syncthreads();
  for (int64_t step = 0; step < steps; ++step) {
    const float lr = lrs[step];
    // draw the batch; check every id that will index a table
    for (int b = tid; b < B; b += nt) {
      const int64_t row = batch_indices ? batch_indices[step * B + b]
                                        : batch_index(seed, first_step + step, b, n_train);
      if (row < 0 || row >= n_train) fail_index("mlp_train_steps", "batch index", row, b, n_train);
      for (int t = 0; t < T; ++t) {
        const int64_t id = X[row * T + t];
        if (id < 0 || id >= V) fail_index("mlp_train_steps", "character id", id, row, V);
        m.xb[b * T + t] = static_cast<int>(id);
      }
      const int64_t target = Y[row];
      if (target < 0 || target >= V) fail_index("mlp_train_steps", "target", target, row, V);
      m.yb[b] = static_cast<int>(target);
    }
    __syncthreads();
    for (int e = tid; e < B * K; e += nt) {  // embeddings
      const int b = e / K, q = e % K;
      m.emb[e] = m.C[m.xb[b * T + q / D] * D + q % D];
    }
    __syncthreads();
    for (int e = tid; e < B * H; e += nt) {  // hidden = tanh(emb W1^T + b1)
      const int b = e / H, j = e % H;
      float z = m.b1[j];
      for (int q = 0; q < K; ++q) z = fmaf(m.emb[b * K + q], m.W1[j * K + q], z);
      m.hidden[e] = tanhf(z);
    }
    __syncthreads();
    for (int e = tid; e < B * V; e += nt) {  // logits = hidden W2^T + b2
      const int b = e / V, v = e % V;
      float z = m.b2[v];
      for (int j = 0; j < H; ++j) z = fmaf(m.hidden[b * H + j], m.W2[v * H + j], z);
      m.logits[e] = z;
    }
    __syncthreads();
    // cross entropy, one warp per row: loss and d loss / d logits for the batch mean
    for (int b = tid / 32; b < B; b += nt / 32) {
      const int lane = tid % 32;
      float mx = -INFINITY;
      for (int v = lane; v < V; v += 32) mx = fmaxf(mx, m.logits[b * V + v]);
      mx = warp_max(mx);
      float sum = 0.0f;
      for (int v = lane; v < V; v += 32) sum += expf(m.logits[b * V + v] - mx);
      sum = warp_sum(sum);
      const float lse = mx + logf(sum);
      for (int v = lane; v < V; v += 32)
        m.d_logits[b * V + v] =
            (expf(m.logits[b * V + v] - lse) - (v == m.yb[b] ? 1.0f : 0.0f)) / B;
      if (lane == 0) m.row_loss[b] = lse - m.logits[b * V + m.yb[b]];
    }
    __syncthreads();
    if (tid == 0) {
      float total = 0.0f;
      for (int b = 0; b < B; ++b) total += m.row_loss[b];
      losses[step] = total / B;
    }
    for (int e = tid; e < B * H; e += nt) {  // gz = (d_logits W2) * (1 - hidden^2)
      const int b = e / H, j = e % H;
      float g = 0.0f;
      for (int v = 0; v < V; ++v) g = fmaf(m.d_logits[b * V + v], m.W2[v * H + j], g);
      const float y = m.hidden[e];
      m.gz[e] = g * (1.0f - y * y);
    }
    __syncthreads();
    // W2, b2 step (their old values are no longer needed) and d_emb = gz W1 (old W1)
    for (int e = tid; e < V * H + V + B * K; e += nt) {
      if (e < V * H) {
        const int v = e / H, j = e % H;
        float g = 0.0f;
        for (int b = 0; b < B; ++b) g = fmaf(m.d_logits[b * V + v], m.hidden[b * H + j], g);
        m.W2[e] -= lr * g;
      } else if (e < V * H + V) {
        const int v = e - V * H;
        float g = 0.0f;
        for (int b = 0; b < B; ++b) g += m.d_logits[b * V + v];
        m.b2[v] -= lr * g;
      } else {
        const int i = e - V * H - V, b = i / K, q = i % K;
        float g = 0.0f;
        for (int j = 0; j < H; ++j) g = fmaf(m.gz[b * H + j], m.W1[j * K + q], g);
        m.d_emb[i] = g;
      }
    }
    __syncthreads();
    // W1, b1 and C steps
    for (int e = tid; e < H * K + H + V * D; e += nt) {
      if (e < H * K) {
        const int j = e / K, q = e % K;
        float g = 0.0f;
        for (int b = 0; b < B; ++b) g = fmaf(m.gz[b * H + j], m.emb[b * K + q], g);
        m.W1[e] -= lr * g;
      } else if (e < H * K + H) {
        const int j = e - H * K;
        float g = 0.0f;
        for (int b = 0; b < B; ++b) g += m.gz[b * H + j];
        m.b1[j] -= lr * g;
      } else {  // a row of C sums its uses in the batch, in batch order
        const int i = e - H * K - H, v = i / D, d = i % D;
        float g = 0.0f;
        for (int b = 0; b < B; ++b)
          for (int t = 0; t < T; ++t)
            if (m.xb[b * T + t] == v) g += m.d_emb[b * K + t * D + d];
        m.C[i] -= lr * g;
      }
    }
    __syncthreads();
  }
  for (int e = tid; e < V * D; e += nt) C[e] = m.C[e];
  for (int e = tid; e < H * K; e += nt) W1[e] = m.W1[e];
  for (int e = tid; e < H; e += nt) b1[e] = m.b1[e];
  for (int e = tid; e < V * H; e += nt) W2[e] = m.W2[e];
  for (int e = tid; e < V; e += nt) b2[e] = m.b2[e];
}

}  // namespace

size_t mlp_engine_shared_bytes(int64_t vocab, int64_t block, int64_t n_embd, int64_t n_hidden,
                               int64_t batch) {
  const Sizes s{int(vocab), int(block), int(n_embd), int(block * n_embd), int(n_hidden),
                int(batch)};
  return smem_bytes(s);
}

Status mlp_train_steps(int64_t vocab, int64_t block, int64_t n_embd, int64_t n_hidden,
                       int64_t batch, float* C, float* W1, float* b1, float* W2, float* b2,
                       const int64_t* X, const int64_t* Y, int64_t n_train, const float* lrs,
                       int64_t steps, int64_t first_step, uint64_t seed,
                       const int64_t* batch_indices, float* losses, cudaStream_t stream) {
  if (steps == 0) return 0;
  const Sizes s{int(vocab), int(block), int(n_embd), int(block * n_embd), int(n_hidden),
                int(batch)};
  const size_t bytes = smem_bytes(s);
  // above 48 KB of dynamic shared memory a kernel must opt in; a refusal fails the launch.
  // The runtime also keeps a failed call's error as its last error: read it here, so that the
  // next launcher's check after its own launch does not report it as its own.
  if (cudaError_t e = cudaFuncSetAttribute(train_steps, cudaFuncAttributeMaxDynamicSharedMemorySize,
                                           static_cast<int>(bytes))) {
    (void)cudaGetLastError();
    return status(e);
  }
  train_steps<<<1, kThreads, bytes, stream>>>(s, C, W1, b1, W2, b2, X, Y, n_train, lrs, steps,
                                              first_step, seed, batch_indices, losses);
  return status(cudaGetLastError());
}

}  // namespace pymakemore::cuda

// linear_cross_entropy: F.cross_entropy(F.linear(input, weight, bias), target) without the
// N x V logits. Rows go through in chunks sized from the shapes: a chunk's logits come from one
// matrix product (torch's: MKL/oneDNN on the CPU, cuBLAS on CUDA), the row logic runs through
// pymakemore's own cross-entropy kernels (cross_entropy / cross_entropy_with_grad on that
// chunk), and, when the gradients are wanted, the chunk's logit gradient is turned into its
// share of grad_input, grad_weight and grad_bias right away, then dropped. Peak extra memory:
// the chunk (about 48 MiB: on the CPU the gradient overwrites the logits, elsewhere two
// buffers share that) plus O(N); nothing reads device data on the host, so on CUDA it is
// graph-capturable. Device-agnostic: registered once, for every backend, as is its autograd.
#include <ATen/ATen.h>
#include <torch/library.h>

#include <algorithm>
#include <limits>
#include <optional>
#include <tuple>

#include "checks.h"
#include "cpu_glue.h"
#include "cross_entropy.h"
#include "dispatcher_glue.h"

namespace pymakemore {
namespace {

// The chunk buffers together: about 48 MiB. Fewer rows per chunk mean less memory and more
// passes over grad_weight (read and written once per chunk) and smaller, slower products.
constexpr int64_t kChunkBytes = int64_t(48) << 20;
constexpr int64_t kMinChunkRows = 16;

// Rows per chunk: as many as fit the budget, evened out over the chunks (no small last chunk,
// whose products would run at a small chunk's speed).
int64_t rows_per_chunk(int64_t rows, int64_t bytes_per_row) {
  const int64_t fit = std::max(kChunkBytes / std::max<int64_t>(bytes_per_row, 1), kMinChunkRows);
  const int64_t chunks = std::max<int64_t>(1, (rows + fit - 1) / fit);
  return std::max<int64_t>(1, (rows + chunks - 1) / chunks);
}

struct Options {
  int64_t ignore_index;
  Reduction reduction;
  double label_smoothing;
  std::optional<double> softcap;
  double z_loss;
};

void check_args(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
                const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& ce_weight,
                const Options& opt) {
  TORCH_CHECK(input.dim() == 2, "linear_cross_entropy: input must be 2-D (rows, features), "
              "got ", input.dim(), "-D");
  TORCH_CHECK(weight.dim() == 2, "linear_cross_entropy: weight must be 2-D (classes, "
              "features), got ", weight.dim(), "-D");
  TORCH_CHECK(input.size(1) == weight.size(1), "linear_cross_entropy: input has ",
              input.size(1), " features but weight has ", weight.size(1),
              " (mat1 and mat2 shapes cannot be multiplied)");
  checks::float_dtype("linear_cross_entropy", "input", input);
  checks::same_dtype("linear_cross_entropy", input, "input", weight, "weight");
  TORCH_CHECK(target.dim() == 1, "linear_cross_entropy: target must be 1-D, got ",
              target.dim(), "-D");
  if (target.size(0) != input.size(0))
    throw c10::ValueError(c10::str("Expected input batch_size (", input.size(0),
                                   ") to match target batch_size (", target.size(0), ")."),
                          nullptr);
  checks::index_dtype("linear_cross_entropy", "target", target);
  const at::Tensor no_bias;
  const at::Tensor& b = bias && bias->defined() ? *bias : no_bias;
  if (b.defined()) {
    TORCH_CHECK(b.dim() == 1 && b.size(0) == weight.size(0),
                "linear_cross_entropy: bias must have shape (", weight.size(0), "), got ",
                b.sizes());
    checks::same_dtype("linear_cross_entropy", b, "bias", weight, "weight");
  }
  const at::Tensor& cw = ce_weight && ce_weight->defined() ? *ce_weight : no_bias;
  if (cw.defined()) {
    TORCH_CHECK(cw.dim() == 1 && cw.size(0) == weight.size(0),
                "linear_cross_entropy: ce_weight must have one weight per class, shape (",
                weight.size(0), "), got ", cw.sizes());
    checks::float_dtype("linear_cross_entropy", "ce_weight", cw);
  }
  checks::same_device("linear_cross_entropy", {&input, &weight, &target, &b, &cw});
  TORCH_CHECK(!opt.softcap || *opt.softcap > 0.0,
              "linear_cross_entropy: softcap must be > 0, got ", *opt.softcap);
  TORCH_CHECK(opt.z_loss >= 0.0, "linear_cross_entropy: z_loss must be >= 0, got ", opt.z_loss);
}

// A chunk's (loss summed over its rows, lse) and its logit gradient for that sum (softmax -
// smoothed one-hot per counted row). in_place (CPU): the gradient written over the logits
// themselves by the CPU kernel, one chunk buffer instead of two.
std::tuple<at::Tensor, at::Tensor, at::Tensor> chunk_loss_and_grad(at::Tensor& z,
                                                                   const at::Tensor& tr,
                                                                   const at::Tensor& class_weight,
                                                                   const Options& opt,
                                                                   bool in_place) {
  if (!in_place) {
    static const auto with_grad =
        op_handle<signatures::CrossEntropyWithGrad>("pymakemore::cross_entropy_with_grad");
    return with_grad.call(z, tr, optional_of(class_weight), "sum", opt.ignore_index,
                          opt.label_smoothing);
  }
  const CrossEntropyOptions ce =
      checks::cross_entropy_options("sum", opt.ignore_index, opt.label_smoothing);
  const int64_t rows = z.size(0), classes = z.size(1);
  at::Tensor loss = at::empty({}, z.options());
  at::Tensor lse = at::empty({rows}, z.options().dtype(checks::kLseDtype));
  int64_t bad = kAllValid;
  AT_DISPATCH_FLOATING_TYPES(z.scalar_type(), "linear_cross_entropy", [&] {
    with_index_type(tr.scalar_type(), [&](auto index_tag) {
      using Index = decltype(index_tag);
      bad = cross_entropy_forward<scalar_t, Index>(
          z.data_ptr<scalar_t>(), tr.data_ptr<Index>(),
          class_weight.defined() ? class_weight.data_ptr<scalar_t>() : nullptr, rows, classes, ce,
          loss.data_ptr<scalar_t>(), lse.data_ptr<double>(), z.data_ptr<scalar_t>(),
          torch_parallel_for());
    });
  });
  if (bad != kAllValid)
    checks::bad_target(checks::index_at(tr, bad), bad, classes, opt.ignore_index);
  return {loss, lse, z};
}
// What one pass over the chunks produces. grads: (grad_input, grad_weight, grad_bias), each
// undefined where not wanted.
struct Pass {
  at::Tensor loss;  // (N,) per row for "none"; else one value (the sum, or the mean)
  at::Tensor lse;   // (N,) each row's log-sum-exp of its (capped) logits, in the row dtype
  LinearGrads grads;
};

// The mean's 1 / (sum of the row weights) as a 0-d float64 tensor; 0 when every row is ignored
// (zero gradients; the loss itself is NaN, 0 / 0, as in torch). Read on the device, not the host.
at::Tensor mean_scale(const at::Tensor& target, const at::Tensor& row_weight,
                      int64_t ignore_index) {
  const at::Tensor any = target.ne(ignore_index).any();
  return at::where(any, row_weight.sum().reciprocal(), at::zeros({}, row_weight.options()));
}

// total / divisor; NaN when the divisor is 0 (every row ignored, or every target's class weight
// 0), as torch's mean, whose target term is 0 / 0 even when label smoothing's term is not.
at::Tensor mean_of(const at::Tensor& total, const at::Tensor& divisor) {
  return at::where(divisor.eq(0), std::numeric_limits<double>::quiet_NaN(), total / divisor);
}

// One pass over the rows in chunks. want: which gradients to compute (none: the loss alone);
// row_weight: calls::row_weights(); class_weight: undefined or (V,) in the row dtype.
// row_scale (N,): each row's logit gradient times its entry (the gradient of a "none" loss, or
// a mean/sum's gradient spread over the rows); undefined: the gradients of the sum (or mean)
// for a loss gradient of 1. lse_grad (N,): the gradient of the lse output, added as
// lse_grad * softmax to each row's logit gradient. The loss is computed only when with_loss.
Pass run_chunks(const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
                const c10::optional<at::Tensor>& bias, const at::Tensor& class_weight,
                const at::Tensor& row_weight, const Options& opt, std::array<bool, 3> want,
                const at::Tensor& row_scale, const at::Tensor& lse_grad, bool with_loss) {
  static const auto cross_entropy =
      op_handle<signatures::CrossEntropy>("pymakemore::cross_entropy");
  const bool has_bias = bias && bias->defined();
  const bool grads = want[0] || want[1] || want[2];
  const int64_t n = input.size(0), classes = weight.size(0);
  const at::Tensor x = input.contiguous(), w = weight.contiguous(), t = target.contiguous();
  const at::Tensor b = has_bias ? bias->contiguous() : at::Tensor();
  const OptionalTensor cw = optional_of(class_weight);
  // the row logic in float32 for float16/bfloat16 (as F.cross_entropy under autocast), the
  // weight gradient accumulated in float32 across chunks
  const bool half = half_precision(x);
  const at::ScalarType row_dtype = half ? at::kFloat : x.scalar_type();
  const c10::string_view per_row = "none", summed = "sum";

  Pass out;
  const at::TensorOptions rows_options = x.options().dtype(row_dtype);
  const bool none = opt.reduction == Reduction::None;
  at::Tensor loss_rows = with_loss && none ? at::empty({n}, rows_options) : at::Tensor();
  at::Tensor loss_sum =
      with_loss && !none ? at::zeros({}, x.options().dtype(at::kDouble)) : at::Tensor();
  at::Tensor lse_rows = with_loss ? at::empty({n}, rows_options) : at::Tensor();
  at::Tensor grad_x = want[0] ? at::empty_like(x) : at::Tensor();
  // written by the first chunk, added to by the others (zeros when there are no rows)
  at::Tensor grad_w = want[1] ? (n ? at::empty(w.sizes(), rows_options)
                                   : at::zeros(w.sizes(), rows_options))
                              : at::Tensor();
  at::Tensor grad_b = want[2] ? at::zeros({classes}, rows_options) : at::Tensor();
  // CPU without softcap (whose derivative needs the capped logits): the gradient in place
  const bool in_place = grads && x.is_cpu() && !opt.softcap;
  // the softmax beside the loss's gradient, for the z-loss's and the lse's gradients (taken
  // by torch's softmax from the logits: exact for huge, nearly tied logits too)
  const bool with_softmax = grads && (opt.z_loss > 0.0 || lse_grad.defined());
  const int64_t buffers = (grads && !in_place ? 2 : 1) + (with_softmax ? 1 : 0);
  const int64_t row_bytes = c10::elementSize(row_dtype) * buffers +
                            (half ? c10::elementSize(x.scalar_type()) : 0);
  const int64_t step = rows_per_chunk(n, classes * row_bytes);
  for (int64_t r0 = 0; r0 < n; r0 += step) {
    const int64_t rows = std::min(step, n - r0);
    const at::Tensor xr = x.narrow(0, r0, rows), tr = t.narrow(0, r0, rows);
    at::Tensor z = has_bias ? at::addmm(b, xr, w.t()) : at::mm(xr, w.t());  // (rows, V)
    if (half) z = z.to(at::kFloat);
    if (opt.softcap) z.div_(*opt.softcap).tanh_().mul_(*opt.softcap);  // c * tanh(z / c)
    const at::Tensor softmax = with_softmax ? at::softmax(z, 1) : at::Tensor();
    at::Tensor lse, dz;
    if (grads) {
      // dz = the gradient of the rows' summed loss: for each counted row its class weight
      // times (softmax - smoothed one-hot), zero for ignored rows
      at::Tensor chunk_loss;
      std::tie(chunk_loss, lse, dz) = chunk_loss_and_grad(z, tr, class_weight, opt, in_place);
      if (with_loss) loss_sum.add_(chunk_loss);  // (with_grad: never "none")
    } else {
      at::Tensor chunk_loss;
      std::tie(chunk_loss, lse) = cross_entropy.call(
          z, tr, cw, none ? per_row : summed, opt.ignore_index, opt.label_smoothing);
      if (none)
        loss_rows.narrow(0, r0, rows).copy_(chunk_loss);
      else
        loss_sum.add_(chunk_loss);
    }
    if (with_loss) lse_rows.narrow(0, r0, rows).copy_(lse);
    if (opt.z_loss > 0.0) {
      // PaLM's z-loss: z_loss * lse^2 per counted row, weighted as the row; its gradient
      // 2 z_loss lse (row weight) softmax
      const at::Tensor weighted = row_weight.narrow(0, r0, rows);
      const at::Tensor zl = lse.mul(lse).mul_(opt.z_loss).mul_(weighted);
      if (with_loss && none)
        loss_rows.narrow(0, r0, rows).add_(zl);
      else if (with_loss)
        loss_sum.add_(zl.sum());
      if (grads)
        dz.addcmul_(softmax, lse.mul(2.0 * opt.z_loss).mul_(weighted).to(row_dtype).unsqueeze(1));
    }
    if (!grads) continue;
    if (row_scale.defined())
      dz.mul_(row_scale.narrow(0, r0, rows).to(dz.scalar_type()).unsqueeze(1));
    if (lse_grad.defined())  // d lse / d logits = softmax
      dz.addcmul_(softmax, lse_grad.narrow(0, r0, rows).to(row_dtype).unsqueeze(1));
    if (opt.softcap) {  // through c * tanh(z / c): times 1 - (capped / c)^2, in z's buffer
      z.div_(*opt.softcap).square_().neg_().add_(1.0).mul_(dz);
      dz = z;
    }
    const at::Tensor dz_x = half ? dz.to(x.scalar_type()) : dz;
    if (want[0]) {
      at::Tensor rows_of_grad_x = grad_x.narrow(0, r0, rows);
      at::mm_out(rows_of_grad_x, dz_x, w);
    }
    if (want[1] && r0 == 0)
      at::mm_out(grad_w, dz.t(), half ? xr.to(at::kFloat) : xr);
    else if (want[1])
      grad_w.addmm_(dz.t(), half ? xr.to(at::kFloat) : xr);
    if (grad_b.defined()) grad_b.add_(dz.sum(0));
  }
  // the loss in the row dtype (float32 for float16/bfloat16: the caller casts it)
  if (with_loss && none) out.loss = loss_rows;
  if (with_loss && !none)
    out.loss = (opt.reduction == Reduction::Mean ? mean_of(loss_sum, row_weight.sum()) : loss_sum)
                   .to(row_dtype);
  out.lse = lse_rows;
  if (grads && opt.reduction == Reduction::Mean && !row_scale.defined()) {
    const at::Tensor inv = mean_scale(t, row_weight, opt.ignore_index);
    for (at::Tensor* g : {&grad_x, &grad_w, &grad_b})
      if (g->defined()) g->mul_(inv.to(g->scalar_type()));
  }
  out.grads = {grad_x.defined() ? grad_x : at::empty({0}, x.options()),
               grad_w.defined() ? grad_w.to(w.scalar_type()) : at::empty({0}, x.options()),
               grad_b.defined() ? grad_b.to(w.scalar_type()) : at::empty({0}, x.options())};
  return out;
}

// The class weights in the dtype the rows run in (float32 for float16/bfloat16 inputs).
at::Tensor class_weights(const c10::optional<at::Tensor>& ce_weight, const at::Tensor& input) {
  if (!ce_weight || !ce_weight->defined()) return at::Tensor();
  return ce_weight->to(half_precision(input) ? at::kFloat : input.scalar_type()).contiguous();
}

// The options, checked: the reduction and label smoothing as cross_entropy checks them.
Options options(c10::string_view reduction, int64_t ignore_index, double label_smoothing,
                c10::optional<double> softcap, double z_loss) {
  const CrossEntropyOptions ce =
      checks::cross_entropy_options(std::string(reduction), ignore_index, label_smoothing);
  // a cap of +inf is the limit of c * tanh(z / c) as c grows: no cap (inf * tanh(z / inf)
  // would be NaN)
  const bool capped = softcap && *softcap != std::numeric_limits<double>::infinity();
  return {ignore_index, ce.reduction, label_smoothing,
          capped ? std::optional<double>(*softcap) : std::nullopt, z_loss};
}

// (loss, lse, grad_input, grad_weight, grad_bias): the gradients grad_mask asks for, of a
// mean or sum loss for a loss gradient of 1, from the same pass (empty tensors otherwise).
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> linear_cross_entropy(
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& ce_weight,
    int64_t ignore_index, c10::string_view reduction, double label_smoothing,
    c10::optional<double> softcap, double z_loss, std::array<bool, 3> grad_mask) {
  const Options opt = options(reduction, ignore_index, label_smoothing, softcap, z_loss);
  check_args(input, weight, target, bias, ce_weight, opt);
  const bool has_bias = bias && bias->defined();
  const std::array<bool, 3> want{grad_mask[0], grad_mask[1], grad_mask[2] && has_bias};
  TORCH_CHECK(opt.reduction != Reduction::None || !(want[0] || want[1] || want[2]),
              "linear_cross_entropy: gradients in the forward need reduction 'mean' or 'sum'");
  const at::Tensor class_weight = class_weights(ce_weight, input);
  const at::Tensor row_weight =
      calls::row_weights(target, class_weight, opt.ignore_index, weight.size(0));
  Pass pass = run_chunks(input, weight, target, bias, class_weight, row_weight, opt, want,
                         at::Tensor(), at::Tensor(), true);
  auto [gx, gw, gb] = pass.grads;
  return {pass.loss, pass.lse, gx, gw, gb};
}

// The gradients for grad_loss (per row for "none", one value otherwise) and grad_lse (per row,
// or undefined), recomputed chunk by chunk; an entry whose mask is False comes back empty.
LinearGrads linear_cross_entropy_backward(
    const at::Tensor& grad_loss, const c10::optional<at::Tensor>& grad_lse,
    const at::Tensor& input, const at::Tensor& weight, const at::Tensor& target,
    const c10::optional<at::Tensor>& bias, const c10::optional<at::Tensor>& ce_weight,
    int64_t ignore_index, c10::string_view reduction, double label_smoothing,
    c10::optional<double> softcap, double z_loss, std::array<bool, 3> output_mask) {
  const Options opt = options(reduction, ignore_index, label_smoothing, softcap, z_loss);
  check_args(input, weight, target, bias, ce_weight, opt);
  const int64_t n = input.size(0);
  TORCH_CHECK(opt.reduction == Reduction::None ? grad_loss.dim() == 1 && grad_loss.size(0) == n
                                      : grad_loss.dim() == 0,
              "linear_cross_entropy_backward: grad_loss must have the loss's shape, got ",
              grad_loss.sizes());
  const at::Tensor lse_grad = grad_lse && grad_lse->defined() ? *grad_lse : at::Tensor();
  TORCH_CHECK(!lse_grad.defined() || (lse_grad.dim() == 1 && lse_grad.size(0) == n),
              "linear_cross_entropy_backward: grad_lse must have shape (", n, "), got ",
              lse_grad.sizes());
  const bool has_bias = bias && bias->defined();
  const std::array<bool, 3> want{output_mask[0], output_mask[1], output_mask[2] && has_bias};
  const at::Tensor class_weight = class_weights(ce_weight, input);
  const at::Tensor row_weight =
      calls::row_weights(target, class_weight, opt.ignore_index, weight.size(0));
  if (opt.reduction == Reduction::None)  // each row's logit gradient times its loss's gradient
    return run_chunks(input, weight, target, bias, class_weight, row_weight, opt, want,
                      grad_loss, lse_grad, false)
        .grads;
  if (lse_grad.defined()) {  // the mean's or sum's gradient spread over the rows
    const at::Tensor scale = opt.reduction == Reduction::Mean
                                 ? grad_loss.to(at::kDouble) *
                                       mean_scale(target, row_weight, opt.ignore_index)
                                 : grad_loss.to(at::kDouble);
    return run_chunks(input, weight, target, bias, class_weight, row_weight, opt, want,
                      scale.expand({n}), lse_grad, false)
        .grads;
  }
  // mean, sum: the forward's computation, then times grad_loss, so that a recomputation (a
  // second backward through a retained graph) gives the first one's gradients bit for bit
  LinearGrads grads = run_chunks(input, weight, target, bias, class_weight, row_weight, opt,
                                 want, at::Tensor(), at::Tensor(), false)
                          .grads;
  for (at::Tensor* g : {&std::get<0>(grads), &std::get<1>(grads), &std::get<2>(grads)})
    if (g->numel()) g->mul_(grad_loss.to(g->scalar_type()));
  return grads;
}

using autograd::AutogradContext;
using autograd::variable_list;

// As cross_entropy: for a mean or sum loss the forward computes the gradients grad_mask asks
// for in its own pass (for grad_loss = 1) and the backward scales them in place; otherwise (a
// "none" loss, a gradient through the lse, a second backward) the backward recomputes them
// chunk by chunk. create_graph and vmapped backwards (is_grads_batched,
// jacobian(vectorize=True)) run the composite's formulas.
struct LinearCrossEntropyFunction : torch::autograd::Function<LinearCrossEntropyFunction> {
  static variable_list forward(AutogradContext* ctx, const at::Tensor& input,
                               const at::Tensor& weight, const at::Tensor& target,
                               const c10::optional<at::Tensor>& bias,
                               const c10::optional<at::Tensor>& ce_weight, int64_t ignore_index,
                               c10::string_view reduction, double label_smoothing,
                               c10::optional<double> softcap, double z_loss,
                               std::array<bool, 3> grad_mask) {
    static const auto fwd =
        op_handle<decltype(linear_cross_entropy)>("pymakemore::linear_cross_entropy");
    TORCH_CHECK(!autograd::requires_grad(ce_weight), "linear_cross_entropy: no gradient is "
                "computed for the class weights (ce_weight); pass ce_weight.detach()");
    at::AutoDispatchBelowADInplaceOrView guard;
    auto [loss, lse, gx, gw, gb] = fwd.call(input, weight, target, bias, ce_weight, ignore_index,
                                            reduction, label_smoothing, softcap, z_loss,
                                            grad_mask);
    ctx->save_for_backward({input, weight, target, bias ? *bias : at::Tensor(),
                            ce_weight ? *ce_weight : at::Tensor()});
    ctx->saved_data["ignore_index"] = ignore_index;
    ctx->saved_data["reduction"] = std::string(reduction);
    ctx->saved_data["label_smoothing"] = label_smoothing;
    ctx->saved_data["softcap"] = softcap;
    ctx->saved_data["z_loss"] = z_loss;
    if (grad_mask[0] || grad_mask[1] || grad_mask[2]) {
      ctx->saved_data["grads"] = c10::List<at::Tensor>({gx, gw, gb});
      ctx->saved_data["grad_mask"] = c10::List<bool>({grad_mask[0], grad_mask[1], grad_mask[2]});
    }
    ctx->mark_non_differentiable({gx, gw, gb});
    ctx->set_materialize_grads(false);  // an unused output's gradient stays undefined
    return {loss, lse, gx, gw, gb};
  }

  static variable_list backward(AutogradContext* ctx, variable_list grads) {
    static const auto bwd = op_handle<decltype(linear_cross_entropy_backward)>(
        "pymakemore::linear_cross_entropy_backward");
    static const auto scale = op_handle<signatures::ScaleGrad>("pymakemore::scale_grad_");
    const at::Tensor &grad_loss = grads[0], &grad_lse = grads[1];
    variable_list out(11);
    if (!grad_loss.defined() && !grad_lse.defined()) return out;
    const auto precomputed = ctx->saved_data.find("grads");
    const bool has_bias = ctx->get_saved_variables()[3].defined();  // (checks in-place edits)
    const std::array<bool, 3> wanted{ctx->needs_input_grad(0), ctx->needs_input_grad(1),
                                     has_bias && ctx->needs_input_grad(3)};
    auto answer = [&](at::Tensor gx, at::Tensor gw, at::Tensor gb) {
      if (wanted[0]) out[0] = std::move(gx);
      if (wanted[1]) out[1] = std::move(gw);
      if (wanted[2]) out[3] = std::move(gb);
      return out;
    };
    if (at::GradMode::is_enabled() || autograd::batched(grad_loss) || autograd::batched(grad_lse)) {
      if (precomputed != ctx->saved_data.end()) ctx->saved_data.erase(precomputed);
      auto [gx, gw, gb] = composite_backward(ctx, grad_loss, grad_lse, wanted);
      return answer(gx, gw, gb);
    }
    if (precomputed != ctx->saved_data.end() && !grad_lse.defined()) {
      const c10::List<bool> mask = ctx->saved_data["grad_mask"].toBoolList();
      bool covered = true;
      for (size_t i = 0; i < 3; ++i) covered = covered && (!wanted[i] || mask[i]);
      if (covered) {
        // handed over, not kept: the caller then owns the only reference (no copy of
        // grad_weight); a second backward through a retained graph recomputes
        const c10::List<at::Tensor> found = precomputed->second.toTensorList();
        ctx->saved_data.erase(precomputed);
        at::Tensor g[3] = {found[0], found[1], found[2]};
        for (at::Tensor& t : g)
          if (t.numel()) scale.call(t, grad_loss.to(t.scalar_type()));
        return answer(g[0], g[1], g[2]);
      }
    }
    const variable_list saved = ctx->get_saved_variables();
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    // only the lse's gradient came back: the loss's is zero
    std::vector<int64_t> loss_shape;
    if (reduction == "none") loss_shape.push_back(saved[0].size(0));
    const at::Tensor loss_grad =
        grad_loss.defined() ? grad_loss : at::zeros(loss_shape, grad_lse.options());
    auto [gx, gw, gb] = bwd.call(loss_grad, optional_of(grad_lse), saved[0], saved[1], saved[2],
                                 optional_of(saved[3]), optional_of(saved[4]),
                                 ctx->saved_data["ignore_index"].toInt(), reduction,
                                 ctx->saved_data["label_smoothing"].toDouble(),
                                 softcap_of(ctx), ctx->saved_data["z_loss"].toDouble(), wanted);
    return answer(gx, gw, gb);
  }

  static c10::optional<double> softcap_of(AutogradContext* ctx) {
    const c10::IValue& v = ctx->saved_data["softcap"];
    return v.isNone() ? c10::nullopt : c10::optional<double>(v.toDouble());
  }

  // The composite's gradients, through ATen's differentiable ops: F.linear, the rows in
  // float32 for float16/bfloat16, the softcap, cross entropy with class weights, the z-loss
  // (each counted row's z_loss * lse^2 times its class weight, a mean over the weights' sum)
  // and the lse. Graph-building when create_graph; under vmap, the batching rules of each op.
  static LinearGrads composite_backward(AutogradContext* ctx, const at::Tensor& grad_loss,
                                        const at::Tensor& grad_lse,
                                        const std::array<bool, 3>& wanted) {
    const variable_list saved = ctx->get_saved_variables();
    const bool create_graph = at::GradMode::is_enabled();
    at::AutoGradMode enable(true);
    variable_list leaves = {saved[0], saved[1], saved[3]};
    if (!create_graph)  // (vmap: a graph of its own from fresh leaves)
      for (size_t i = 0; i < 3; ++i)
        if (wanted[i]) leaves[i] = leaves[i].detach().requires_grad_(true);
    const at::Tensor& target = saved[2];
    at::Tensor logits = at::linear(leaves[0], leaves[1], optional_of(leaves[2]));
    if (at::isReducedFloatingType(logits.scalar_type())) logits = logits.to(at::kFloat);
    if (const auto cap = softcap_of(ctx)) logits = at::tanh(logits / *cap) * *cap;
    const c10::optional<at::Tensor> class_weight =
        saved[4].defined() ? c10::optional<at::Tensor>(saved[4].to(logits.scalar_type()))
                           : c10::nullopt;
    const std::string reduction = ctx->saved_data["reduction"].toStringRef();
    const Reduction red = checks::parse_reduction(reduction);
    const int64_t ignore_index = ctx->saved_data["ignore_index"].toInt();
    at::Tensor loss = at::cross_entropy_loss(logits, target.to(at::kLong), class_weight,
                                             static_cast<int64_t>(red), ignore_index,
                                             ctx->saved_data["label_smoothing"].toDouble());
    const at::Tensor lse = at::logsumexp(logits, {1});
    const double z_loss = ctx->saved_data["z_loss"].toDouble();
    if (z_loss > 0.0) {
      const at::Tensor row_weight =
          calls::row_weights(target, class_weight ? *class_weight : at::Tensor(), ignore_index,
                             logits.size(1))
              .to(lse.scalar_type());
      const at::Tensor rows = lse * lse * row_weight * z_loss;
      loss = loss + (red == Reduction::None  ? rows
                     : red == Reduction::Sum ? rows.sum()
                                             : rows.sum() / row_weight.sum());
    }
    variable_list outputs, output_grads, inputs;
    if (grad_loss.defined()) outputs.push_back(loss), output_grads.push_back(grad_loss);
    if (grad_lse.defined()) outputs.push_back(lse), output_grads.push_back(grad_lse);
    for (size_t i = 0; i < 3; ++i)
      if (wanted[i]) inputs.push_back(leaves[i]);
    const variable_list found = torch::autograd::grad(outputs, inputs, output_grads,
                                                      /*retain_graph=*/true, create_graph);
    at::Tensor g[3];
    for (size_t i = 0, k = 0; i < 3; ++i)
      if (wanted[i]) g[i] = found[k++];
    return {g[0], g[1], g[2]};
  }
};

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
linear_cross_entropy_autograd(const at::Tensor& input, const at::Tensor& weight,
                              const at::Tensor& target, const c10::optional<at::Tensor>& bias,
                              const c10::optional<at::Tensor>& ce_weight, int64_t ignore_index,
                              c10::string_view reduction, double label_smoothing,
                              c10::optional<double> softcap, double z_loss,
                              std::array<bool, 3> grad_mask) {
  variable_list out = LinearCrossEntropyFunction::apply(
      input, weight, target, bias, ce_weight, ignore_index, reduction, label_smoothing, softcap,
      z_loss, grad_mask);
  return {out[0], out[1], out[2], out[3], out[4]};
}

}  // namespace

TORCH_LIBRARY_IMPL(pymakemore, CompositeExplicitAutograd, m) {
  m.impl("linear_cross_entropy", &linear_cross_entropy);
  m.impl("linear_cross_entropy_backward", &linear_cross_entropy_backward);
}

TORCH_LIBRARY_IMPL(pymakemore, Autograd, m) {
  m.impl("linear_cross_entropy", &linear_cross_entropy_autograd);
}

}  // namespace pymakemore

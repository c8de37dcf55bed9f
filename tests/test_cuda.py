"""CUDA-only behaviour: a whole training step captured in a CUDA graph, and determinism of the
weight gradients. (The parity suites in the other files run on CUDA too when a GPU is there.)"""
import pytest
import torch

from conftest import HAS_CUDA, names_path
from pymakemore import ops, train
from pymakemore.checkpoint import load_checkpoint
from pymakemore.models import MLP

pytestmark = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA device and the extension "
                                                     "built with CUDA kernels")


def _sgd_step(model, x, y, lr=0.1):
    _, loss = model(x, y)
    params = list(model.parameters())
    grads = torch.autograd.grad(loss, params)
    with torch.no_grad():
        for p, g in zip(params, grads):
            p.sub_(lr * g)
    return loss.detach()


def test_training_step_in_a_cuda_graph_matches_eager():
    torch.manual_seed(0)
    graphed = MLP(27, init="kaiming").cuda()
    eager = MLP(27, init="kaiming").cuda()
    start = {k: v.clone() for k, v in graphed.state_dict().items()}
    static_x = torch.randint(0, 27, (32, 3), device="cuda")
    static_y = torch.randint(0, 27, (32,), device="cuda")

    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):  # warm-up outside the capture, as CUDA graphs require
        for _ in range(3):
            _sgd_step(graphed, static_x, static_y)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_loss = _sgd_step(graphed, static_x, static_y)

    with torch.no_grad():  # both models restart from the same parameters
        for name, p in graphed.state_dict().items():
            p.copy_(start[name])
        eager.load_state_dict(start)
    for _ in range(5):
        x = torch.randint(0, 27, (32, 3), device="cuda")
        y = torch.randint(0, 27, (32,), device="cuda")
        static_x.copy_(x)
        static_y.copy_(y)
        graph.replay()
        loss = _sgd_step(eager, x, y)
        torch.testing.assert_close(static_loss, loss, rtol=1e-5, atol=1e-6)
    for name, p in eager.state_dict().items():
        torch.testing.assert_close(graphed.state_dict()[name], p, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("rows,dim", [(27, 10), (50304, 768)])
def test_embedding_backward_is_bit_identical_run_to_run(rows, dim):
    idx = torch.randint(0, rows, (262144 if rows == 27 else 16384,), device="cuda")
    weight = torch.randn(rows, dim, device="cuda", requires_grad=True)
    grad = torch.randn(*idx.shape, dim, device="cuda")
    first = torch.autograd.grad(ops.embedding(idx, weight), weight, grad)[0]
    for _ in range(3):
        again = torch.autograd.grad(ops.embedding(idx, weight), weight, grad)[0]
        assert torch.equal(first, again)


def test_linear_weight_gradients_are_bit_identical_run_to_run():
    x = torch.randn(65536, 30, device="cuda", requires_grad=True)
    w = torch.randn(200, 30, device="cuda", requires_grad=True)
    b = torch.randn(200, device="cuda", requires_grad=True)
    g = torch.randn(65536, 200, device="cuda")
    first = torch.autograd.grad(ops.linear_tanh(x, w, b), (x, w, b), g)
    again = torch.autograd.grad(ops.linear_tanh(x, w, b), (x, w, b), g)
    for a, c in zip(first, again):
        assert torch.equal(a, c)


def test_float32_linear_is_not_tf32():
    # TF32 would keep 10 mantissa bits: errors near 1e-3 relative on this product
    x = torch.randn(256, 512, device="cuda", dtype=torch.float64)
    w = torch.randn(128, 512, device="cuda", dtype=torch.float64)
    exact = x @ w.t()
    ours = ops.linear(x.float(), w.float()).double()
    assert ((ours - exact).abs() / exact.abs().clamp_min(1.0)).max() < 1e-5


def test_fused_engine_on_cuda_follows_the_cpu_engine():
    from pymakemore import engines
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 27, (500, 3), generator=g)
    y = torch.randint(0, 27, (500,), generator=g)
    lrs = torch.full((200,), 0.1)
    cpu_model, gpu_model = MLP(27, init="kaiming"), MLP(27, init="kaiming").cuda()
    cpu_losses = engines.fused_steps(cpu_model, x, y, lrs, 32, 0, 11)
    gpu_losses = engines.fused_steps(gpu_model, x.cuda(), y.cuda(), lrs, 32, 0, 11)
    torch.testing.assert_close(gpu_losses.cpu(), cpu_losses, rtol=1e-4, atol=1e-4)
    for p, q in zip(gpu_model.parameters(), cpu_model.parameters()):
        torch.testing.assert_close(p.cpu(), q, rtol=1e-3, atol=1e-4)
    again = MLP(27, init="kaiming").cuda()
    assert torch.equal(engines.fused_steps(again, x.cuda(), y.cuda(), lrs, 32, 0, 11),
                       gpu_losses)  # run to run: identical


def test_graph_engine_follows_the_ops_engine(tmp_path):
    runs = {}
    for engine in ("ops", "graph"):
        work = tmp_path / engine
        assert train.main(["-i", str(names_path()), "-o", str(work), "--device", "cuda",
                           "--engine", engine, "--max-steps", "300", "--lr-decay-at", "150",
                           "--eval-every", "0", "--num-samples", "0", "--quiet",
                           "--init", "kaiming"]) == 0
        runs[engine] = load_checkpoint(work)
    # the same generator draws the same minibatches; the same kernels run in the graph
    torch.testing.assert_close(runs["graph"]["losses"], runs["ops"]["losses"], rtol=1e-5,
                               atol=1e-5)
    for name, p in runs["ops"]["model"].items():
        torch.testing.assert_close(runs["graph"]["model"][name], p, rtol=1e-4, atol=1e-5)

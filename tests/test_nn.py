import torch

from pymakemore import nn


def test_modules_swap_in_for_torch_nn():
    emb_t = torch.nn.Embedding(27, 10, padding_idx=0)
    emb = nn.Embedding(27, 10, padding_idx=0)
    emb.load_state_dict(emb_t.state_dict())  # same parameter names and shapes
    lin_t = torch.nn.Linear(30, 200)
    lin = nn.LinearTanh(30, 200)
    lin.load_state_dict(lin_t.state_dict())
    weight = torch.rand(27) + 0.5
    loss_t = torch.nn.CrossEntropyLoss(weight=weight, ignore_index=5, label_smoothing=0.1)
    loss_fn = nn.CrossEntropyLoss(weight=weight, ignore_index=5, label_smoothing=0.1)

    x = torch.randint(0, 27, (32, 3))
    y = torch.randint(0, 27, (32,))
    head = torch.randn(200, 27)
    out_t = loss_t(torch.tanh(lin_t(emb_t(x).view(32, -1))) @ head, y)
    out = loss_fn(lin(emb(x).view(32, -1)) @ head, y)
    torch.testing.assert_close(out, out_t)
    out_t.backward()
    out.backward()
    for p, p_t in ((emb.weight, emb_t.weight), (lin.weight, lin_t.weight),
                   (lin.bias, lin_t.bias)):
        torch.testing.assert_close(p.grad, p_t.grad, rtol=1e-4, atol=1e-6)
    assert torch.all(emb.weight.grad[0] == 0)  # padding row


def test_linear_matches_torch_nn_linear():
    lin_t = torch.nn.Linear(200, 27)
    lin = nn.Linear(200, 27)
    lin.load_state_dict(lin_t.state_dict())
    x = torch.randn(32, 200)
    torch.testing.assert_close(lin(x), lin_t(x), rtol=1e-5, atol=1e-5)


def test_linear_tanh_without_bias():
    lin = nn.LinearTanh(4, 3, bias=False)
    assert lin.bias is None
    x = torch.randn(2, 4)
    torch.testing.assert_close(lin(x), torch.tanh(x @ lin.weight.t()))

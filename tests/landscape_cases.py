"""Small float64 models shared by the landscape tests."""

import torch
import torch.nn.functional as F
from torch import nn

from sgdlab.curvature import flatten


def vec(model) -> torch.Tensor:
    return flatten([p.detach() for p in model.parameters()])


def relu_mlp(seed=0, din=5, hidden=7, dout=3):
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        model = nn.Sequential(nn.Linear(din, hidden), nn.ReLU(), nn.Linear(hidden, dout)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.7)
    x = torch.randn(30, din, generator=g, dtype=torch.float64)
    y = torch.randint(0, dout, (30,), generator=g)
    return model.eval(), F.cross_entropy, (x, y)


def conv_bn(seed=0, eps=1e-5):
    """conv → BatchNorm → ReLU → linear with non-trivial running statistics."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3, eps=eps), nn.ReLU(),
                              nn.Flatten(), nn.Linear(3 * 16, 4)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64) * 0.5)
        model[1].running_mean.copy_(0.2 * torch.randn(3, generator=g, dtype=torch.float64))
        model[1].running_var.copy_(0.5 + torch.rand(3, generator=g, dtype=torch.float64))
    x = torch.randn(26, 1, 6, 6, generator=g, dtype=torch.float64)
    y = torch.randint(0, 4, (26,), generator=g)
    return model.eval(), F.cross_entropy, (x, y)


def linear_regression(seed=0, n=40, d=6):
    """0.5·mean((Xw − y)²): a quadratic with H = XᵀX/n and minimum w* (least squares)."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        model = nn.Linear(d, 1, bias=False).double()
    x = torch.randn(n, d, generator=g, dtype=torch.float64) * torch.linspace(0.5, 2.0, d,
                                                                             dtype=torch.float64)
    y = torch.randn(n, 1, generator=g, dtype=torch.float64)
    with torch.no_grad():
        model.weight.copy_(torch.randn(1, d, generator=g, dtype=torch.float64))
    H = x.T @ x / n
    w_star = torch.linalg.solve(x.T @ x, x.T @ y).reshape(-1)

    def loss_fn(out, t):
        return 0.5 * F.mse_loss(out, t)

    def exact(w):  # the loss at a flat w, in closed form
        r = x @ w.reshape(-1, 1) - y
        return float(0.5 * (r**2).mean())

    return model.eval(), loss_fn, (x, y), H, w_star, exact

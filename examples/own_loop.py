"""Probes and curvature in a training loop of your own (no sgdlab trainer, no store).

    python examples/own_loop.py

Trains a small MLP on scikit-learn's digits with plain PyTorch and, every 40 steps,
measures the top Hessian eigenvalues (warm-started), the gradient noise and the weight
norms with sgdlab's probes; then the trace and the spectral density of the final Hessian
with the curvature functions directly, as one would with PyHessian.
"""

import torch
from sklearn.datasets import load_digits
from torch import nn

from sgdlab.curvature import hessian_density, hessian_eigs, hessian_trace
from sgdlab.data import DataBundle
from sgdlab.probes import ProbeContext
from sgdlab.probes.hessian import HessianProbe
from sgdlab.probes.noise import GradientNoiseProbe
from sgdlab.probes.weights import Weights

torch.manual_seed(0)
digits = load_digits()
x = torch.tensor(digits.data, dtype=torch.float32) / 16.0
y = torch.tensor(digits.target)
model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
loss_fn = nn.CrossEntropyLoss()  # any loss returning the mean over the batch
lr = 0.1
opt = torch.optim.SGD(model.parameters(), lr=lr)

# The context gives probes the model, the loss and fixed subsets of the data; probes draw
# randomness only from ctx.generator, so they never change your training trajectory.
ctx = ProbeContext(model, "cross_entropy", loss_fn, DataBundle.from_tensors(x, y), seed=0,
                   lr=lr, generator=torch.Generator().manual_seed(0))
probes = [HessianProbe(k=3, n=1000), GradientNoiseProbe(n=500), Weights()]
for probe in probes:
    probe.on_train_start(ctx)

for step in range(201):
    idx = torch.randint(0, len(x), (64,))
    opt.zero_grad()
    loss = loss_fn(model(x[idx]), y[idx])
    loss.backward()
    if step % 40 == 0:
        ctx.step, ctx.shared = step, {}  # a new step: shared eigenpairs are recomputed
        results = {k: v for p in probes for k, v in (p.measure(ctx) or {}).items()}
        print(f"step {step:3d}  loss {loss.item():.3f}  lambda_max {results['lambda_max']:.3f}"
              f" (2/lr = {results['stability']:.0f})  Tr K {results['trace_K']:.3f}"
              f"  |theta - theta0| {results.get('dist_init', 0.0):.3f}")
    opt.step()

data = (x[:1000], y[:1000])
eigs = hessian_eigs(model, loss_fn, data, k=5, tol=1e-4)
trace = hessian_trace(model, loss_fn, data, rtol=0.02)
density = hessian_density(model, loss_fn, data, num_steps=40)
print(eigs)
print(f"Tr H = {trace.estimate:.3f} ± {trace.stderr:.3f} ({trace.products} products)")
print(f"density on [{density.grid[0]:.2f}, {density.grid[-1]:.2f}], "
      f"mass above 1: {density.mass(1.0, float('inf')):.4f}")

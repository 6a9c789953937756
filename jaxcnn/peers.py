"""Peers for `jaxcnn bench --peer`: the same net, data and SGD in another framework.

`torch`: PyTorch eager, built from the layer stack (`nn.Conv2d`, `nn.Sigmoid`, `nn.AvgPool2d`,
`nn.Flatten`, `nn.Linear`) and started from the jaxcnn net's own weights, so the two runs do the same
arithmetic: L = ½·Σ(o − y)²/N and w <- w − alpha·dw (`torch.optim.SGD` without momentum).
`torch-compile`: the same module, loss and SGD, with the forward pass and loss (and so, through AOTAutograd,
their backward) and the SGD update each compiled by `torch.compile` (TorchInductor's C++ code for the CPU).
torch is imported only here, and only when a peer is asked for (`pip install 'jaxcnn[peers]'`).
"""
from __future__ import annotations

import numpy as np

from .layers import Conv, Pool

PEERS = ("torch", "torch-compile")


def import_torch():
    """The torch module, or a ValueError saying how to install it."""
    try:
        import torch
    except ImportError:
        raise ValueError("--peer torch needs PyTorch: pip install 'jaxcnn[peers]' (or pip install torch)") from None
    return torch


def _dtype(torch, net):
    return {np.dtype("float32"): torch.float32, np.dtype("float64"): torch.float64}[np.dtype(net.dtype)]


def torch_net(net):
    """`net` as a `torch.nn.Sequential` holding copies of its weights.

    jaxcnn kernels are HWIO cross-correlations, torch's OIHW cross-correlations: weight = k.transpose(3, 2, 0, 1).
    `nn.Flatten` of NCHW maps is the toolbox's fv order, so `ffW` (classes, fvnum) is `nn.Linear`'s weight as it is.
    """
    torch = import_torch()
    nn = torch.nn
    dtype = _dtype(torch, net)
    modules, conv = [], iter(net.params["conv"])
    for layer in net.layers[1:]:
        if isinstance(layer, Conv):
            p = next(conv)
            k = np.asarray(p["k"])
            module = nn.Conv2d(k.shape[2], k.shape[3], k.shape[:2], dtype=dtype)
            with torch.no_grad():
                module.weight.copy_(torch.from_numpy(np.array(k.transpose(3, 2, 0, 1))))
                module.bias.copy_(torch.from_numpy(np.array(p["b"])))
            modules += [module, nn.Sigmoid()]                             # (N, C_out, H-k+1, W-k+1)
        elif isinstance(layer, Pool):
            modules.append(nn.AvgPool2d(layer.scale))                     # (N, C, H/s, W/s)
    ffW = np.asarray(net.params["ffW"])
    linear = nn.Linear(ffW.shape[1], ffW.shape[0], dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(np.array(ffW)))
        linear.bias.copy_(torch.from_numpy(np.array(net.params["ffb"])))
    return nn.Sequential(*modules, nn.Flatten(), linear, nn.Sigmoid())   # (N, classes)


def jax_params(module) -> dict:
    """The inverse of `torch_net`: a Sequential's weights as jaxcnn params (numpy, HWIO kernels)."""
    torch = import_torch()
    convs = [m for m in module if isinstance(m, torch.nn.Conv2d)]
    linear = [m for m in module if isinstance(m, torch.nn.Linear)][-1]
    as_np = lambda t: t.detach().numpy().copy()                            # noqa: E731
    return {"conv": [{"k": as_np(m.weight).transpose(2, 3, 1, 0), "b": as_np(m.bias)} for m in convs],
            "ffW": as_np(linear.weight), "ffb": as_np(linear.bias)}


def torch_trainer(net, images, targets, alpha: float, threads: int | None = None, compile: bool = False):
    """(module, epoch): `epoch(batches)` runs one epoch of plain SGD over the rows of a (steps, batchsize)
    index matrix and returns the per-step losses; the module's weights carry over between epochs.

    `images` (N, H, W, C) and `targets` (N, classes) are the floats jaxcnn trains on; they are copied once
    to NCHW. Each epoch gathers its batches once, as jaxcnn's epoch does. `threads`: `torch.set_num_threads`.
    `compile`: run each step through `torch.compile` (it compiles on the first step, and again if a batch
    of another size comes).
    """
    torch = import_torch()
    if threads:
        torch.set_num_threads(threads)
    dtype = _dtype(torch, net)
    module = torch_net(net)
    x = torch.from_numpy(np.array(np.asarray(images).transpose(0, 3, 1, 2), order="C")).to(dtype)
    y = torch.from_numpy(np.array(targets)).to(dtype)
    optimizer = torch.optim.SGD(module.parameters(), lr=alpha)

    def loss_of(xb, yb):
        o = module(xb)
        return 0.5 * ((o - yb) ** 2).sum() / o.shape[0]

    def update():
        optimizer.step()

    if compile:                                   # forward + loss (and so their backward) and the update, compiled
        loss_of, update = torch.compile(loss_of), torch.compile(update)

    def step(xb, yb):
        loss = loss_of(xb, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        update()
        return loss.detach()

    def epoch(batches):
        index = torch.from_numpy(np.array(batches, np.int64))
        xs, ys = x[index], y[index]                                       # (steps, batchsize, C, H, W), (steps, batchsize, classes)
        return torch.stack([step(xb, yb) for xb, yb in zip(xs, ys)]).numpy()

    return module, epoch

"""The implementations the benchmark times side by side, each as ``setup(case) -> callable``.

A peer that is not installed gives None, and the table says "n/a" for it. Every callable
computes ECA on the case's arrays with the paper's layer: channels-first, zero padding, one
shared kernel, sigmoid, no bias.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

import npeca

Call = Optional[Callable[[], object]]


class NotAvailable(Exception):
    """A peer is installed but cannot run this case (the message says why)."""


@dataclass
class Case:
    """One row of the table: the arrays every implementation reads and writes."""

    shape: tuple[int, ...]  # (N, C, H, W) as the layer sees it, whatever the memory layout
    dtype: np.dtype
    x: np.ndarray  # (N, C, H, W), or (N, H, W, C) in memory when channels_last
    weight: np.ndarray  # (1, 1, k), as torch.nn.Conv1d(1, 1, k) stores it
    grad_out: np.ndarray
    out: np.ndarray  # preallocated y (and the copy floor's destination)
    dx: np.ndarray  # preallocated dL/dx
    channels_last: bool = False

    @classmethod
    def make(cls, shape, dtype, seed: int = 0, channels_last: bool = False) -> "Case":
        """Random x and upstream gradient, the paper's k for C, a small random kernel."""
        rng = np.random.default_rng(seed)
        if dtype == "bfloat16":
            import ml_dtypes  # the bfloat16 extra: pip install -e ".[bfloat16]"
            dtype = ml_dtypes.bfloat16
        dtype = np.dtype(dtype)
        k = npeca.kernel_size(shape[1])
        stored = (shape[0],) + tuple(shape[2:]) + (shape[1],) if channels_last else shape
        x = rng.standard_normal(stored, dtype=np.float32).astype(dtype, copy=False)
        g = rng.standard_normal(stored, dtype=np.float32).astype(dtype, copy=False)
        w = (rng.standard_normal((1, 1, k)) / np.sqrt(k)).astype(dtype)
        out, dx = np.ones_like(x), np.ones_like(x)  # touched: no page faults in the timing
        return cls(tuple(shape), dtype, x, w, g, out, dx, channels_last)

    @property
    def axis(self) -> int:
        """npeca's channel_axis for this case."""
        return -1 if self.channels_last else 1


# --- the floor and npeca ----------------------------------------------------------------------

def copy_floor(case: Case) -> Call:
    """np.copyto(out, x): one read and one write of the tensor."""
    return lambda: np.copyto(case.out, case.x)


def npeca_forward(backend: str, preallocated: bool = True):
    """npeca.eca with ``backend``, writing into ``out`` or into a new array."""
    def setup(case: Case) -> Call:
        if backend == "numba" and _missing("numba"):
            return None
        kw = dict(channel_axis=case.axis) if case.channels_last else {}
        if backend != "auto":
            kw["backend"] = backend
        if preallocated:
            return lambda: npeca.eca(case.x, case.weight, out=case.out, **kw)
        return lambda: npeca.eca(case.x, case.weight, **kw)
    return setup


def npeca_default(case: Case) -> Call:
    """The call users write: ``y = npeca.eca(x, w)`` (backend "auto", a new y)."""
    return npeca_forward("auto", preallocated=False)(case)


def npeca_default_out(case: Case) -> Call:
    """``npeca.eca(x, w, out=y)`` with the default backend."""
    return npeca_forward("auto", preallocated=True)(case)


def npeca_default_train(case: Case) -> Call:
    """``y = npeca.eca(x, w)`` then ``npeca.eca_backward(x, w, g)``: new arrays, default
    backend, as a training step writes it."""
    kw = dict(channel_axis=case.axis) if case.channels_last else {}

    def step():
        npeca.eca(case.x, case.weight, **kw)
        return npeca.eca_backward(case.x, case.weight, case.grad_out, **kw)
    return step


def npeca_train_step(backend: str):
    """npeca.eca then npeca.eca_backward (writing into preallocated y and dx for numba)."""
    def setup(case: Case) -> Call:
        if backend == "numba" and _missing("numba"):
            return None
        out = dict(out=case.out) if backend == "numba" else {}
        dx = dict(out=case.dx) if backend == "numba" else {}

        def step():
            npeca.eca(case.x, case.weight, backend=backend, **out)
            return npeca.eca_backward(case.x, case.weight, case.grad_out, backend=backend,
                                      **dx)
        return step
    return setup


# --- PyTorch eager ----------------------------------------------------------------------------

def _torch():
    """torch with as many intra-op threads as this machine has cores, or None."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(os.cpu_count() or 1)
    return torch


def _torch_eca(torch, x, weight):
    """The ECA-Net / timm EcaModule forward: pool, Conv1d over channels, sigmoid, scale."""
    n, c = x.shape[:2]
    m = x.mean(dim=tuple(range(2, x.dim())))  # (N, C)
    k = weight.shape[-1]
    z = torch.nn.functional.conv1d(m.view(n, 1, c), weight, padding=(k - 1) // 2)
    a = torch.sigmoid(z).view((n, c) + (1,) * (x.dim() - 2))
    return x * a


def _torch_tensor(torch, array: np.ndarray):
    """torch.from_numpy, bfloat16 included (its 16-bit patterns, shared)."""
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16)).view(torch.bfloat16)
    return torch.from_numpy(array)


def _torch_input(torch, case: Case, array: np.ndarray):
    """A torch view of a case array as (N, C, H, W): channels_last memory format for a
    channels-last case (what ``x.to(memory_format=torch.channels_last)`` gives)."""
    t = _torch_tensor(torch, array)
    return t.permute(0, t.dim() - 1, *range(1, t.dim() - 1)) if case.channels_last else t


def torch_forward(case: Case) -> Call:
    """PyTorch eager forward under no_grad (y freshly allocated, as eager code does)."""
    torch = _torch()
    if torch is None:
        return None
    x, w = _torch_input(torch, case, case.x), _torch_tensor(torch, case.weight)

    def run():
        with torch.no_grad():
            return _torch_eca(torch, x, w)
    return run


def torch_train_step(case: Case) -> Call:
    """PyTorch eager forward and backward with respect to x and the weight."""
    torch = _torch()
    if torch is None:
        return None
    g = _torch_input(torch, case, case.grad_out)
    w = _torch_tensor(torch, case.weight.copy()).requires_grad_(True)

    def step():
        x = _torch_input(torch, case, case.x).detach().requires_grad_(True)
        w.grad = None
        _torch_eca(torch, x, w).backward(g)
        return x.grad, w.grad
    return step


# --- onnxruntime ------------------------------------------------------------------------------

def eca_onnx_model(shape, dtype, weight: np.ndarray, channels_last: bool = False):
    """An ONNX graph of the same layer: GlobalAveragePool (ReduceMean over the spatial axes
    for channels-last), Reshape, Conv, Sigmoid, Mul; ``shape`` is (N, C, *spatial)."""
    from onnx import TensorProto, helper, numpy_helper
    n, c = shape[:2]
    k = weight.shape[-1]
    elem = {np.dtype(np.float32): TensorProto.FLOAT,
            np.dtype(np.float64): TensorProto.DOUBLE}[np.dtype(dtype)]
    ones = [1] * (len(shape) - 2)
    gate_shape = [n] + ones + [c] if channels_last else [n, c] + ones
    inits = [numpy_helper.from_array(weight.astype(dtype), "w"),
             numpy_helper.from_array(np.array([n, 1, c], np.int64), "pooled_shape"),
             numpy_helper.from_array(np.array(gate_shape, np.int64), "gate_shape")]
    if channels_last:
        shape = [n] + list(shape[2:]) + [c]
        axes = list(range(1, len(shape) - 1))
        inits.append(numpy_helper.from_array(np.array(axes, np.int64), "axes"))
        pool = helper.make_node("ReduceMean", ["x", "axes"], ["m4"], keepdims=0)
    else:
        pool = helper.make_node("GlobalAveragePool", ["x"], ["m4"])
    nodes = [
        pool,
        helper.make_node("Reshape", ["m4", "pooled_shape"], ["m"]),
        helper.make_node("Conv", ["m", "w"], ["z"], kernel_shape=[k],
                         pads=[(k - 1) // 2, (k - 1) // 2]),
        helper.make_node("Sigmoid", ["z"], ["a"]),
        helper.make_node("Reshape", ["a", "gate_shape"], ["a4"]),
        helper.make_node("Mul", ["x", "a4"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "eca", [helper.make_tensor_value_info("x", elem, shape)],
                              [helper.make_tensor_value_info("y", elem, shape)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def onnxruntime_forward(case: Case) -> Call:
    """onnxruntime, all cores, with x and the preallocated y bound (no copies, no allocation)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    if case.dtype.name == "bfloat16":
        raise NotAvailable("onnxruntime's CPU provider has no bfloat16 Pad, Conv or Sigmoid")
    try:
        model = eca_onnx_model(list(case.shape), case.dtype, case.weight, case.channels_last)
    except ImportError:  # onnxruntime without the onnx package
        return None
    options = ort.SessionOptions()
    options.intra_op_num_threads = os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    try:
        session = ort.InferenceSession(model.SerializeToString(), options,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - e.g. no float64 Conv kernel in the CPU provider
        raise NotAvailable(f"onnxruntime cannot run this graph: {str(exc)[:120]}") from None
    binding = session.io_binding()
    binding.bind_cpu_input("x", case.x)
    binding.bind_output("y", "cpu", 0, case.dtype, list(case.x.shape), case.out.ctypes.data)
    return lambda: session.run_with_iobinding(binding)


def _missing(module: str) -> bool:
    """True when ``module`` cannot be imported."""
    try:
        __import__(module)
        return False
    except ImportError:
        return True

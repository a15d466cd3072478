"""Backends a golden suite can verify, all behind one documented signature.

An adapter is any callable ``fn(inputs, params) -> dict``:

- ``inputs``: ``x``, ``weight`` (in the case's weight form), ``grad_out`` and, when the case
  has a bias, ``bias`` (shape (1,)), all NumPy arrays of the case's dtype;
- ``params``: ``k``, ``padding`` ("zeros" | "circular"), ``groups``, ``gate`` ("sigmoid" |
  "hard_sigmoid"), ``bias`` (bool), ``channel_axis`` (1 | -1) and ``weight_form``
  ("k", "11k", "Ck", "C1k": shapes (k,), (1, 1, k), (C, k), (C, 1, k));
- returns any subset of ``y``, ``m``, ``z``, ``a``, ``dx``, ``dweight``, ``dbias``; the
  outputs it leaves out are not checked. Raising ``NotImplementedError`` marks the case
  SKIP (unsupported), with the message as the reason.

``npeca golden verify DIR --backend package.module:function`` imports and runs such a
function.
"""

from __future__ import annotations

import importlib
import os
import sys
from typing import Callable

import numpy as np

from ..errors import BackendUnavailableError, ParameterError

Adapter = Callable[[dict, dict], dict]


def _eca_kwargs(inputs: dict, params: dict) -> dict:
    return {"bias": inputs.get("bias"), "channel_axis": params["channel_axis"],
            "padding": params["padding"], "groups": params["groups"], "gate": params["gate"]}


def npeca_adapter(backend: str) -> Adapter:
    """npeca's own eca_forward / eca_backward with ``backend=``."""
    import npeca

    def run(inputs: dict, params: dict) -> dict:
        kw = _eca_kwargs(inputs, params)
        fwd = npeca.eca_forward(inputs["x"], inputs["weight"], backend=backend, **kw)
        grads = npeca.eca_backward(inputs["x"], inputs["weight"], inputs["grad_out"],
                                   backend=backend, **kw)
        out = {"y": fwd.y, "m": fwd.m, "z": fwd.z, "a": fwd.a, "dx": grads.x,
               "dweight": grads.weight}
        if grads.bias is not None:
            out["dbias"] = grads.bias
        return out

    return run


def torch_adapter(inputs: dict, params: dict) -> dict:
    """ECA written with torch operations (AdaptiveAvgPool-like mean, Conv1d or per-channel
    windows, sigmoid or timm's relu6(z + 3) / 6), differentiated by torch autograd."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise BackendUnavailableError("the torch adapter needs PyTorch: pip install torch") \
            from None
    tt = lambda a: torch.tensor(np.ascontiguousarray(a), requires_grad=True)  # noqa: E731
    x, w = tt(inputs["x"]), tt(inputs["weight"])
    b = tt(inputs["bias"]) if "bias" in inputs else None
    xc = x.movedim(-1, 1) if params["channel_axis"] == -1 else x
    n, c = xc.shape[:2]
    k, groups = params["k"], params["groups"]
    cg, p = c // groups, (k - 1) // 2
    m = xc.mean(dim=tuple(range(2, xc.ndim)))  # (N, C)
    mg = m.reshape(n, groups, cg)
    taps = torch.arange(cg)[:, None] + torch.arange(k)[None, :] - p  # (C/G, k)
    if params["padding"] == "circular":
        window = mg[:, :, taps % cg]  # (N, G, C/G, k)
    else:
        window = F.pad(mg, (p, p))[:, :, taps + p]
    if params["weight_form"] in ("Ck", "C1k"):
        z = (window * w.reshape(groups, cg, k)).sum(-1)
    else:  # the shared kernel as torch.nn.Conv1d(1, 1, k) applies it
        z = F.conv1d(window.reshape(n * groups * cg, 1, k), w.reshape(1, 1, k))
    z = z.reshape(n, c)
    if b is not None:
        z = z + b
    # timm's hard sigmoid; F.hardsigmoid's float64 backward uses a float32 1/6 (3e-8 off)
    a = torch.sigmoid(z) if params["gate"] == "sigmoid" else F.relu6(z + 3.0) / 6.0
    y = xc * a.reshape(n, c, *([1] * (xc.ndim - 2)))
    if params["channel_axis"] == -1:
        y = y.movedim(1, -1)
    y.backward(torch.tensor(inputs["grad_out"]))
    out = {"y": y, "m": m, "z": z, "a": a, "dx": x.grad, "dweight": w.grad}
    if b is not None:
        out["dbias"] = b.grad
    return {name: t.detach().numpy() for name, t in out.items()}


def onnxruntime_adapter(inputs: dict, params: dict) -> dict:
    """Forward only: an ONNX graph built with onnx.helper (ReduceMean, Gather/Pad, Conv or
    Mul + ReduceSum, Sigmoid or HardSigmoid, Mul), run by onnxruntime on the CPU."""
    try:
        import onnx
        import onnxruntime as ort
        from onnx import TensorProto, helper, numpy_helper
    except ImportError:
        raise BackendUnavailableError(
            "the onnxruntime adapter needs onnx and onnxruntime: pip install onnx onnxruntime") \
            from None
    x = inputs["x"]
    if x.dtype != np.float32:
        raise NotImplementedError(f"onnxruntime's CPU kernels used here are float32 only; "
                                  f"case dtype is {x.dtype}")
    cl = params["channel_axis"] == -1
    xc_shape = (x.shape[0], x.shape[-1]) + x.shape[1:-1] if cl else x.shape
    n, c = xc_shape[:2]
    k, groups = params["k"], params["groups"]
    cg, p = c // groups, (k - 1) // 2
    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    xin = "X"
    if cl:
        perm = [0, x.ndim - 1] + list(range(1, x.ndim - 1))
        nodes.append(helper.make_node("Transpose", ["X"], ["Xc"], perm=perm))
        xin = "Xc"
    spatial_axes = list(range(2, len(xc_shape)))
    nodes.append(helper.make_node("ReduceMean", [xin], ["M"], axes=spatial_axes, keepdims=0))
    nodes.append(helper.make_node("Reshape", ["M", const("shape_g", np.array([n, groups, cg]))],
                                  ["Mg"]))
    if params["padding"] == "circular":
        wrap = np.arange(-p, cg + p) % cg
        nodes.append(helper.make_node("Gather", ["Mg", const("wrap", wrap.astype(np.int64))],
                                      ["Mp"], axis=2))
    else:
        pads = np.array([0, 0, p, 0, 0, p], dtype=np.int64)
        nodes.append(helper.make_node("Pad", ["Mg", const("pads", pads)], ["Mp"],
                                      mode="constant"))
    w = inputs["weight"]
    if params["weight_form"] in ("Ck", "C1k"):
        taps = (np.arange(cg)[:, None] + np.arange(k)[None, :]).astype(np.int64)
        nodes.append(helper.make_node("Gather", ["Mp", const("taps", taps)], ["Win"], axis=2))
        nodes.append(helper.make_node("Mul", ["Win", const("W", w.reshape(groups, cg, k))],
                                      ["Prod"]))
        nodes.append(helper.make_node("ReduceSum", ["Prod", const("last", np.array([-1]))],
                                      ["Zg"], keepdims=0))
    else:
        nodes.append(helper.make_node("Reshape", ["Mp", const("rows", np.array(
            [n * groups, 1, cg + 2 * p]))], ["Rows"]))
        nodes.append(helper.make_node("Conv", ["Rows", const("W", w.reshape(1, 1, k))],
                                      ["Zg"], kernel_shape=[k]))
    nodes.append(helper.make_node("Reshape", ["Zg", const("shape_nc", np.array([n, c]))],
                                  ["Z0"]))
    zname = "Z0"
    if "bias" in inputs:
        nodes.append(helper.make_node("Add", ["Z0", const("B", inputs["bias"])], ["Z"]))
        zname = "Z"
    if params["gate"] == "sigmoid":
        nodes.append(helper.make_node("Sigmoid", [zname], ["A"]))
    else:
        nodes.append(helper.make_node("HardSigmoid", [zname], ["A"], alpha=1.0 / 6.0, beta=0.5))
    bshape = [n] + [1] * (x.ndim - 2) + [c] if cl else [n, c] + [1] * (x.ndim - 2)
    nodes.append(helper.make_node("Reshape", ["A", const("shape_a", np.array(bshape))], ["Ab"]))
    nodes.append(helper.make_node("Mul", ["X", "Ab"], ["Y"]))
    graph = helper.make_graph(
        nodes, "eca", [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape))],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, list(x.shape)),
         helper.make_tensor_value_info("M", TensorProto.FLOAT, [n, c]),
         helper.make_tensor_value_info(zname, TensorProto.FLOAT, [n, c]),
         helper.make_tensor_value_info("A", TensorProto.FLOAT, [n, c])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), opts,
                                   providers=["CPUExecutionProvider"])
    y, m, z, a = session.run(["Y", "M", zname, "A"], {"X": np.ascontiguousarray(x)})
    return {"y": y, "m": m, "z": z, "a": a}


def get_adapter(name: str) -> Adapter:
    """The adapter for a backend name or a ``module:function`` path."""
    if not isinstance(name, str):
        raise ParameterError(f"backend must be a string; got {type(name).__name__}")
    if name in ("numpy", "numba", "cuda", "auto"):
        return npeca_adapter(name)
    if name == "torch":
        return torch_adapter
    if name == "onnxruntime":
        return onnxruntime_adapter
    if ":" in name:
        module, _, attr = name.partition(":")
        if os.getcwd() not in sys.path and "" not in sys.path:
            sys.path.append(os.getcwd())  # as `python -m` would: modules beside the caller
        try:
            fn = getattr(importlib.import_module(module), attr)
        except Exception as exc:  # a missing module, or one that fails while importing
            raise ParameterError(f"backend {name!r}: cannot import {attr} from {module} "
                                 f"({type(exc).__name__}: {exc})") from None
        if not callable(fn):
            raise ParameterError(f"backend {name!r} is not callable")
        return fn
    raise ParameterError(f"backend must be numpy, numba, cuda, torch, onnxruntime or "
                         f"module:function; got {name!r}")


__all__ = ["Adapter", "get_adapter", "npeca_adapter", "torch_adapter", "onnxruntime_adapter"]

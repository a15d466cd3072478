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
        if backend == "cuda" and inputs["x"].dtype.name == "bfloat16":
            raise NotImplementedError("backend='cuda' has no bfloat16 kernels yet")
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
    windows, sigmoid or timm's relu6(z + 3) / 6), differentiated by torch autograd, in the
    case's dtype (bfloat16 cases: torch.bfloat16 on the CPU, as autocast runs it)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        raise BackendUnavailableError("the torch adapter needs PyTorch: pip install torch") \
            from None
    def tt(a: np.ndarray) -> "torch.Tensor":
        """A leaf tensor of the array's dtype (bfloat16: the 16-bit patterns, as they are)."""
        a = np.ascontiguousarray(a)
        if a.dtype.name == "bfloat16":
            return torch.from_numpy(a.view(np.int16).copy()).view(torch.bfloat16)
        return torch.tensor(a)

    def back(t: "torch.Tensor") -> np.ndarray:
        t = t.detach()
        if t.dtype == torch.bfloat16:
            return t.contiguous().view(torch.int16).numpy().view(np.uint16).view(
                inputs["x"].dtype)
        return t.numpy()

    x, w = tt(inputs["x"]).requires_grad_(), tt(inputs["weight"]).requires_grad_()
    b = tt(inputs["bias"]).requires_grad_() if "bias" in inputs else None
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
    y.backward(tt(inputs["grad_out"]))
    out = {"y": y, "m": m, "z": z, "a": a, "dx": x.grad, "dweight": w.grad}
    if b is not None:
        out["dbias"] = b.grad
    return {name: back(t) for name, t in out.items() if t is not None}


def onnxruntime_adapter(inputs: dict, params: dict) -> dict:
    """Forward only: the ONNX graph of :func:`npeca.golden.onnx_graph.eca_model` (opset 18:
    ReduceMean, Pad or Gather, Conv or Gather + Mul + ReduceSum, Sigmoid or Add/Clip/Div,
    Mul; float16 summed in float32), run by onnxruntime on the CPU in the case's dtype."""
    try:
        import onnx
        import onnxruntime as ort
    except ImportError:
        raise BackendUnavailableError(
            "the onnxruntime adapter needs onnx and onnxruntime: pip install onnx onnxruntime") \
            from None
    from .onnx_graph import eca_model

    x = inputs["x"]
    model = eca_model(x.shape, inputs["weight"].shape, x.dtype, params, intermediates=True)
    onnx.checker.check_model(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    try:
        session = ort.InferenceSession(model.SerializeToString(), opts,
                                       providers=["CPUExecutionProvider"])
    except Exception as exc:  # a kernel this build of onnxruntime lacks (NOT_IMPLEMENTED)
        if "NOT_IMPLEMENTED" in str(exc):
            raise NotImplementedError(f"onnxruntime has no CPU kernel for this graph in "
                                      f"{x.dtype}: {str(exc).strip()[:200]}") from None
        raise
    feeds = {vi.name: np.ascontiguousarray(inputs[vi.name]) for vi in model.graph.input}
    y, m, z, a = session.run(["y", "m", "z", "a"], feeds)
    return {"y": y, "m": m, "z": z, "a": a}


def _import_function(spec: str) -> Adapter:
    """``package.module:function`` imported from sys.path, then the current directory."""
    module, _, attr = spec.partition(":")
    if not module or not attr:
        raise ParameterError(f"backend {spec!r}: expected package.module:function")
    if module.endswith(".py") or "/" in module or "\\" in module:
        raise ParameterError(f"backend {spec!r}: give the module's import name, not a file "
                             f"path: for ./my_eca.py run from its directory, my_eca:function")
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.append(cwd)  # as `python -m` would: modules beside the caller
    try:
        obj = importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (module == exc.name or module.startswith(exc.name + ".")):
            where = [p or cwd for p in sys.path]
            raise ParameterError(
                f"backend {spec!r}: no module named {exc.name!r}; looked in the current "
                f"directory ({cwd}) and sys.path: {', '.join(where)}") from None
        raise ParameterError(f"backend {spec!r}: importing {module} failed "
                             f"(ModuleNotFoundError: {exc})") from None
    except Exception as exc:  # noqa: BLE001 - a module that fails while importing
        raise ParameterError(f"backend {spec!r}: importing {module} failed "
                             f"({type(exc).__name__}: {exc})") from None
    fn = obj
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise ParameterError(f"backend {spec!r}: {module} (from "
                                 f"{getattr(obj, '__file__', None) or module}) has no "
                                 f"attribute {attr!r}") from None
    if not callable(fn):
        raise ParameterError(f"backend {spec!r} is a {type(fn).__name__}, not callable")
    return fn


def get_adapter(name: str | Adapter) -> Adapter:
    """The adapter for a backend name or a ``module:function`` path; a callable is
    returned as it is."""
    if callable(name):
        return name
    if not isinstance(name, str):
        raise ParameterError(f"backend must be a callable fn(inputs, params), a backend name "
                             f"or module:function; got {type(name).__name__}")
    if name in ("numpy", "numba", "cuda", "auto"):
        return npeca_adapter(name)
    if name == "torch":
        return torch_adapter
    if name == "onnxruntime":
        return onnxruntime_adapter
    if ":" in name:
        return _import_function(name)
    raise ParameterError(f"backend must be numpy, numba, cuda, torch, onnxruntime or "
                         f"module:function; got {name!r}")


__all__ = ["Adapter", "get_adapter", "npeca_adapter", "torch_adapter", "onnxruntime_adapter"]

"""The ECA forward as one ONNX graph of standard operators (default domain, opset
:data:`OPSET`, IR version :data:`IR_VERSION`, static shapes): the graph the onnxruntime
adapter runs (:func:`npeca.golden.adapters.onnxruntime_adapter`) and the golden exporter
writes (:mod:`npeca.golden.export_onnx`). Operators per parameter: docs/golden.md."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from ..errors import BackendUnavailableError

OPSET = 18  # default domain only; from 18 on, ReduceMean takes its axes as an input
IR_VERSION = 8  # the IR version of onnx 1.13, which introduced opset 18

# TensorProto.FLOAT16, FLOAT, DOUBLE, BFLOAT16
_ONNX_TYPES = {"float16": 10, "float32": 1, "float64": 11, "bfloat16": 16}


def _onnx():
    try:
        import onnx
        from onnx import helper, numpy_helper
    except ImportError:
        raise BackendUnavailableError("ONNX export needs the onnx package: pip install onnx") \
            from None
    return onnx, helper, numpy_helper


# long: the ONNX nodes in data-flow order, one short block per parameter, as docs/golden.md's
# operator table lists them
def eca_model(x_shape: Sequence[int], weight_shape: Sequence[int], dtype: Any,
              params: Mapping, *, intermediates: bool = False, name: str = "eca"):
    """The ECA forward of one problem as an ``onnx.ModelProto`` with static shapes.

    Graph inputs ``x`` (``x_shape``), ``weight`` (``weight_shape``, any of the four weight
    forms) and, when ``params["bias"]``, ``bias`` (shape (1,)), all of ``dtype``; output
    ``y``, plus ``m``, ``z`` and ``a`` (shape (N, C), ``dtype``) with ``intermediates``.

    Operators: ReduceMean over the spatial axes (channels first or last alike), Reshape to
    (N, G, C/G), Pad (zeros) or Gather of wrapped indices (circular) per group, then Conv
    of rows with the (1, 1, k) kernel for a shared weight, or Gather of the (C/G, k) tap
    windows, Mul by the (G, C/G, k) weight and ReduceSum over k for a per-channel weight
    (and for float64, which onnxruntime's Conv lacks); the bias added in the sum; Sigmoid,
    or relu6(z + 3) / 6 as Add, Clip(0, 6), Div (not HardSigmoid, whose float alpha = 1/6
    is off by 3e-8: within float32's bounds, not float64's); Reshape to broadcast and Mul.
    float16 is stored in float16 and both sums run in float32 (Cast around them), the
    accumulation the suite's bounds assume.
    """
    _, helper, numpy_helper = _onnx()
    name = dtype if isinstance(dtype, str) else np.dtype(dtype).name
    if name not in _ONNX_TYPES:
        raise NotImplementedError(f"dtype {name} has no golden contract")
    x_shape, weight_shape = tuple(int(v) for v in x_shape), tuple(int(v) for v in weight_shape)
    if len(x_shape) < 3:
        raise NotImplementedError(f"x must have a batch, a channel and a spatial axis; got "
                                  f"shape {x_shape}")
    elem = _ONNX_TYPES[name]
    acc = "float32" if name in ("float16", "bfloat16") else name  # 16-bit: sums in float32
    acc_elem = _ONNX_TYPES[acc]
    last = params["channel_axis"] == -1
    ndim = len(x_shape)
    n = x_shape[0]
    c = x_shape[-1] if last else x_shape[1]
    k, groups = int(params["k"]), int(params["groups"])
    cg, p = c // groups, (k - 1) // 2
    if c % groups or k % 2 == 0 or int(np.prod(weight_shape)) not in (k, c * k):
        raise NotImplementedError(f"not an ECA problem: C = {c}, groups = {groups}, k = {k}, "
                                  f"weight shape {weight_shape}")
    form = params.get("weight_form")
    per_channel = form in ("Ck", "C1k") if form else int(np.prod(weight_shape)) != k
    nodes: list = []

    def const(label: str, value: Any, dtype_: Any = np.int64) -> str:
        out = f"{label}_const"
        tensor = helper.make_tensor(out, _ONNX_TYPES[dtype_], [], [float(value)]) \
            if dtype_ == "bfloat16" else numpy_helper.from_array(np.asarray(value, dtype=dtype_),
                                                                 out)
        nodes.append(helper.make_node("Constant", [], [out], name=out, value=tensor))
        return out

    def node(op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    # m = mean over the spatial axes (accumulated in `acc`), stored in the case's dtype
    spatial = list(range(1, ndim - 1)) if last else list(range(2, ndim))
    x_acc = "x" if acc == name else node("Cast", ["x"], "x_acc", to=acc_elem)
    m = node("ReduceMean", [x_acc, const("spatial_axes", spatial)],
             "m" if acc == name else "m_acc", keepdims=0)
    if acc != name:
        m = node("Cast", [m], "m", to=elem)
    # per group, the channel row padded by p on either side: (N, G, C/G + 2p)
    mg = node("Reshape", [m, const("group_shape", [n, groups, cg])], "m_groups")
    if params["padding"] == "circular":
        wrap = np.arange(-p, cg + p) % cg  # wraps any number of times (k > C/G)
        mp = node("Gather", [mg, const("wrap_index", wrap)], "m_padded", axis=2)
    else:
        mp = node("Pad", [mg, const("pads", [0, 0, p, 0, 0, p])], "m_padded", mode="constant")
    mp_acc = mp if acc == name else node("Cast", [mp], "m_padded_acc", to=acc_elem)
    w_acc = "weight" if acc == name else node("Cast", ["weight"], "weight_acc", to=acc_elem)
    b_acc = None
    if params["bias"]:
        b_acc = "bias" if acc == name else node("Cast", ["bias"], "bias_acc", to=acc_elem)
    use_conv = not per_channel and acc == "float32"
    if use_conv:  # the shared kernel: Conv1d(1, 1, k) over N * G rows
        rows = node("Reshape", [mp_acc, const("row_shape", [n * groups, 1, cg + 2 * p])],
                    "rows")
        kernel = node("Reshape", [w_acc, const("kernel_shape", [1, 1, k])], "kernel")
        z_acc = node("Conv", [rows, kernel] + ([b_acc] if b_acc else []), "conv",
                     kernel_shape=[k])
    else:  # windows (N, G, C/G, k) times the weight (G, C/G, k) or (k,), summed over k
        taps = np.arange(cg)[:, None] + np.arange(k)[None, :]
        win = node("Gather", [mp_acc, const("tap_index", taps)], "windows", axis=2)
        wshape = [groups, cg, k] if per_channel else [k]
        wk = node("Reshape", [w_acc, const("weight_shape", wshape)], "weight_taps")
        prod = node("Mul", [win, wk], "products")
        z_acc = node("ReduceSum", [prod, const("tap_axis", [-1])], "tap_sum", keepdims=0)
        if b_acc:
            z_acc = node("Add", [z_acc, b_acc], "tap_sum_bias")
    z_nc = node("Reshape", [z_acc, const("nc_shape", [n, c])],
                "z" if acc == name else "z_acc")
    z = z_nc if acc == name else node("Cast", [z_nc], "z", to=elem)
    if params["gate"] == "sigmoid":
        a = node("Sigmoid", [z], "a")
    elif params["gate"] == "hard_sigmoid":  # relu6(z + 3) / 6, as the reference writes it
        shifted = node("Add", [z, const("three", 3.0, name)], "z_plus_3")
        clipped = node("Clip", [shifted, const("zero", 0.0, name), const("six", 6.0, name)],
                       "relu6")
        a = node("Div", [clipped, const("six_div", 6.0, name)], "a")
    else:
        raise NotImplementedError(f"gate {params['gate']!r} has no ONNX formulation here")
    bshape = [n] + [1] * (ndim - 2) + [c] if last else [n, c] + [1] * (ndim - 2)
    ab = node("Reshape", [a, const("broadcast_shape", bshape)], "a_broadcast")
    node("Mul", ["x", ab], "y")

    inputs = [helper.make_tensor_value_info("x", elem, list(x_shape)),
              helper.make_tensor_value_info("weight", elem, list(weight_shape))]
    if params["bias"]:
        inputs.append(helper.make_tensor_value_info("bias", elem, [1]))
    outputs = [helper.make_tensor_value_info("y", elem, list(x_shape))]
    if intermediates:
        outputs += [helper.make_tensor_value_info(v, elem, [n, c]) for v in ("m", "z", "a")]
    graph = helper.make_graph(nodes, name, inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="npeca", ir_version=IR_VERSION)
    model.doc_string = (f"ECA forward (npeca golden): k={k}, padding={params['padding']}, "
                        f"groups={groups}, gate={params['gate']}, bias={bool(params['bias'])}, "
                        f"channel_axis={params['channel_axis']}, weight_form="
                        f"{params.get('weight_form', '?')}, dtype={name}")
    return model

__all__ = ["OPSET", "IR_VERSION", "eca_model"]

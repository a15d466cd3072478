"""The single place where user input to ECA is checked and normalised.

Every public entry point calls :func:`eca_problem` (and :func:`grad_output` for backward)
before any math runs; kernels downstream trust what comes out of here.
"""

# long: about 460 lines on purpose: every check of user input lives in this one module
# (problem, outputs, device arrays, layer parameters), so that there is one boundary to read.

from __future__ import annotations

import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from . import _bfloat16 as bfloat16
from .errors import DTypeError, ParameterError, ShapeError, describe

FLOAT_DTYPES = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
MAX_KERNEL = 65535  # an ECA kernel is a handful of taps; larger is a corrupt file or a typo
MAX_WINDOWS = 1 << 24  # N * C * k: the (N, C, k) channel windows the kernels build
MAX_CHANNELS = 2**31 - 1  # a layer's channel count (inputs are checked by their shape)
MAX_PARAMETER_ELEMENTS = 1 << 22  # per-channel kernels of C x k: far beyond any network
PADDINGS = ("zeros", "circular")
GATES = ("sigmoid", "hard_sigmoid")


@dataclass(eq=False)
class ECAProblem:
    """A validated ECA call: the input array, the normalised weight and every keyword.

    Treat it as read-only: it is built once per call by :func:`eca_problem` (a plain, unfrozen
    dataclass with slots because a frozen one costs microseconds per call to construct)."""

    __slots__ = ("x", "channels_last", "n", "c", "spatial", "weight", "weight_shape",
                 "weight_dtype", "per_channel", "k", "bias", "bias_shape", "bias_dtype",
                 "padding", "groups", "gate")

    x: np.ndarray  # the input as given (any strides), dtype in FLOAT_DTYPES
    channels_last: bool  # True when the channel axis is the last axis
    n: int  # batch size N
    c: int  # channels C
    spatial: tuple[int, ...]  # the spatial axes' lengths, 1 to 3 of them
    weight: np.ndarray  # (k,) shared or (C, k) per channel, a float array
    weight_shape: tuple[int, ...]  # the shape the caller passed, for the gradient
    weight_dtype: np.dtype
    per_channel: bool
    k: int
    bias: float | None  # the scalar bias, or None
    bias_shape: tuple[int, ...] | None  # () or (1,), as passed
    bias_dtype: np.dtype | None
    padding: str
    groups: int
    gate: str

    @property
    def s(self) -> int:
        """Number of spatial positions S."""
        return int(np.prod(self.spatial))

    @property
    def channel_axis(self) -> int:
        """The channel axis as a non-negative index into ``x.shape``."""
        return self.x.ndim - 1 if self.channels_last else 1


def _refuse_masked(value: Any, name: str, output: bool = False) -> None:
    if isinstance(value, np.ma.MaskedArray) and output:
        raise DTypeError(f"{name} must be a plain numpy.ndarray; got a masked array (numpy.ma), "
                         f"whose mask npeca would not update. Pass np.empty_like(x)")
    if isinstance(value, np.ma.MaskedArray):
        raise DTypeError(
            f"{name} is a masked array (numpy.ma); npeca does not interpret masks, so masked "
            f"values would silently enter the mean. Decide what they mean first: pass "
            f"{name}.filled(0.0) (or another fill value) or np.ma.getdata({name})")


def float_array(value: Any, name: str) -> np.ndarray:
    """``value`` as an ndarray of float16/32/64 or bfloat16, or DTypeError naming ``name``."""
    if type(value) is np.ndarray and value.dtype in FLOAT_DTYPES:  # native byte order
        return value  # the common case, in a fraction of a microsecond
    _refuse_masked(value, name)
    if bfloat16.is_torch_bfloat16(value):
        return bfloat16.from_torch(value, name)
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - e.g. ragged nested lists
        raise DTypeError(
            f"{name} must be an array of float16, float32, float64 or bfloat16; "
            f"could not convert {type(value).__name__} to an array ({exc})"
        ) from None
    if arr.dtype.kind == "f" and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian data: same values, native
    arr = bfloat16.native(arr)
    if arr.dtype not in FLOAT_DTYPES and not bfloat16.is_bfloat16(arr.dtype):
        kind = {"b": "boolean", "i": "integer", "u": "unsigned integer", "c": "complex",
                "O": "object", "U": "string", "S": "bytes"}.get(arr.dtype.kind, "unsupported")
        fix = (" Convert it first, e.g. np.asarray(..., dtype=np.float32)."
               if arr.dtype.kind in "biu" else "")
        raise DTypeError(
            f"{name} must have dtype float16, float32, float64 or bfloat16; got {kind} "
            f"dtype {arr.dtype}.{fix}"
        )
    return arr


def _channel_axis(channel_axis: Any, ndim: int) -> bool:
    """True for channels-last, False for channels-first; ParameterError otherwise."""
    if type(channel_axis) is int and (channel_axis == 1 or channel_axis == -1):  # fast path
        return channel_axis == -1 and ndim > 2
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral):
        raise ParameterError(
            f"channel_axis must be 1 (channels-first) or -1 (channels-last); "
            f"got {describe(channel_axis)} ({type(channel_axis).__name__})"
        )
    axis = int(channel_axis)
    normal = axis + ndim if axis < 0 else axis
    if normal == 1:
        return False
    if normal == ndim - 1:
        return True
    raise ParameterError(
        f"channel_axis must be 1 (channels-first) or -1 (channels-last) for x with {ndim} "
        f"dimensions; got {describe(channel_axis)}"
    )


def choice(value: Any, name: str, options: tuple[str, ...]) -> str:
    """One of ``options``, or ParameterError naming ``name``."""
    if not isinstance(value, str) or value not in options:
        listed = ", ".join(repr(o) for o in options)
        raise ParameterError(f"{name} must be one of {listed}; got {describe(value)}")
    return value


def _bias(bias: Any) -> tuple[float | None, tuple[int, ...] | None, np.dtype | None]:
    if bias is None:
        return None, None, None
    if isinstance(bias, bool):
        raise DTypeError("bias must be None or a real scalar; got a bool")
    if isinstance(bias, numbers.Real) and not isinstance(bias, np.generic):
        try:
            return float(bias), (), np.dtype(np.float64)
        except OverflowError:
            raise ParameterError(f"bias must fit in a float64; got {describe(bias)}") \
                from None
    arr = float_array(bias, "bias")
    if arr.shape not in ((), (1,)):
        raise ShapeError(
            f"bias must be a scalar or have shape (1,) (one bias shared by all channels, as "
            f"torch.nn.Conv1d(1, 1, k, bias=True) stores it); got shape {arr.shape}"
        )
    return float(arr.reshape(())), arr.shape, arr.dtype


def _weight(weight: Any, c: int) -> tuple[np.ndarray, bool]:
    """Normalise weight to (k,) shared or (C, k) per-channel; ShapeError on other shapes."""
    w = float_array(weight, "weight")
    forms = "(k,), (1, 1, k) as PyTorch stores it, or (C, k) / (C, 1, k) for per-channel kernels"
    if w.ndim == 1:
        shared, per_channel = w, False
    elif w.ndim == 2:
        if w.shape[0] != c:
            raise ShapeError(
                f"a 2-D weight holds one kernel per channel and must have shape (C, k) = "
                f"({c}, k) for x with C = {c} channels; got shape {w.shape}. For one shared "
                f"kernel pass shape (k,)"
            )
        shared, per_channel = w, True
    elif w.ndim == 3:
        if w.shape[:2] == (1, 1):
            shared, per_channel = w.reshape(w.shape[2]), False
        elif w.shape[1] == 1 and w.shape[0] == c:
            shared, per_channel = w.reshape(c, w.shape[2]), True
        else:
            raise ShapeError(
                f"a 3-D weight must have shape (1, 1, k) (shared) or ({c}, 1, k) (per channel) "
                f"for x with C = {c} channels; got shape {w.shape}"
            )
    else:
        raise ShapeError(f"weight must have shape {forms}; got shape {w.shape}")
    k = shared.shape[-1]
    if k == 0:
        raise ShapeError(f"weight is empty (kernel size 0); got shape {w.shape}")
    if k % 2 == 0:
        raise ShapeError(
            f"the kernel size k must be odd so that (k - 1) / 2 channels pad each side; got "
            f"k = {k} from weight shape {w.shape}. npeca.kernel_size(C) gives the paper's odd k"
        )
    return shared, per_channel


def eca_problem(
    x: Any,
    weight: Any,
    *,
    bias: Any = None,
    channel_axis: Any = 1,
    padding: Any = "zeros",
    groups: Any = 1,
    gate: Any = "sigmoid",
) -> ECAProblem:
    """Check every argument of an ECA call and return the normalised problem."""
    x = _input_array(x, "x")
    if x.ndim < 3 or x.ndim > 5:
        hint = ""
        if x.ndim == 2:
            hint = " If this is one sample of shape (C, L), add a batch axis: x[None]"
        elif x.ndim < 2:
            hint = " ECA needs a batch axis, a channel axis and 1 to 3 spatial axes"
        raise ShapeError(
            f"x must have 3 to 5 dimensions (N, C, *spatial) with 1 to 3 spatial axes; got "
            f"shape {x.shape}.{hint}"
        )
    channels_last = _channel_axis(channel_axis, x.ndim)
    shape = tuple(x.shape)  # a plain tuple also for GPU arrays
    if 0 in shape:
        raise ShapeError(f"x must have no zero-length axis; got shape {shape}")
    c = shape[-1] if channels_last else shape[1]
    spatial = shape[1:-1] if channels_last else shape[2:]
    w, per_channel = _weight(weight, c)
    if type(groups) is not int and (isinstance(groups, bool)
                                    or not isinstance(groups, numbers.Integral)) or groups < 1:
        raise ParameterError(f"groups must be an integer >= 1; got {describe(groups)}")
    if type(groups) is not int:
        groups = int(groups)
    if c % groups != 0:
        raise ParameterError(
            f"groups must divide the number of channels; got groups = {describe(groups)} for "
            f"C = {c}. "
            f"Divisors of {c} work, e.g. groups = 1"
        )
    if type(padding) is not str or padding != "zeros":
        padding = choice(padding, "padding", PADDINGS)
    if type(gate) is not str or gate != "sigmoid":
        gate = choice(gate, "gate", GATES)
    bias_value, bias_shape, bias_dtype = (None, None, None) if bias is None else _bias(bias)
    k = w.shape[-1]
    if k > MAX_KERNEL or shape[0] * c * k > MAX_WINDOWS:
        raise ShapeError(
            f"weight has k = {k} taps for x with N = {x.shape[0]} and C = {c}: the channel "
            f"windows would hold N * C * k = {x.shape[0] * c * k} values (at most "
            f"{MAX_WINDOWS}, and k at most {MAX_KERNEL}); ECA kernels have a handful of taps")
    # positionally, in the order of the fields (keywords cost a microsecond per call)
    return ECAProblem(x, channels_last, shape[0], c, spatial, w,
                      weight.shape if type(weight) is np.ndarray else np.shape(weight),
                      w.dtype, per_channel, k, bias_value, bias_shape, bias_dtype, padding,
                      groups, gate)


def grad_output(problem: ECAProblem, grad_out: Any) -> np.ndarray:
    """Check that ``grad_out`` is a float array shaped like x."""
    g = _input_array(grad_out, "grad_out")
    if tuple(g.shape) != tuple(problem.x.shape):
        raise ShapeError(
            f"grad_out must have the shape of x, {problem.x.shape}; got shape {g.shape}"
        )
    return g


def is_device_array(value: Any) -> bool:
    """True for a GPU array: anything with ``__cuda_array_interface__`` (Numba, CuPy,
    PyTorch CUDA tensors) and the device arrays of Numba's CUDA simulator."""
    if type(value) is np.ndarray:  # the common case, without an attribute lookup
        return False
    return (hasattr(value, "__cuda_array_interface__")
            or type(value).__name__ == "FakeCUDAArray")


def _input_array(value: Any, name: str):
    """A host input as a float ndarray (float_array); a GPU array as it is, its dtype checked
    (it stays on the device for backend="cuda")."""
    if type(value) is np.ndarray and value.dtype in FLOAT_DTYPES:  # the common case, fast
        return value
    if not is_device_array(value):
        return float_array(value, name)
    if bfloat16.is_torch_bfloat16(value):
        raise DTypeError(f"{name} is a torch.bfloat16 tensor on {value.device}: "
                         f"backend='cuda' has no bfloat16 kernels yet; pass {name}.cpu() for "
                         f"the CPU backends, or a float16/float32 tensor")
    try:
        dtype = np.dtype(value.dtype)
        shape = tuple(int(d) for d in value.shape)
        int(value.size)
    except Exception:  # noqa: BLE001 - something with __cuda_array_interface__ that is no array
        raise DTypeError(f"{name} has __cuda_array_interface__ but no usable dtype, shape and "
                         f"size; pass a NumPy array or a CUDA device array") from None
    del shape
    if dtype not in FLOAT_DTYPES:
        raise DTypeError(f"{name} must have dtype float16, float32 or float64; got a GPU "
                         f"array of dtype {dtype}")
    return value


def output_array(out: Any, problem: ECAProblem, name: str = "out", *,
                 in_place: tuple[tuple[str, np.ndarray], ...] = ()) -> np.ndarray | None:
    """Check an ``out=`` array: an ndarray with x's shape and dtype, writeable, and not
    overlapping an input unless it *is* one of the arrays named in ``in_place``."""
    if out is None:
        return None
    x = problem.x
    if type(out) is np.ndarray and type(x) is np.ndarray:  # the common case, fast
        if out.shape == x.shape and out.dtype == x.dtype and out.flags.writeable:
            for _, other in in_place:
                if out is not other and np.may_share_memory(out, other):
                    break
            else:
                return out
    if is_device_array(x) or is_device_array(out):
        return _device_output(out, x, name, in_place)
    _refuse_masked(out, name, output=True)
    if not isinstance(out, np.ndarray):
        raise DTypeError(f"{name} must be a numpy.ndarray (shape {x.shape}, dtype {x.dtype}); "
                         f"got {type(out).__name__}")
    if out.shape != x.shape:
        raise ShapeError(f"{name} must have the shape of x, {x.shape}; got shape {out.shape}")
    if out.dtype != x.dtype and out.dtype.kind == "f" and not out.dtype.isnative and \
            out.dtype.newbyteorder("=") == x.dtype:
        raise DTypeError(f"{name} has a non-native byte order ({out.dtype.str}); npeca writes "
                         f"native {x.dtype} results: pass np.empty(x.shape, np.{x.dtype})")
    if out.dtype != x.dtype:
        raise DTypeError(f"{name} must have the dtype of x, {x.dtype}; got dtype {out.dtype}")
    if not out.flags.writeable:
        raise ParameterError(f"{name} is read-only; pass a writeable array "
                             f"(e.g. np.empty_like(x))")
    for other_name, other in in_place:
        if out is other or not np.may_share_memory(out, other):  # the common cases, fast
            continue
        if _same_view(out, other) or not _overlaps(out, other):
            continue
        allowed = " or ".join(n for n, _ in in_place)
        raise ParameterError(
            f"{name} overlaps {other_name} in memory without being the same array; pass "
            f"{name}={allowed} itself to compute in place, or a separate array")
    return out


def _device_output(out: Any, x: Any, name: str,
                   in_place: tuple[tuple[str, Any], ...] = ()):
    """``out=`` for GPU input: a C-contiguous GPU array of x's shape and dtype, which the
    kernels write directly; it may be one of the inputs named in ``in_place`` (x, or
    grad_out) but must not otherwise overlap them."""
    if not (is_device_array(out) and is_device_array(x)):
        where = "a GPU array" if is_device_array(x) else "a numpy.ndarray"
        raise DTypeError(f"{name} must be {where} like x; got {type(out).__name__}")
    if tuple(out.shape) != tuple(x.shape):
        raise ShapeError(f"{name} must have the shape of x, {tuple(x.shape)}; got shape "
                         f"{tuple(out.shape)}")
    if np.dtype(out.dtype) != np.dtype(x.dtype):
        raise DTypeError(f"{name} must have the dtype of x, {np.dtype(x.dtype)}; got dtype "
                         f"{np.dtype(out.dtype)}")
    mine = _device_extent(out)
    if mine is not None and not mine[2]:
        raise ShapeError(f"{name} must be a C-contiguous GPU array (the kernels write it "
                         f"directly); got a strided view: pass a contiguous one")
    for label, other in in_place:
        theirs = _device_extent(other) if is_device_array(other) else None
        if mine is None or theirs is None:
            continue
        same = mine == theirs
        if not same and mine[0] < theirs[1] and theirs[0] < mine[1]:
            raise ParameterError(f"{name} overlaps {label} without being {label} itself; "
                                 f"pass {label} (in place) or a separate array")
    return out


def _device_extent(a: Any) -> tuple[int, int, bool] | None:
    """(first byte, one past the last byte, C-contiguous) of a GPU array, from its
    __cuda_array_interface__ (the simulator's arrays: their host memory); None if unknown."""
    cai = getattr(a, "__cuda_array_interface__", None)
    if cai is None:
        host = getattr(a, "_ary", None)  # numba's CUDA simulator
        if not isinstance(host, np.ndarray):
            return None
        cai = dict(host.__array_interface__)
    try:
        start = int(cai["data"][0])
        shape = tuple(int(d) for d in cai["shape"])
        itemsize = np.dtype(cai["typestr"]).itemsize
        strides = cai.get("strides")
    except (KeyError, TypeError, ValueError):
        return None
    size = int(np.prod(shape))
    c_strides = []
    step = itemsize
    for d in reversed(shape):
        c_strides.append(step)
        step *= d
    c_strides = c_strides[::-1]
    contiguous = strides is None or size <= 1 or all(
        st == cs for st, cs, d in zip(strides, c_strides, shape) if d > 1)
    if size == 0:
        return (start, start, contiguous)
    if contiguous or strides is None:
        return (start, start + size * itemsize, True)
    lo = start + sum(st * (d - 1) for st, d in zip(strides, shape) if st < 0)
    hi = start + sum(st * (d - 1) for st, d in zip(strides, shape) if st > 0) + itemsize
    return (lo, hi, False)


def _same_view(a: np.ndarray, b: np.ndarray) -> bool:
    """True when a and b address exactly the same elements in the same order."""
    return (a.shape == b.shape and a.strides == b.strides and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


def _overlaps(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether a and b share memory, exactly when that is cheap to decide, else by bounds."""
    try:
        # NumPy documents any max_work bound; its type stubs accept only -1 and 0
        return bool(np.shares_memory(a, b, max_work=10_000))  # type: ignore[arg-type]
    except getattr(np, "exceptions", np).TooHardError:  # too costly to untangle
        return True


# --- parameters of the layer and the checkpoint loader ---------------------------------------

def positive_int(value: Any, name: str, maximum: int | None = None) -> int:
    """An integer >= 1 (and <= ``maximum``), or ParameterError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or \
            int(value) < 1 or (maximum is not None and int(value) > maximum):
        limit = f" and <= {maximum}" if maximum is not None else ""
        raise ParameterError(f"{name} must be an integer >= 1{limit}; got {describe(value)}")
    return int(value)


def channel_axis_value(channel_axis: Any) -> int:
    """1 or -1 (an integer, not a float or a bool), or ParameterError."""
    if isinstance(channel_axis, bool) or not isinstance(channel_axis, numbers.Integral) or \
            int(channel_axis) not in (1, -1):
        raise ParameterError(f"channel_axis must be 1 (channels-first) or -1 "
                             f"(channels-last), an integer; got {describe(channel_axis)}")
    return int(channel_axis)


def float_dtype(dtype: Any) -> np.dtype:
    """float16, float32, float64 or bfloat16 (float32 for None, as PyTorch), or DTypeError."""
    if dtype is None:
        return FLOAT_DTYPES[1]
    if isinstance(dtype, str) and dtype == bfloat16.NAME:
        return bfloat16.dtype("dtype='bfloat16'")
    try:
        dt = np.dtype(dtype)
    except (TypeError, ValueError, OverflowError):
        raise DTypeError(f"dtype must be float16, float32, float64 or bfloat16; got "
                         f"{describe(dtype)}") from None
    if dt not in FLOAT_DTYPES and not bfloat16.is_bfloat16(dt):
        raise DTypeError(f"dtype must be float16, float32, float64 or bfloat16; got {dt}")
    return dt.newbyteorder("=") if bfloat16.is_bfloat16(dt) else dt


def to_numpy(value: Any, name: str) -> np.ndarray:
    """An array or torch tensor (CPU, any dtype) as a NumPy array; a torch bfloat16 tensor
    becomes a bfloat16 array (float32 when ml_dtypes is not installed: the same values).

    The shape is checked against :data:`MAX_PARAMETER_ELEMENTS` before anything is copied, so
    a tiny file holding a broadcast (stride-0) tensor cannot make npeca allocate gigabytes.
    Anything that is not numeric raises DTypeError naming ``name``."""
    _refuse_masked(value, name)
    shape = getattr(value, "shape", None)
    if shape is not None and not isinstance(value, np.ndarray):
        try:
            dims = tuple(int(d) for d in shape)
        except (TypeError, ValueError):
            raise DTypeError(f"{name} has a shape attribute that is not a tuple of integers "
                             f"({describe(shape)}); it is not an array") from None
        check_parameter_size(dims, name)
    if type(value).__module__.split(".")[0] == "torch" and hasattr(value, "detach"):
        tensor = value.detach()
        if str(getattr(tensor, "dtype", "")) == "torch.bfloat16":
            if bfloat16.available():
                return bfloat16.from_torch(tensor, name)
            try:
                tensor = tensor.float()
            except (TypeError, RuntimeError, NotImplementedError) as exc:
                raise DTypeError(f"{name}: cannot convert this torch.bfloat16 tensor "
                                 f"({exc})") from None
        try:
            return tensor.cpu().numpy()
        # e.g. complex32, quantized, sparse or meta tensors
        except (TypeError, RuntimeError, NotImplementedError) as exc:
            raise DTypeError(f"{name}: cannot convert a torch tensor of dtype {tensor.dtype} "
                             f"to NumPy ({exc})") from None
    try:
        arr = np.asarray(value)
    except Exception as exc:  # noqa: BLE001 - ragged nested sequences and the like
        raise DTypeError(f"{name} must be an array; could not convert "
                         f"{type(value).__name__} ({exc})") from None
    if arr.dtype.kind == "O":
        raise DTypeError(f"{name} must be a numeric array; got a {type(value).__name__} that "
                         f"converts to an object array")
    check_parameter_size(arr.shape, name)
    if arr.dtype.kind == "f" and not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))  # big-endian data: same values
    return bfloat16.native(arr)


def check_parameter_size(shape: tuple[int, ...], name: str) -> None:
    """ShapeError for a parameter shape no ECA layer has (checked before copying data)."""
    size = 1
    for d in shape:
        size *= max(d, 0)
    if size > MAX_PARAMETER_ELEMENTS or (shape and shape[-1] > MAX_KERNEL):
        raise ShapeError(f"{name} has shape {shape}: far larger than any ECA parameter (at "
                         f"most {MAX_KERNEL} taps and {MAX_PARAMETER_ELEMENTS} values); "
                         f"refusing to load it")


def float_parameter(value: Any, name: str, dtype: np.dtype | None = None) -> np.ndarray:
    """A float parameter array (cast to ``dtype`` when given, refusing values that overflow
    it), or DTypeError / ShapeError / ParameterError naming ``name``."""
    arr = to_numpy(value, name)
    if arr.dtype not in FLOAT_DTYPES and not bfloat16.is_bfloat16(arr.dtype):
        why = (" A raw 2-byte type is what NumPy writes for bfloat16 (the dtype's name is "
               "lost in .npy): save bfloat16 weights with safetensors, or as float32"
               if arr.dtype.kind == "V" and arr.dtype.itemsize == 2 else
               " An integer tensor here is not a trained ECA weight")
        raise DTypeError(f"{name} must hold floating-point weights (float16, float32, "
                         f"float64 or bfloat16); got dtype {arr.dtype}.{why}")
    if dtype is None or arr.dtype == dtype:
        return arr
    wide = arr.astype(np.float64)
    with np.errstate(over="ignore"):
        cast = bfloat16.round_to(wide, dtype)
    overflow = np.isfinite(wide) & ~np.isfinite(cast.astype(np.float64))
    if overflow.any():
        i = tuple(int(v) for v in np.argwhere(overflow)[0])
        raise ParameterError(f"{name}{list(i)} = {float(arr[i])!r} does not fit in {dtype} "
                             f"(it would become infinite); build the layer with a wider dtype")
    return cast

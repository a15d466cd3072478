"""The public ECA functions: validate at the boundary, then run the math."""

from __future__ import annotations

from typing import Any

import numpy as np

from ._validate import eca_problem, grad_output, is_device_array, output_array
from .backends import select_backend
from .errors import OutOfMemoryError
from .results import ECAForward, ECAGrads

__all__ = ["eca", "eca_forward", "eca_backward"]

_KEYWORDS_DOC = """\
    x : array_like
        Input of shape (N, C, *spatial) with 1 to 3 spatial axes, or (N, *spatial, C) with
        ``channel_axis=-1``; dtype float16, float32, float64 or bfloat16 (an
        ``ml_dtypes.bfloat16`` array or a CPU ``torch.bfloat16`` tensor: ``pip install
        'npeca[bfloat16]'``); any strides.
    weight : array_like
        The kernel: (k,) shared by all channels, (1, 1, k) as ``torch.nn.Conv1d(1, 1, k)``
        stores it, or (C, k) / (C, 1, k) with one kernel per channel (ECA-NS). k is odd and
        may exceed C.
    bias : float or array of shape () or (1,), optional
        A scalar added to every logit. None (the default) means no bias.
    channel_axis : {1, -1}, optional
        Where the channels are: 1 for channels-first (the default), -1 for channels-last.
    padding : {"zeros", "circular"}, optional
        How the convolution sees channels outside a group: zeros (the paper, timm's
        ``EcaModule``) or wrapped around (timm's ``CecaModule``).
    groups : int, optional
        Split the channels into this many contiguous groups; the convolution never reads
        across a group edge. Must divide C.
    gate : {"sigmoid", "hard_sigmoid"}, optional
        The gate: the logistic sigmoid, or relu6(z + 3) / 6.
    backend : {"auto", "numpy", "numba", "cuda"}, optional
        Who computes: ``"numpy"``, the float64 reference; ``"numba"``, fused parallel CPU
        kernels (float64 accumulation, results within the documented error bound of the
        reference and bitwise reproducible for any thread count); ``"cuda"``, an NVIDIA
        GPU. ``"auto"`` (the default): cuda for GPU arrays; for NumPy input numba once its
        kernels for this kind of call are compiled in this process, the NumPy reference
        while they compile in the background (see :mod:`npeca.backends`; if numba is
        missing, numpy with a one-time warning)."""


_OUT_Y_DOC = """\
    out : numpy.ndarray, optional
        Where to write y: an array with the shape and dtype of ``x``, any strides (for GPU
        input a C-contiguous GPU array, which the kernels write directly). It may be ``x``
        itself (y then overwrites x, with the same result as a separate array) but must not
        otherwise overlap ``x``."""

_OUT_DX_DOC = """\
    out : numpy.ndarray, optional
        Where to write dL/dx: an array with the shape and dtype of ``x``, any strides (for
        GPU input a C-contiguous GPU array, which the kernels write directly). It may be
        ``x`` or ``grad_out`` itself (overwritten, with the same result as a separate array)
        but must not otherwise overlap either."""


def eca_forward(
    x: Any,
    weight: Any,
    *,
    bias: Any = None,
    channel_axis: int = 1,
    padding: str = "zeros",
    groups: int = 1,
    gate: str = "sigmoid",
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> ECAForward:
    return _forward(x, weight, bias, channel_axis, padding, groups, gate, backend, out)


def eca(
    x: Any,
    weight: Any,
    *,
    bias: Any = None,
    channel_axis: int = 1,
    padding: str = "zeros",
    groups: int = 1,
    gate: str = "sigmoid",
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> np.ndarray:
    return _forward(x, weight, bias, channel_axis, padding, groups, gate, backend, out,
                    intermediates=False).y


def _forward(x, weight, bias, channel_axis, padding, groups, gate, backend, out, *,
             intermediates: bool = True) -> ECAForward:
    """Validate, choose the backend, run its forward (eca and eca_forward share this;
    ``intermediates=False``: m, z and a are not wanted, and a backend may leave them out)."""
    problem = eca_problem(x, weight, bias=bias, channel_axis=channel_axis,
                          padding=padding, groups=groups, gate=gate)
    out = output_array(out, problem, in_place=(("x", problem.x),))
    module = select_backend(backend, problem, "forward", device=is_device_array(problem.x))
    try:
        return module.forward(problem, out, intermediates=intermediates)
    except MemoryError:
        raise _out_of_memory(problem) from None


def eca_backward(
    x: Any,
    weight: Any,
    grad_out: Any,
    *,
    bias: Any = None,
    channel_axis: int = 1,
    padding: str = "zeros",
    groups: int = 1,
    gate: str = "sigmoid",
    backend: str = "auto",
    out: np.ndarray | None = None,
) -> ECAGrads:
    problem = eca_problem(x, weight, bias=bias, channel_axis=channel_axis,
                          padding=padding, groups=groups, gate=gate)
    g = grad_output(problem, grad_out)
    out = output_array(out, problem, in_place=(("x", problem.x), ("grad_out", g)))
    module = select_backend(backend, problem, "backward", g, device=is_device_array(problem.x))
    try:
        return module.backward(problem, g, out)
    except MemoryError:
        raise _out_of_memory(problem) from None


def _out_of_memory(problem: Any) -> OutOfMemoryError:
    """The npeca error for a MemoryError while computing: it says how big x is."""
    return OutOfMemoryError(
        f"not enough memory for ECA on x of shape {tuple(problem.x.shape)} "
        f"({problem.x.dtype}); the NumPy reference needs a few float64 copies of x. A "
        f"broadcast or stride-0 x counts in full")


eca.__doc__ = f"""Efficient Channel Attention: rescale every channel of ``x`` by a learned gate.

    Parameters
    ----------
{_KEYWORDS_DOC}
{_OUT_Y_DOC}

    Returns
    -------
    numpy.ndarray
        y, with the shape and dtype of ``x`` (C-contiguous), or ``out`` when given. With
        the numba backend a y of 1 MiB or more may lie in recycled memory (``y.base`` is
        then not None; see ``npeca.backends.release_memory``).

    Raises
    ------
    ShapeError, ParameterError, DTypeError
        (subclasses of ``ValueError`` / ``TypeError``) naming the argument, what was
        expected and what arrived.
    BackendUnavailableError
        (a subclass of ``ImportError``) for ``backend="numba"`` without numba, and for
        ``backend="cuda"`` without numba-cuda or an NVIDIA GPU.
    OutOfMemoryError
        (a subclass of ``MemoryError``) when x is too large for this machine's memory (a
        broadcast x counts in full).

    Notes
    -----
    With S spatial positions and p = (k - 1) / 2,

    $$
    m_{{n,c}} = \\frac{{1}}{{S}} \\sum_s x_{{n,c,s}}, \\qquad
    z_{{n,c}} = b + \\sum_{{j=0}}^{{k-1}} w_j\\, \\tilde m_{{n,c+j-p}}, \\qquad
    y_{{n,c,s}} = \\operatorname{{gate}}(z_{{n,c}})\\, x_{{n,c,s}},
    $$

    a cross-correlation over channels exactly like ``torch.nn.Conv1d`` (no kernel flip),
    where $\\tilde m$ is m padded per group with zeros or wrapped around. The reference
    computes in float64 and rounds y once to the dtype of x. NaN and Inf in ``x`` propagate
    as IEEE arithmetic makes them: a NaN anywhere in a channel makes that channel's mean NaN,
    and through the convolution the logits of its neighbours within k // 2 channels.

    Examples
    --------
    >>> import numpy as np, npeca
    >>> x = np.ones((1, 4, 2, 2))
    >>> y = npeca.eca(x, np.zeros(3))  # zero weight: every gate is sigmoid(0) = 1/2
    >>> float(y.max()), y.shape
    (0.5, (1, 4, 2, 2))
    """

eca_forward.__doc__ = f"""ECA forward pass with its intermediates (debugging, golden vectors).

    Takes the same arguments as :func:`eca`.

    Parameters
    ----------
{_KEYWORDS_DOC}
{_OUT_Y_DOC}

    Returns
    -------
    ECAForward
        Named tuple ``(y, m, z, a)``: y as :func:`eca` returns it; m the pooled means, z the
        logits and a = gate(z), each of shape (N, C) in float64 (with every backend; device
        arrays for GPU input).

    Notes
    -----
    $m = \\operatorname{{mean}}_s x$, $z = b + w \\star \\tilde m$,
    $a = \\operatorname{{gate}}(z)$, $y = a\\, x$; see :func:`eca`.

    Examples
    --------
    >>> import numpy as np, npeca
    >>> x = np.arange(8.0).reshape(1, 2, 4)  # N=1, C=2, S=4
    >>> out = npeca.eca_forward(x, np.array([0.0, 1.0, 0.0]))  # identity kernel: z = m
    >>> out.m.tolist(), out.z.tolist()
    ([[1.5, 5.5]], [[1.5, 5.5]])
    """

eca_backward.__doc__ = f"""Gradients of ECA with respect to x, weight and bias.

    Parameters
    ----------
{_KEYWORDS_DOC}
    grad_out : array_like
        dL/dy, shaped like ``x``, float16/32/64 or bfloat16.
{_OUT_DX_DOC}

    Returns
    -------
    ECAGrads
        Named tuple ``(x, weight, bias)``: dL/dx in the shape and dtype of ``x`` (``out``
        when given, else a new C-contiguous array, possibly in recycled memory as for :func:`eca`);
        dL/dweight in the weight's own shape and dtype; dL/dbias shaped like the bias, or
        None when ``bias`` is None.

    Notes
    -----
    With g = dL/dy and the forward's m, z, a,

    $$
    da_{{n,c}} = \\sum_s g_{{n,c,s}} x_{{n,c,s}}, \\qquad
    dz_{{n,c}} = da_{{n,c}}\\, \\operatorname{{gate}}'(z_{{n,c}}),
    $$

    $$
    dw_j = \\sum_{{n,c}} dz_{{n,c}}\\, \\tilde m_{{n,c+j-p}}, \\qquad
    db = \\sum_{{n,c}} dz_{{n,c}}, \\qquad
    dm_{{n,c'}} = \\sum_j w_j\\, \\mathrm{{d}}\\tilde z_{{n,c'-j+p}},
    $$

    $$
    dx_{{n,c,s}} = g_{{n,c,s}}\\, a_{{n,c}} + dm_{{n,c}} / S.
    $$

    For per-channel weights dw keeps its channel index (sum over n only) and the transposed
    correlation uses the kernel of the output channel c' - j + p. The sigmoid's derivative
    is a (1 - a); the hard sigmoid's is 1/6 strictly inside (-3, 3), 0 elsewhere (as PyTorch).

    Examples
    --------
    >>> import numpy as np, npeca
    >>> x = np.ones((1, 3, 4))
    >>> grads = npeca.eca_backward(x, np.zeros((1, 1, 3)), np.ones_like(x))
    >>> grads.weight.shape, grads.bias is None
    ((1, 1, 3), True)
    """

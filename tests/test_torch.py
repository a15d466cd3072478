"""Cross-check against PyTorch: small torch modules written here from the paper's recipe.

Skipped without torch, except under NPECA_REQUIRE_TORCH=1 (CI), where a missing torch fails.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given

import npeca
from strategies import Case, eca_cases

pytestmark = pytest.mark.torch


def torch_eca(torch, x, weight, bias=None, channel_axis=1, padding="zeros", groups=1,
              gate="sigmoid"):
    """ECA built from torch.nn layers. Returns (y, leaves) with leaves the tensors to read
    gradients from: x, the conv weight and the bias (None without bias)."""
    nn, F = torch.nn, torch.nn.functional
    xt = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    xc = xt.movedim(-1, 1) if channel_axis == -1 else xt  # (N, C, *spatial)
    n, c = xc.shape[:2]
    spatial = xc.ndim - 2
    pool = {1: nn.AdaptiveAvgPool1d, 2: nn.AdaptiveAvgPool2d, 3: nn.AdaptiveAvgPool3d}[spatial](1)
    m = pool(xc).reshape(n * groups, 1, c // groups)  # one row per group
    w = np.asarray(weight)
    k = w.shape[-1]
    p = (k - 1) // 2
    per_channel = w.ndim >= 2 and not (w.ndim == 3 and w.shape[:2] == (1, 1))
    if padding == "circular":
        m = F.pad(m, (p, p), mode="circular")
    else:
        m = F.pad(m, (p, p))
    if per_channel:
        # the (C, k) windows of m, then one kernel per channel: Conv1d(C, C, k, groups=C)
        win = m.unfold(2, k, 1).reshape(n, c, k)
        conv = nn.Conv1d(c, c, k, groups=c, bias=False).to(xt.dtype)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(w.reshape(c, 1, k)))
        z = conv(win).reshape(n, c)
    else:
        conv = nn.Conv1d(1, 1, k, bias=False).to(xt.dtype)
        with torch.no_grad():
            conv.weight.copy_(torch.tensor(w.reshape(1, 1, k)))
        z = conv(m).reshape(n, c)
    bt = None
    if bias is not None:
        bt = torch.tensor(np.asarray(bias, dtype=np.float64).reshape(1), dtype=xt.dtype,
                          requires_grad=True)
        z = z + bt
    # timm's relu6(z + 3) / 6, not F.hardsigmoid: in torch 2.13 the float64 backward of
    # F.hardsigmoid multiplies by the float32 constant 1/6 (0.16666667163...), 3e-8 off.
    a = torch.sigmoid(z) if gate == "sigmoid" else F.relu6(z + 3.0) / 6.0
    y = xc * a.reshape(n, c, *([1] * spatial))
    if channel_axis == -1:
        y = y.movedim(1, -1)
    return y, (xt, conv.weight, bt)


def _compare(torch, case: Case, rtol: float, atol_scale: float):
    y_t, (xt, wt, bt) = torch_eca(torch, case.x, case.weight, **case.kwargs)
    y_t.backward(torch.tensor(case.grad_out))
    y = npeca.eca(case.x, case.weight, **case.kwargs)
    grads = npeca.eca_backward(case.x, case.weight, case.grad_out, **case.kwargs)
    scale = float(np.abs(case.x).max()) * float(np.abs(case.grad_out).max())
    np.testing.assert_allclose(y, y_t.detach().numpy(), rtol=rtol,
                               atol=atol_scale * np.abs(case.x).max())
    np.testing.assert_allclose(grads.x, xt.grad.numpy(), rtol=rtol, atol=atol_scale * scale)
    dw = wt.grad.numpy().reshape(case.weight.shape)
    np.testing.assert_allclose(grads.weight, dw, rtol=rtol,
                               atol=atol_scale * scale * case.x.size)
    if bt is not None:
        np.testing.assert_allclose(np.asarray(grads.bias).reshape(1), bt.grad.numpy(),
                                   rtol=rtol, atol=atol_scale * scale * case.x.size)


def _torch_supports(case: Case) -> bool:
    """torch's circular F.pad needs the pad (k - 1) / 2 to fit inside one group."""
    c = case.x.shape[case.kwargs["channel_axis"]]
    k = case.weight.shape[-1]
    return case.kwargs["padding"] != "circular" or (k - 1) // 2 <= c // case.kwargs["groups"]


def _kink_free(case: Case) -> bool:
    if case.kwargs["gate"] != "hard_sigmoid":
        return True
    z = npeca.eca_forward(case.x, case.weight, **case.kwargs).z
    return bool(np.all(np.abs(np.abs(z) - 3.0) > 1e-6))


@given(eca_cases(dtypes=(np.float64,)))
def test_float64_matches_torch(torch, case: Case):
    assume(_torch_supports(case) and _kink_free(case))
    _compare(torch, case, rtol=1e-10, atol_scale=1e-13)


@given(eca_cases(dtypes=(np.float32,)))
def test_float32_matches_torch(torch, case: Case):
    assume(_torch_supports(case) and _kink_free(case))
    _compare(torch, case, rtol=2e-5, atol_scale=1e-6)


@pytest.mark.parametrize("c", [16, 128, 256])
def test_paper_layer_at_channel_counts_where_even_k_crashes(torch, c):
    """k = psi(C) (odd) as the paper's layer: AdaptiveAvgPool2d + Conv1d(1, 1, k) + sigmoid."""
    rng = np.random.default_rng(c)
    k = npeca.kernel_size(c)
    case = Case(x=rng.standard_normal((2, c, 5, 5)), weight=rng.standard_normal((1, 1, k)),
                grad_out=rng.standard_normal((2, c, 5, 5)),
                kwargs={"channel_axis": 1, "padding": "zeros", "groups": 1, "gate": "sigmoid"})
    _compare(torch, case, rtol=1e-10, atol_scale=1e-13)


def test_even_kernel_is_what_breaks_the_copied_layer(torch):
    """The copied layer's Conv1d(1, 1, k, padding=k // 2) with even k returns C + 1 values;
    npeca refuses an even k instead of producing a wrong shape."""
    c, k = 16, 2  # t = floor((4 + 1) / 2) = 2, kept even by the copied version
    conv = torch.nn.Conv1d(1, 1, k, padding=k // 2, bias=False)
    assert conv(torch.ones(1, 1, c)).shape[-1] == c + 1
    with pytest.raises(npeca.ShapeError, match="odd"):
        npeca.eca(np.ones((1, c, 2)), np.ones((1, 1, k)))

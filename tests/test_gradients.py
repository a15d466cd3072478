"""eca_backward against central finite differences of eca, in float64.

Small problems compare the full Jacobian with respect to x, weight and bias; larger ones
compare random projections <v, J u>. The fourth-order stencil with h = 1e-4 has truncation
error ~ h**4 and rounding error ~ 1e-16 / h, so 1e-8 relative leaves a wide margin for
correct code and none for a wrong term (those are O(1)).
"""

from __future__ import annotations

import numpy as np
from hypothesis import assume, given

import npeca
from fd import directional, jacobian
from strategies import Case, eca_cases

F64 = (np.float64,)


def _kink_free(case: Case, margin: float = 1e-2) -> bool:
    """hard_sigmoid is not differentiable at z = -3 and 3: stay away from both."""
    if case.kwargs["gate"] != "hard_sigmoid":
        return True
    z = npeca.eca_forward(case.x, case.weight, **case.kwargs).z
    return bool(np.all(np.abs(np.abs(z) - 3.0) > margin))


def _kwargs_without_bias(case: Case) -> dict:
    return {k: v for k, v in case.kwargs.items() if k != "bias"}


def _analytic_jacobians(case: Case):
    """Rows of dy/dx, dy/dw, dy/db from eca_backward with one-hot grad_out."""
    y = npeca.eca(case.x, case.weight, **case.kwargs)
    rows_x, rows_w, rows_b = [], [], []
    for i in range(y.size):
        e = np.zeros(y.size)
        e[i] = 1.0
        grads = npeca.eca_backward(case.x, case.weight, e.reshape(y.shape), **case.kwargs)
        rows_x.append(grads.x.reshape(-1))
        rows_w.append(grads.weight.reshape(-1))
        if grads.bias is not None:
            rows_b.append(np.asarray(grads.bias).reshape(-1))
    jb = np.stack(rows_b) if rows_b else None
    return np.stack(rows_x), np.stack(rows_w), jb


def _assert_jacobian(analytic, numeric, name):
    scale = max(1.0, np.abs(numeric).max())
    err = np.abs(analytic - numeric).max()
    assert err <= 1e-8 * scale, f"d y / d {name}: max error {err:.3e} (scale {scale:.3g})"


@given(eca_cases(dtypes=F64, max_batch=2, max_cg=3, max_side=3))
def test_full_jacobian_matches_finite_differences(case: Case):
    assume(case.x.size <= 60)
    assume(_kink_free(case))
    kw = _kwargs_without_bias(case)
    bias = case.kwargs.get("bias")
    jx, jw, jb = _analytic_jacobians(case)

    _assert_jacobian(jx, jacobian(lambda x: npeca.eca(x, case.weight, bias=bias, **kw),
                                  case.x), "x")
    _assert_jacobian(jw, jacobian(lambda w: npeca.eca(case.x, w, bias=bias, **kw),
                                  case.weight), "weight")
    if bias is not None:
        b0 = np.asarray(bias, dtype=np.float64)
        _assert_jacobian(jb, jacobian(lambda b: npeca.eca(case.x, case.weight, bias=b, **kw),
                                      b0), "bias")


@given(eca_cases(dtypes=F64, max_batch=3, max_cg=12, max_side=6))
def test_projected_gradient_matches_finite_differences(case: Case):
    assume(_kink_free(case, margin=5e-2))
    rng = np.random.default_rng(0)
    kw = _kwargs_without_bias(case)
    bias = case.kwargs.get("bias")
    has_bias = bias is not None
    b0 = np.asarray(bias if has_bias else 0.0, dtype=np.float64)
    v = rng.standard_normal(case.x.shape)  # the upstream gradient
    ux, uw, ub = (rng.standard_normal(case.x.shape), rng.standard_normal(case.weight.shape),
                  rng.standard_normal(b0.shape))

    def loss(t):
        y = npeca.eca(case.x + t * ux, case.weight + t * uw,
                      bias=(b0 + t * ub) if has_bias else None, **kw)
        return float(np.vdot(v, y))

    grads = npeca.eca_backward(case.x, case.weight, v, **case.kwargs)
    analytic = np.vdot(grads.x, ux) + np.vdot(grads.weight, uw)
    if has_bias:
        analytic += np.vdot(grads.bias, ub)
    numeric = directional(loss)
    # rounding in the stencil is ~ 2**-52 * sum|v * y| / h; 1e-9 of it is a wide margin
    scale = max(1.0, abs(numeric), float(np.abs(v * npeca.eca(case.x, case.weight,
                                                            **case.kwargs)).sum()))
    assert abs(analytic - numeric) <= 1e-9 * scale, (analytic, numeric, scale)

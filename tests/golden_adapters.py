"""Adapters for `npeca golden verify --backend golden_adapters:NAME` in the tests: one
correct ECA written directly in NumPy, and planted bugs that a suite must catch."""

from __future__ import annotations

import numpy as np

import npeca


def _kw(inputs, params):
    return {"bias": inputs.get("bias"), "channel_axis": params["channel_axis"],
            "padding": params["padding"], "groups": params["groups"], "gate": params["gate"]}


def correct(inputs, params):
    """Forward only, through npeca's reference."""
    return {"y": npeca.eca(inputs["x"], inputs["weight"], **_kw(inputs, params))}


def flipped_kernel(inputs, params):
    """Convolution instead of cross-correlation: the kernel reversed."""
    w = np.ascontiguousarray(inputs["weight"][..., ::-1])
    return {"y": npeca.eca(inputs["x"], w, **_kw(inputs, params))}


def sum_not_mean(inputs, params):
    """Pooling by sum instead of mean: logits off by a factor S (invisible when S = 1)."""
    fwd = npeca.eca_forward(inputs["x"], inputs["weight"], **_kw(inputs, params))
    x = inputs["x"]
    s = x.size // (fwd.m.size)
    return {"m": fwd.m * s}


def unsupported(inputs, params):
    raise NotImplementedError("this adapter supports nothing")

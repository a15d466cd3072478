"""The ECA layer object: against PyTorch modules written here from the official ECANet and timm
sources, against npeca.eca_backward and finite differences, and its errors.

The torch modules below mirror (do not import) BangguWu/ECANet models/eca_module.py and
models/eca_ns.py, and timm/layers/eca.py (EcaModule, CecaModule); test_checkpoint imports them.
"""

from __future__ import annotations

import functools
import inspect
import math

import numpy as np
import pytest

import npeca
from npeca.errors import (AutogradError, BackendUnavailableError, DTypeError, ParameterError,
                          ShapeError)
from npeca.layer import ECA, IncompatibleKeys
from npeca.testing import check_vjp

F32 = dict(rtol=2e-5, atol=2e-6)  # float32 torch vs npeca (float64 inside, rounded once)


# --- torch modules mirroring the official and timm sources ----------------------------------

@functools.lru_cache(maxsize=None)
def torch_modules(torch):
    """Classes built on ``torch.nn``: official ``eca_layer`` / ``eca_ns_layer``, timm's
    ``EcaModule`` (incl. ``use_mlp``) and ``CecaModule``, and an official ECA bottleneck."""
    nn, F = torch.nn, torch.nn.functional

    def gate_layer(gate):
        # timm's HardSigmoid fallback, relu6(x + 3) / 6 (see test_torch for why not F.hardsigmoid)
        return nn.Sigmoid() if gate == "sigmoid" else (lambda z: F.relu6(z + 3.0) / 6.0)

    def timm_k(channels, kernel_size, gamma=2, beta=1):
        if channels is None:
            return kernel_size
        t = int(abs(math.log(channels, 2) + beta) / gamma)
        return max(t if t % 2 else t + 1, 3)

    class eca_layer(nn.Module):  # BangguWu/ECANet models/eca_module.py
        def __init__(self, channel, k_size=3):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.conv = nn.Conv1d(1, 1, kernel_size=k_size, padding=(k_size - 1) // 2,
                                  bias=False)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            y = self.avg_pool(x)
            y = self.conv(y.squeeze(-1).transpose(-1, -2)).transpose(-1, -2).unsqueeze(-1)
            return x * self.sigmoid(y).expand_as(x)

    class eca_ns_layer(nn.Module):  # BangguWu/ECANet models/eca_ns.py (one kernel per channel)
        def __init__(self, channel, k_size):
            super().__init__()
            self.avg_pool = nn.AdaptiveAvgPool2d(1)
            self.k_size = k_size
            self.conv = nn.Conv1d(channel, channel, kernel_size=k_size, bias=False,
                                  groups=channel)
            self.sigmoid = nn.Sigmoid()

        def forward(self, x):
            y = self.avg_pool(x)
            y = F.unfold(y.transpose(-1, -3), kernel_size=(1, self.k_size),
                         padding=(0, (self.k_size - 1) // 2))
            y = self.conv(y.transpose(-1, -2)).unsqueeze(-1)
            return x * self.sigmoid(y).expand_as(x)

    class EcaModule(nn.Module):  # timm/layers/eca.py
        def __init__(self, channels=None, kernel_size=3, gate="sigmoid", use_mlp=False,
                     rd_channels=8):
            super().__init__()
            kernel_size = timm_k(channels, kernel_size)
            padding = (kernel_size - 1) // 2
            if use_mlp:  # attn_layer='ecam', a timm experiment
                self.conv = nn.Conv1d(1, rd_channels, kernel_size=1, padding=0, bias=True)
                self.act = nn.ReLU()
                self.conv2 = nn.Conv1d(rd_channels, 1, kernel_size=kernel_size,
                                       padding=padding, bias=True)
            else:
                self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=padding,
                                      bias=False)
                self.act = None
                self.conv2 = None
            self.gate = gate_layer(gate)

        def forward(self, x):
            y = x.mean((2, 3)).view(x.shape[0], 1, -1)
            y = self.conv(y)
            if self.conv2 is not None:
                y = self.conv2(self.act(y))
            y = self.gate(y).view(x.shape[0], -1, 1, 1)
            return x * y.expand_as(x)

    class CecaModule(nn.Module):  # timm/layers/eca.py: manual circular padding
        def __init__(self, channels=None, kernel_size=3, act_layer=None, gate="sigmoid"):
            super().__init__()
            kernel_size = timm_k(channels, kernel_size)
            self.padding = (kernel_size - 1) // 2
            # timm: bias=has_act (an act_layer enables the bias; forward never applies it)
            self.conv = nn.Conv1d(1, 1, kernel_size=kernel_size, padding=0,
                                  bias=act_layer is not None)
            self.gate = gate_layer(gate)

        def forward(self, x):
            y = x.mean((2, 3)).view(x.shape[0], 1, -1)
            y = F.pad(y, (self.padding, self.padding), mode="circular")
            y = self.conv(y)
            y = self.gate(y).view(x.shape[0], -1, 1, 1)
            return x * y.expand_as(x)

    class ECABottleneck(nn.Module):  # BangguWu/ECANet models/eca_resnet.py
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None, k_size=3):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, kernel_size=1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, kernel_size=3, stride=stride, padding=1,
                                   bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, kernel_size=1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.eca = eca_layer(planes * 4, k_size)
            self.downsample = downsample
            self.stride = stride

        def forward(self, x):
            residual = x
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.eca(self.bn3(self.conv3(out)))
            if self.downsample is not None:
                residual = self.downsample(x)
            return self.relu(out + residual)

    return dict(eca_layer=eca_layer, eca_ns_layer=eca_ns_layer, EcaModule=EcaModule,
                CecaModule=CecaModule, ECABottleneck=ECABottleneck)


def run_torch(torch, module, x):
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(x))).numpy()


# --- construction -----------------------------------------------------------------------

@pytest.mark.parametrize("channels, expected_k", [(16, 3), (64, 3), (128, 5), (256, 5),
                                                  (512, 5), (2048, 7)])
def test_kernel_size_from_channels_follows_the_paper(channels, expected_k):
    # Eq. 12 with gamma=2, b=1 by hand: t = floor((log2 C + 1) / 2), next odd
    assert ECA(channels, seed=0).kernel_size == expected_k
    assert ECA(channels, seed=0).weight.shape == (1, 1, expected_k)


def test_min_size_and_explicit_kernel_size():
    assert ECA(2, seed=0).kernel_size == 1  # t = 1
    assert ECA(2, min_size=3, seed=0).kernel_size == 3  # timm's floor
    assert ECA(64, kernel_size=9, seed=0).kernel_size == 9  # hand-picked k wins
    assert ECA(64, gamma=1, b=0, seed=0).kernel_size == 7  # t = 6 -> 7
    layer = ECA(kernel_size=7, seed=0)
    assert layer.channels is None and layer.weight.shape == (1, 1, 7)


def test_shapes_dtype_and_keys():
    layer = ECA(kernel_size=5, bias=True, dtype=np.float64, seed=0)
    assert layer.weight.dtype == np.float64 and layer.bias.shape == (1,)
    assert list(layer.state_dict()) == ["conv.weight", "conv.bias"]
    assert [n for n, _ in layer.named_parameters()] == ["conv.weight", "conv.bias"]
    per = ECA(6, kernel_size=3, per_channel=True, seed=0)
    assert per.weight.shape == (6, 1, 3) and per.bias is None
    assert per.weight.dtype == np.float32


def test_seed_and_generator_are_deterministic():
    a, b = ECA(kernel_size=5, bias=True, seed=3), ECA(kernel_size=5, bias=True, seed=3)
    np.testing.assert_array_equal(a.weight, b.weight)
    np.testing.assert_array_equal(a.bias, b.bias)
    c = ECA(kernel_size=5, seed=np.random.default_rng(3))
    np.testing.assert_array_equal(a.weight, c.weight)
    assert not np.array_equal(a.weight, ECA(kernel_size=5, seed=4).weight)


def _ks_statistic(a, b):
    """Two-sample Kolmogorov-Smirnov statistic."""
    grid = np.sort(np.concatenate([a, b]))
    fa = np.searchsorted(np.sort(a), grid, side="right") / a.size
    fb = np.searchsorted(np.sort(b), grid, side="right") / b.size
    return float(np.abs(fa - fb).max())


@pytest.mark.parametrize("k", [1, 3, 7])
def test_init_distribution_matches_torch_conv1d(torch, k):
    """Same law as torch's Conv1d init (fan_in = k): compared by sampling both."""
    c = 3000
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(c, c, k, groups=c, bias=True)  # fan_in = k, like Conv1d(1, 1, k)
    assert torch.nn.init._calculate_fan_in_and_fan_out(
        torch.nn.Conv1d(1, 1, k).weight)[0] == k
    tw, tb = conv.weight.detach().numpy().ravel(), conv.bias.detach().numpy().ravel()
    ours = ECA(c, kernel_size=k, per_channel=True, seed=0).weight.ravel()
    bias = np.concatenate([ECA(kernel_size=k, bias=True, seed=s).bias for s in range(600)])
    bound = 1 / math.sqrt(k)
    for sample in (tw, tb, ours, bias):
        assert np.abs(sample).max() <= bound
    assert np.abs(ours).max() > 0.99 * bound and np.abs(bias).max() > 0.97 * bound
    # KS critical value at alpha = 0.001 is about 1.95 * sqrt((n + m) / (n m))
    assert _ks_statistic(ours, tw) < 1.95 * math.sqrt(2 / min(ours.size, tw.size))
    assert _ks_statistic(bias, tb) < 1.95 * math.sqrt(1 / bias.size + 1 / tb.size)


@pytest.mark.parametrize("kwargs, match", [
    (dict(), "channels .* or an explicit kernel_size"),
    (dict(kernel_size=4), "kernel_size must be odd .*; got 4. Use 5"),
    (dict(kernel_size=0), "kernel_size must be an integer >= 1"),
    (dict(kernel_size=3.0), "kernel_size must be an integer"),
    (dict(channels=0), "channels must be an integer >= 1"),
    (dict(kernel_size=3, per_channel=True), "per_channel=True needs channels"),
    (dict(channels=8, per_channel=True, bias=True), "per_channel=True with bias=True"),
    (dict(kernel_size=3, padding="reflect"), "padding must be one of 'zeros', 'circular'"),
    (dict(kernel_size=3, gate="relu"), "gate must be one of"),
    (dict(channels=10, groups=3), "groups must divide channels"),
    (dict(kernel_size=3, groups=0), "groups must be an integer >= 1"),
    (dict(kernel_size=3, channel_axis=2), "channel_axis must be 1"),
    (dict(kernel_size=3, bias="yes"), "bias must be True or False"),
])
def test_bad_construction_is_refused(kwargs, match):
    with pytest.raises(ParameterError, match=match):
        ECA(**kwargs)


def test_bad_dtype_is_refused():
    with pytest.raises(DTypeError, match="float16, float32, float64 or bfloat16; got int32"):
        ECA(kernel_size=3, dtype=np.int32)
    with pytest.raises(DTypeError, match="got 'nonsense'"):
        ECA(kernel_size=3, dtype="nonsense")


def test_backend_is_forwarded_or_refused_clearly(monkeypatch):
    accepts = "backend" in inspect.signature(npeca.eca).parameters
    if not accepts:
        with pytest.raises(BackendUnavailableError, match="backend='numba_cpu'.*backend=None"):
            ECA(kernel_size=3, backend="numba_cpu")
        return
    seen = {}
    real = npeca.api.eca

    def spy(*args, **kwargs):
        seen.update(kwargs)
        return real(*args, **kwargs)

    with pytest.raises(ParameterError, match="backend must be one of .*'numpy'.*got 'bogus'"):
        ECA(kernel_size=3, backend="bogus")
    layer = ECA(kernel_size=3, backend="numpy", seed=0)
    assert repr(layer).endswith("backend='numpy')")
    monkeypatch.setattr(npeca.api, "eca", spy)
    layer(np.ones((1, 4, 3)))
    assert seen["backend"] == "numpy"
    seen.clear()
    ECA(kernel_size=3, seed=0)(np.ones((1, 4, 3)))
    assert "backend" not in seen  # None: npeca's own default


def test_repr():
    assert repr(ECA(kernel_size=3, seed=0)) == (
        "ECA(kernel_size=3, padding='zeros', gate='sigmoid', bias=False, dtype=float32)")
    assert repr(ECA(8, kernel_size=3, per_channel=True, groups=2, padding="circular",
                    gate="hard_sigmoid", channel_axis=-1, dtype=np.float64, seed=0)) == (
        "ECA(channels=8, kernel_size=3, per_channel=True, groups=2, padding='circular', "
        "gate='hard_sigmoid', bias=False, channel_axis=-1, dtype=float64)")


# --- forward and backward against PyTorch -----------------------------------------------------

def _x(shape, seed=0, dtype=np.float32):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


@pytest.mark.parametrize("c, k", [(16, 3), (64, 5), (3, 7)])  # k > C: still a valid layer
def test_official_eca_layer_matches_torch(torch, c, k):
    mods = torch_modules(torch)
    torch.manual_seed(c)
    ref = mods["eca_layer"](c, k)
    layer = ECA(kernel_size=k, seed=0)
    layer.load_state_dict(ref.state_dict())
    x = _x((2, c, 5, 6), seed=c)
    np.testing.assert_allclose(layer(x), run_torch(torch, ref, x), **F32)


@pytest.mark.parametrize("gate", ["sigmoid", "hard_sigmoid"])
def test_timm_eca_module_matches_torch(torch, gate):
    mods = torch_modules(torch)
    torch.manual_seed(1)
    ref = mods["EcaModule"](channels=256, gate=gate)  # timm's rule: k = 5
    layer = ECA(256, min_size=3, gate=gate, seed=0)
    assert layer.kernel_size == ref.conv.weight.shape[-1] == 5
    with torch.no_grad():
        ref.conv.weight.mul_(8.0)  # push logits past +-3 so the hard sigmoid saturates
    layer.load_state_dict(ref.state_dict())
    x = _x((3, 256, 4, 4), seed=2)
    z = npeca.eca_forward(x, layer.weight).z
    if gate == "hard_sigmoid":
        assert (np.abs(z) > 3).any() and (np.abs(z) < 3).any()
    np.testing.assert_allclose(layer(x), run_torch(torch, ref, x), **F32)


def test_timm_ceca_module_with_bias_matches_torch_and_needs_circular(torch):
    mods = torch_modules(torch)
    torch.manual_seed(2)
    ref = mods["CecaModule"](kernel_size=5, act_layer=torch.nn.ReLU)  # bias=has_act
    layer = ECA(kernel_size=5, bias=True, padding="circular", seed=0)
    layer.load_state_dict(ref.state_dict())
    x = _x((2, 12, 3, 3), seed=3)
    expected = run_torch(torch, ref, x)
    np.testing.assert_allclose(layer(x), expected, **F32)
    zeros = ECA.from_state_dict(ref.state_dict())  # the wrong padding for this module
    assert not np.allclose(zeros(x), expected, **F32)


def test_official_eca_ns_per_channel_matches_torch(torch):
    mods = torch_modules(torch)
    torch.manual_seed(3)
    ref = mods["eca_ns_layer"](10, 5)
    layer = ECA(10, kernel_size=5, per_channel=True, seed=0)
    layer.load_state_dict(ref.state_dict())
    x = _x((2, 10, 4, 4), seed=4)
    np.testing.assert_allclose(layer(x), run_torch(torch, ref, x), **F32)


def test_channels_last_matches_torch_on_the_moved_axis(torch):
    mods = torch_modules(torch)
    torch.manual_seed(4)
    ref = mods["eca_layer"](32, 3)
    layer = ECA(32, channel_axis=-1, seed=0)
    layer.load_state_dict(ref.state_dict())
    x = _x((2, 32, 5, 5), seed=5)
    y = layer(np.moveaxis(x, 1, -1).copy())
    np.testing.assert_allclose(np.moveaxis(y, -1, 1), run_torch(torch, ref, x), **F32)


@pytest.mark.parametrize("make, kwargs", [
    ("eca_layer", dict(channel=24, k_size=5)),
    ("CecaModule", dict(kernel_size=3, act_layer=True)),
    ("eca_ns_layer", dict(channel=24, k_size=3)),
])
def test_backward_matches_torch_autograd(torch, make, kwargs):
    mods = torch_modules(torch)
    torch.manual_seed(5)
    if make == "CecaModule":
        kwargs = dict(kwargs, act_layer=torch.nn.ReLU)
    ref = mods[make](**kwargs).double()
    per_channel = make == "eca_ns_layer"
    padding = "circular" if make == "CecaModule" else "zeros"
    layer = ECA.from_state_dict(ref.state_dict(), padding=padding)
    assert layer.per_channel == per_channel and layer.dtype == np.float64
    x, g = _x((2, 24, 3, 4), seed=6, dtype=np.float64), _x((2, 24, 3, 4), seed=7,
                                                             dtype=np.float64)
    xt = torch.from_numpy(x).requires_grad_(True)
    ref(xt).backward(torch.from_numpy(g))
    layer(x)
    dx = layer.backward(g)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.weight_grad, ref.conv.weight.grad.numpy(), rtol=1e-10,
                               atol=1e-12)
    if ref.conv.bias is not None:
        np.testing.assert_allclose(layer.bias_grad, ref.conv.bias.grad.numpy(), rtol=1e-10,
                                   atol=1e-12)
    else:
        assert layer.bias_grad is None


def test_state_dict_loads_into_torch_and_reproduces_it(torch):
    """The reverse direction: npeca's keys and shapes are PyTorch's (strict load)."""
    mods = torch_modules(torch)
    layer = ECA(kernel_size=7, seed=11)
    ref = mods["eca_layer"](64, 7)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()},
                        strict=True)
    x = _x((2, 64, 3, 3), seed=8)
    np.testing.assert_allclose(layer(x), run_torch(torch, ref, x), **F32)


# --- gradients against npeca.eca_backward and finite differences ----------------------------

@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3, bias=True),
    dict(channels=12, kernel_size=5, per_channel=True, padding="circular"),
    dict(kernel_size=3, groups=3, gate="hard_sigmoid", bias=True),
    dict(kernel_size=3, channel_axis=-1),
])
def test_backward_equals_eca_backward_and_finite_differences(kwargs):
    layer = ECA(dtype=np.float64, seed=1, **kwargs)
    shape = (2, 5, 12) if kwargs.get("channel_axis") == -1 else (2, 12, 5)
    x, g = _x(shape, seed=9, dtype=np.float64), _x(shape, seed=10, dtype=np.float64)
    layer(x)
    dx = layer.backward(g)
    call = dict(channel_axis=layer.channel_axis, padding=layer.padding, groups=layer.groups,
                gate=layer.gate)
    expected = npeca.eca_backward(x, layer.weight, g, bias=layer.bias, **call)
    np.testing.assert_array_equal(dx, expected.x)
    np.testing.assert_array_equal(layer.weight_grad, expected.weight)
    if layer.bias is not None:
        np.testing.assert_array_equal(layer.bias_grad, expected.bias)

    inputs = {"x": x, "weight": layer.weight.copy()}
    if layer.bias is not None:
        inputs["bias"] = layer.bias.copy()

    def forward(x, weight, bias=None):
        probe = ECA(dtype=np.float64, seed=0, **kwargs)
        probe.load_state_dict({"conv.weight": weight, **({} if bias is None else
                                                          {"conv.bias": bias})})
        return probe(x)

    def vjp(cot, x, weight, bias=None):
        probe = ECA(dtype=np.float64, seed=0, **kwargs)
        probe.load_state_dict({"conv.weight": weight, **({} if bias is None else
                                                          {"conv.bias": bias})})
        probe(x)
        dx = probe.backward(cot[0])
        return (dx, probe.weight_grad) + ((probe.bias_grad,) if bias is not None else ())

    if kwargs.get("gate") == "hard_sigmoid":  # keep finite differences away from the kinks
        z = npeca.eca_forward(x, layer.weight, bias=layer.bias, **call).z
        assert np.all(np.abs(np.abs(z) - 3) > 1e-3)
    assert check_vjp(forward, vjp, inputs, mode="fast", n_projections=4, atol=1e-7, rtol=1e-6)


def test_backward_uses_the_parameters_of_its_forward():
    """An update between forward and backward (an optimizer step) must not change the
    gradient of the forward already computed."""
    layer = ECA(kernel_size=3, dtype=np.float64, seed=0)
    x, g = _x((2, 6, 4), seed=1, dtype=np.float64), _x((2, 6, 4), seed=2, dtype=np.float64)
    w0 = layer.weight.copy()
    layer(x)
    layer.weight -= 0.5  # in place, through parameters()
    dx = layer.backward(g)
    np.testing.assert_array_equal(dx, npeca.eca_backward(x, w0, g).x)


def test_parameters_are_live_arrays():
    layer = ECA(kernel_size=3, bias=True, seed=0)
    w, b = layer.parameters()
    w[...] = 0.0
    b[...] = 2.0
    x = np.ones((1, 4, 2), dtype=np.float32)
    sig2 = 1 / (1 + math.exp(-2.0))
    np.testing.assert_allclose(layer(x), np.full_like(x, sig2), rtol=1e-7)


def test_backward_before_forward_is_refused():
    with pytest.raises(AutogradError, match="needs a forward"):
        ECA(kernel_size=3, seed=0).backward(np.ones((1, 4, 2)))


def test_input_with_other_channel_count_is_refused_when_channels_are_fixed():
    with pytest.raises(ShapeError, match="built for 64 channels; x has 32 channels on axis 1"):
        ECA(64, seed=0)(np.ones((1, 32, 4, 4), dtype=np.float32))
    ECA(kernel_size=3, seed=0)(np.ones((1, 32, 4, 4)))  # shared k without channels: any C


def test_bad_input_errors_come_from_the_validator():
    with pytest.raises(ShapeError, match="x must have 3 to 5 dimensions"):
        ECA(kernel_size=3, seed=0)(np.ones((4, 4)))
    with pytest.raises(ShapeError, match="grad_out must have the shape of x"):
        layer = ECA(kernel_size=3, seed=0)
        layer(np.ones((1, 4, 2)))
        layer.backward(np.ones((1, 4, 3)))


# --- load_state_dict ----------------------------------------------------------------------

def test_load_state_dict_strict_errors_name_the_keys():
    layer = ECA(kernel_size=3, seed=0)
    w = np.zeros((1, 1, 3), np.float32)
    with pytest.raises(ParameterError, match=r"unexpected key\(s\) 'conv.bias'.*bias=True"):
        layer.load_state_dict({"conv.weight": w, "conv.bias": np.zeros(1)})
    with pytest.raises(ParameterError, match=r"missing key\(s\) 'conv.weight'"):
        layer.load_state_dict({})
    with_bias = ECA(kernel_size=3, bias=True, seed=0)
    with pytest.raises(ParameterError, match=r"missing key\(s\) 'conv.bias'"):
        with_bias.load_state_dict({"conv.weight": w})


def test_load_state_dict_non_strict_reports_and_keeps():
    layer = ECA(kernel_size=3, bias=True, seed=0)
    b0 = layer.bias.copy()
    out = layer.load_state_dict({"conv.weight": np.ones((1, 1, 3)), "extra": np.ones(2)},
                                strict=False)
    assert out == IncompatibleKeys(missing_keys=["conv.bias"], unexpected_keys=["extra"])
    np.testing.assert_array_equal(layer.weight, np.ones((1, 1, 3), np.float32))
    np.testing.assert_array_equal(layer.bias, b0)


def test_load_state_dict_shape_and_dtype_errors_change_nothing():
    layer = ECA(kernel_size=3, bias=True, seed=0)
    w0, b0 = layer.weight.copy(), layer.bias.copy()
    with pytest.raises(ShapeError, match=r"conv.weight has shape \(1, 1, 5\); this layer's is "
                                         r"\(1, 1, 3\).*ECA.from_state_dict"):
        layer.load_state_dict({"conv.weight": np.ones((1, 1, 5)), "conv.bias": np.ones(1)},
                              strict=False)
    with pytest.raises(DTypeError, match="conv.bias must hold floating-point.*int64"):
        layer.load_state_dict({"conv.weight": np.ones((1, 1, 3)),
                               "conv.bias": np.ones(1, dtype=np.int64)})
    with pytest.raises(DTypeError, match="must be a mapping"):
        layer.load_state_dict([("conv.weight", np.ones((1, 1, 3)))])
    np.testing.assert_array_equal(layer.weight, w0)
    np.testing.assert_array_equal(layer.bias, b0)


def test_load_state_dict_casts_and_copies():
    layer = ECA(kernel_size=3, seed=0)
    src = np.array([[[0.1, 0.2, 0.3]]], dtype=np.float64)
    layer.load_state_dict({"conv.weight": src})
    src[...] = 9.0
    assert layer.weight.dtype == np.float32
    np.testing.assert_array_equal(layer.weight, np.float32([[[0.1, 0.2, 0.3]]]))


def test_load_state_dict_accepts_torch_tensors_including_bfloat16(torch):
    layer = ECA(kernel_size=3, bias=True, seed=0)
    w = torch.tensor([[[0.5, -1.25, 2.0]]], dtype=torch.bfloat16, requires_grad=True)
    layer.load_state_dict({"conv.weight": w, "conv.bias": torch.nn.Parameter(torch.ones(1))})
    np.testing.assert_array_equal(layer.weight, np.float32([[[0.5, -1.25, 2.0]]]))
    np.testing.assert_array_equal(layer.bias, np.float32([1.0]))


@pytest.mark.parametrize("shape, match", [
    ((1, 1, 4), r"conv.weight has shape \(1, 1, 4\): kernel size k = 4 is even"),
    ((1, 1, 0), "empty kernel"),
    ((3,), r"shape \(3,\), which is not an ECA kernel"),
    ((1, 8, 3), "use_mlp"),
    ((8, 8, 3), r"\(C, C, k\) weight is a full Conv1d"),
    ((1, 1, 3, 3), "4-D weight is a Conv2d"),
])
def test_from_state_dict_refuses_non_eca_weights(shape, match):
    with pytest.raises(ShapeError, match=match):
        ECA.from_state_dict({"conv.weight": np.ones(shape, np.float32)})


def test_from_state_dict_infers_everything_from_the_weights():
    sd = {"conv.weight": np.ones((1, 1, 9), np.float16), "conv.bias": np.zeros(1, np.float16)}
    layer = ECA.from_state_dict(sd, gate="hard_sigmoid")
    assert (layer.kernel_size, layer.bias is not None, layer.dtype) == (9, True, np.float16)
    assert layer.gate == "hard_sigmoid" and layer.channels is None
    per = ECA.from_state_dict({"conv.weight": np.ones((12, 1, 3))}, dtype=np.float32)
    assert (per.per_channel, per.channels, per.kernel_size, per.dtype) == (True, 12, 3,
                                                                          np.float32)
    with pytest.raises(ShapeError, match=r"conv.bias must have shape \(1,\).*per-channel bias"):
        ECA.from_state_dict({"conv.weight": np.ones((12, 1, 3)), "conv.bias": np.ones(12)})
    with pytest.raises(ParameterError, match="missing key 'conv.weight'"):
        ECA.from_state_dict({"conv.bias": np.ones(1)})


# Mark the tests that cross-check against PyTorch (those taking the torch fixture).
for _name, _test in list(globals().items()):
    if _name.startswith("test_") and "torch" in inspect.signature(_test).parameters:
        globals()[_name] = pytest.mark.torch(_test)


@pytest.mark.parametrize("seed", [-1, "a"])
def test_seed_must_be_a_nonnegative_integer(seed):
    with pytest.raises(ParameterError):
        ECA(4, seed=seed)

"""examples/bottleneck.py, the NumPy + npeca residual ECA block, against the same block in
PyTorch (ECANet's ECABottleneck, written in test_layer from models/eca_resnet.py)."""

from __future__ import annotations

import doctest
import importlib.util
import inspect
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from test_layer import torch_modules

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "bottleneck.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("npeca_example_bottleneck", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_docstrings_run(example):
    result = doctest.testmod(example, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0


@pytest.mark.parametrize("shape, w_shape, stride, padding", [
    ((2, 3, 7, 6), (4, 3, 3, 3), 1, 1),
    ((1, 5, 9, 8), (2, 5, 3, 3), 2, 1),
    ((2, 4, 5, 5), (6, 4, 1, 1), 2, 0),
    ((1, 2, 6, 7), (3, 2, 3, 2), 1, 0),
])
def test_conv2d_matches_torch(torch, example, shape, w_shape, stride, padding):
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(shape), rng.standard_normal(w_shape)
    expected = torch.nn.functional.conv2d(torch.from_numpy(x), torch.from_numpy(w),
                                          stride=stride, padding=padding).numpy()
    np.testing.assert_allclose(example.conv2d(x, w, stride=stride, padding=padding), expected,
                               rtol=1e-12, atol=1e-12)


def _torch_block(torch, inplanes, planes, stride, k, seed):
    """ECABottleneck with random weights and batch-norm statistics, in eval mode."""
    nn = torch.nn
    torch.manual_seed(seed)
    downsample = None
    if stride != 1 or inplanes != planes * 4:
        downsample = nn.Sequential(nn.Conv2d(inplanes, planes * 4, 1, stride=stride,
                                             bias=False), nn.BatchNorm2d(planes * 4))
    block = torch_modules(torch)["ECABottleneck"](inplanes, planes, stride, downsample, k)
    with torch.no_grad():
        for m in block.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.5, 0.5)
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
        block.eca.conv.weight.uniform_(-2, 2)
    return block.eval()


def _numpy_state(block, prefix=""):
    return {prefix + k: v.numpy() for k, v in block.state_dict().items()}


@pytest.mark.parametrize("inplanes, planes, stride, k", [
    (32, 8, 1, 5),   # identity shortcut, hand-picked k = 5
    (16, 8, 2, 3),   # downsample: 1x1 stride-2 conv and batch norm
    (24, 8, 1, 7),   # channel change without stride
])
def test_block_matches_torch(torch, example, inplanes, planes, stride, k):
    ref = _torch_block(torch, inplanes, planes, stride, k, seed=inplanes + k)
    x = np.random.default_rng(k).standard_normal((2, inplanes, 9, 9)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    block = example.Bottleneck.from_state_dict(_numpy_state(ref), stride=stride)
    assert block.eca.kernel_size == k and (block.downsample is None) == (ref.downsample is None)
    y = block(x)
    assert y.shape == expected.shape
    scale = float(np.abs(expected).max())
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5 * scale)
    assert (y == 0).any() and (y > 0).any()  # the final ReLU is active: a real test


def test_block_from_a_safetensors_checkpoint_without_torch_in_the_loop(torch, example,
                                                                       tmp_path):
    """A two-block stage saved by torch as safetensors, read with safetensors.numpy."""
    require("safetensors", "NPECA_REQUIRE_OPTIONAL")
    from safetensors.numpy import load_file
    from safetensors.torch import save_file

    stage = torch.nn.Sequential(_torch_block(torch, 16, 4, 2, 3, seed=1),
                                _torch_block(torch, 16, 4, 1, 5, seed=2))
    net = torch.nn.Module()
    net.layer1 = stage.eval()
    save_file(net.state_dict(), str(tmp_path / "net.safetensors"))
    sd = load_file(str(tmp_path / "net.safetensors"))
    blocks = [example.Bottleneck.from_state_dict(sd, prefix="layer1.0.", stride=2),
              example.Bottleneck.from_state_dict(sd, prefix="layer1.1.")]
    x = np.random.default_rng(5).standard_normal((1, 16, 8, 8)).astype(np.float32)
    with torch.no_grad():
        expected = stage(torch.from_numpy(x)).numpy()
    y = blocks[1](blocks[0](x))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5 * float(np.abs(expected).max()))


def test_timm_naming_through_attn_name(torch, example):
    ref = _torch_block(torch, 32, 8, 1, 3, seed=9)
    sd = {k.replace("eca.", "se."): v for k, v in _numpy_state(ref).items()}
    x = np.random.default_rng(2).standard_normal((1, 32, 6, 6)).astype(np.float32)
    with torch.no_grad():
        expected = ref(torch.from_numpy(x)).numpy()
    block = example.Bottleneck.from_state_dict(sd, attn_name="se")
    np.testing.assert_allclose(block(x), expected, rtol=1e-4,
                               atol=1e-5 * float(np.abs(expected).max()))


# Mark the tests that cross-check against PyTorch (those taking the torch fixture).
for _name, _test in list(globals().items()):
    if _name.startswith("test_") and "torch" in inspect.signature(_test).parameters:
        globals()[_name] = pytest.mark.torch(_test)


def test_the_script_compares_with_pytorch(torch):
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).resolve().parent.parent / "examples" / "bottleneck.py"
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    line = next(t for t in done.stdout.splitlines() if "max |numpy - torch|" in t)
    diff = float(line.split("= ")[1].split()[0])
    assert diff < 1e-4, line  # float32 rounding of a ~8-sized output, not a wrong block
    assert "docstring examples: 9 of 9 passed" in done.stdout

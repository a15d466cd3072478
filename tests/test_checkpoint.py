"""Checkpoint loading: state dicts written by torch with official ECANet and timm naming, saved
as .pth and .safetensors, loaded with npeca and run against the torch modules; malformed and
unsafe checkpoints refused with errors that name the key and the shape."""

from __future__ import annotations

import argparse
import inspect
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from conftest import require
from npeca.checkpoint import CheckpointError, load_eca_layers
from npeca.errors import BackendUnavailableError, DTypeError, ParameterError, ShapeError
from test_layer import F32, run_torch, torch_modules

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def safetensors():
    """safetensors, or a skip (a failure under NPECA_REQUIRE_OPTIONAL=1, as in CI)."""
    return require("safetensors", "NPECA_REQUIRE_OPTIONAL")


# --- networks with the naming of the official code and of timm -------------------------------

def _block(torch, c, attn_name, attn):
    """A residual-style block: a conv, a batch norm (with its int64 num_batches_tracked) and
    the attention module under ``attn_name``, as the real blocks hold them."""
    nn = torch.nn
    block = nn.Module()
    block.conv1 = nn.Conv2d(c, c, 1, bias=False)
    block.bn1 = nn.BatchNorm2d(c)
    setattr(block, attn_name, attn)
    return block


def build_network(torch, style):
    """(model, {module path: channels}) for one naming style."""
    nn, mods = torch.nn, torch_modules(torch)
    torch.manual_seed({"official": 0, "timm_resnet": 1, "nfnet": 2, "byobnet": 3,
                       "ceca": 4, "mobilenet": 5}[style])
    model, channels = nn.Module(), {}
    if style == "official":  # ECANet ResNet: layerX.Y.eca, hand-picked k per stage
        model.conv1 = nn.Conv2d(3, 16, 3, bias=False)
        for stage, (c, k) in enumerate([(16, 3), (32, 5), (64, 7), (64, 7)], start=1):
            blocks = [_block(torch, c, "eca", mods["eca_layer"](c, k)) for _ in range(2)]
            setattr(model, f"layer{stage}", nn.Sequential(*blocks))
            channels.update({f"layer{stage}.{i}.eca": c for i in range(2)})
        model.fc = nn.Linear(64, 10)
    elif style == "timm_resnet":  # timm ecaresnet*: layerX.Y.se = EcaModule(C)
        for stage, c in enumerate([64, 128, 256], start=1):
            setattr(model, f"layer{stage}", nn.Sequential(
                _block(torch, c, "se", mods["EcaModule"](channels=c))))
            channels[f"layer{stage}.0.se"] = c
    elif style == "nfnet":  # timm eca_nfnet / nf_ecaresnet: stages.S.B.attn_last
        model.stem = nn.Conv2d(3, 8, 3)
        model.stages = nn.Sequential(*[nn.Sequential(*[
            _block(torch, c, "attn_last", mods["EcaModule"](channels=c)) for _ in range(2)])
            for c in (96, 192)])
        channels = {f"stages.{s}.{b}.attn_last": c for s, c in enumerate((96, 192))
                    for b in range(2)}
    elif style == "byobnet":  # timm byobnet eca_resnet33ts etc.: stages.S.B.attn
        model.stages = nn.Sequential(nn.Sequential(
            _block(torch, 48, "attn", mods["EcaModule"](channels=48)),
            _block(torch, 48, "attn", mods["EcaModule"](channels=48))))
        channels = {"stages.0.0.attn": 48, "stages.0.1.attn": 48}
    elif style == "ceca":  # attn_layer='ceca' with an act_layer: circular padding, a bias
        model.layer1 = nn.Sequential(_block(torch, 40, "se", mods["CecaModule"](
            channels=40, act_layer=torch.nn.ReLU)))
        channels = {"layer1.0.se": 40}
    elif style == "mobilenet":  # ECANet MobileNetV2: the eca_layer is features.N.conv.<last>
        features = []
        for c, k in [(16, 1), (24, 1), (160, 3)]:  # k_size = 1 for c <= 96 in the official code
            block = nn.Module()
            block.conv = nn.Sequential(nn.Conv2d(c, c, 3, groups=c, bias=False),
                                       nn.BatchNorm2d(c), nn.Conv2d(c, c, 1, bias=False),
                                       nn.BatchNorm2d(c), mods["eca_layer"](c, k))
            features.append(block)
        model.features = nn.Sequential(*features)
        channels = {f"features.{i}.conv.4": c for i, c in enumerate((16, 24, 160))}
    for name, p in model.named_parameters():
        if name.endswith("conv.weight"):
            with torch.no_grad():  # wider than the default init: gates away from 1/2
                p.uniform_(-1.5, 1.5)
    return model.eval(), channels


def check_layers(torch, model, channels, layers, padding="zeros", seed=0):
    """Every loaded layer reproduces its torch module on random input."""
    assert list(layers) == list(channels), "module paths, in checkpoint order"
    rng = np.random.default_rng(seed)
    for path, c in channels.items():
        x = rng.standard_normal((2, c, 3, 4)).astype(np.float32)
        ref = model.get_submodule(path)
        assert layers[path].kernel_size == ref.conv.weight.shape[-1]
        assert layers[path].padding == padding
        np.testing.assert_allclose(layers[path](x), run_torch(torch, ref, x), **F32,
                                   err_msg=path)


STYLES = ["official", "timm_resnet", "nfnet", "byobnet", "mobilenet"]


@pytest.mark.parametrize("style", STYLES)
def test_pth_checkpoint_reproduces_torch(torch, tmp_path, style):
    model, channels = build_network(torch, style)
    path = tmp_path / "model.pth"
    torch.save(model.state_dict(), path)
    check_layers(torch, model, channels, load_eca_layers(path))


@pytest.mark.parametrize("style", STYLES)
def test_safetensors_checkpoint_reproduces_torch(torch, safetensors, tmp_path, style):
    from safetensors.torch import save_file

    model, channels = build_network(torch, style)
    path = tmp_path / "model.safetensors"
    save_file(model.state_dict(), str(path))
    check_layers(torch, model, channels, load_eca_layers(path))


def test_official_kernel_sizes_come_from_the_weights_not_from_c(torch, tmp_path):
    model, channels = build_network(torch, "official")
    layers = load_eca_layers(model.state_dict())
    # the rule would give k = 3 for 16..64 channels; the stages use 3, 5, 7, 7
    assert [layers[f"layer{s}.0.eca"].kernel_size for s in range(1, 5)] == [3, 5, 7, 7]
    assert all(layer.channels is None for layer in layers.values())  # any C works


def test_timm_kernel_sizes_follow_timms_rule(torch):
    model, channels = build_network(torch, "timm_resnet")
    layers = load_eca_layers(model.state_dict())
    assert [layers[p].kernel_size for p in channels] == [3, 5, 5]  # 64, 128, 256 channels


def test_circular_checkpoint_needs_padding_circular(torch, tmp_path, safetensors):
    from safetensors.torch import save_file

    model, channels = build_network(torch, "ceca")
    save_file(model.state_dict(), str(tmp_path / "ceca.safetensors"))
    layers = load_eca_layers(tmp_path / "ceca.safetensors", padding="circular")
    assert layers["layer1.0.se"].bias is not None
    check_layers(torch, model, channels, layers, padding="circular")
    zero = load_eca_layers(tmp_path / "ceca.safetensors")["layer1.0.se"]
    x = np.random.default_rng(0).standard_normal((2, 40, 3, 4)).astype(np.float32)
    assert not np.allclose(zero(x), run_torch(torch, model.layer1[0].se, x), **F32)


def test_plain_dicts_of_tensors_and_of_arrays(torch):
    model, channels = build_network(torch, "byobnet")
    check_layers(torch, model, channels, load_eca_layers(model.state_dict()))
    as_numpy = {k: v.numpy() for k, v in model.state_dict().items()}
    check_layers(torch, model, channels, load_eca_layers(as_numpy))


def test_wrapped_and_dataparallel_checkpoints(torch, tmp_path):
    model, channels = build_network(torch, "nfnet")
    parallel = torch.nn.DataParallel(model)  # CPU only: keys gain "module."
    sd = parallel.state_dict()
    assert all(k.startswith("module.") for k in sd)
    for wrapped in ({"state_dict": sd, "epoch": 3, "arch": "eca_nfnet_l0"},
                    {"model": sd, "optimizer": {"lr": 0.1}}):
        torch.save(wrapped, tmp_path / "ckpt.pth")
        check_layers(torch, model, channels, load_eca_layers(tmp_path / "ckpt.pth"))
    torch.save({"state_dict": {"junk.weight": torch.ones(2)}, "state_dict_ema": sd},
               tmp_path / "ema.pth")
    check_layers(torch, model, channels, load_eca_layers(tmp_path / "ema.pth",
                                                         key="state_dict_ema"))
    with pytest.raises(CheckpointError, match="no mapping under key 'ema'.*'state_dict'"):
        load_eca_layers(tmp_path / "ema.pth", key="ema")


def test_per_channel_eca_ns_checkpoint(torch, tmp_path):
    mods = torch_modules(torch)
    torch.manual_seed(7)
    net = torch.nn.Module()
    net.layer1 = torch.nn.Sequential(_block(torch, 12, "eca", mods["eca_ns_layer"](12, 5)))
    torch.save(net.state_dict(), tmp_path / "ns.pth")
    layer = load_eca_layers(tmp_path / "ns.pth")["layer1.0.eca"]
    assert (layer.per_channel, layer.channels, layer.kernel_size) == (True, 12, 5)
    x = np.random.default_rng(1).standard_normal((2, 12, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(layer(x), run_torch(torch, net.layer1[0].eca, x), **F32)


def test_lone_eca_module_and_explicit_modules(torch):
    ref = torch_modules(torch)["eca_layer"](8, 5)
    layers = load_eca_layers(ref.state_dict())
    assert list(layers) == [""] and layers[""].kernel_size == 5
    model, channels = build_network(torch, "official")
    picked = load_eca_layers(model.state_dict(), modules=["layer2.1.eca", "layer1.0.eca."])
    assert list(picked) == ["layer2.1.eca", "layer1.0.eca"]
    with pytest.raises(CheckpointError, match="no key 'layer9.0.eca.conv.weight'.*'layer1.0.eca'"):
        load_eca_layers(model.state_dict(), modules=["layer9.0.eca"])


def test_dtypes_are_kept_or_cast(torch, safetensors, tmp_path):
    from safetensors.torch import save_file

    model, channels = build_network(torch, "byobnet")
    for tdtype, expected in ((torch.float16, np.float16), (torch.float64, np.float64),
                             (torch.bfloat16, "bfloat16")):
        sd = {k: v.to(tdtype) if v.is_floating_point() else v
              for k, v in model.state_dict().items()}
        save_file(sd, str(tmp_path / "m.safetensors"))
        torch.save(sd, tmp_path / "m.pth")
        for name in ("m.safetensors", "m.pth"):
            layer = load_eca_layers(tmp_path / name)["stages.0.1.attn"]
            assert layer.dtype == expected, (name, tdtype)
            want = sd["stages.0.1.attn.conv.weight"].float().numpy()  # exact for bf16 too
            np.testing.assert_array_equal(layer.weight.astype(np.float32), want)
    cast = load_eca_layers(tmp_path / "m.pth", dtype=np.float64)["stages.0.0.attn"]
    assert cast.weight.dtype == np.float64


def test_safetensors_order_is_natural(safetensors, tmp_path):
    from safetensors.numpy import save_file

    sd = {f"layer1.{i}.eca.conv.weight": np.ones((1, 1, 3), np.float32) for i in (10, 2, 1)}
    save_file(sd, str(tmp_path / "m.safetensors"))
    assert list(load_eca_layers(tmp_path / "m.safetensors")) == [
        "layer1.1.eca", "layer1.2.eca", "layer1.10.eca"]


def test_npz_archive(tmp_path):
    w = np.random.default_rng(0).standard_normal((1, 1, 5)).astype(np.float32)
    np.savez(tmp_path / "m.npz", **{"blocks.0.eca.conv.weight": w,
                                    "blocks.0.conv.weight": np.ones((4, 4, 3, 3))})
    layer = load_eca_layers(tmp_path / "m.npz")["blocks.0.eca"]
    np.testing.assert_array_equal(layer.weight, w)


def test_layer_options_are_passed_on():
    sd = {"a.eca.conv.weight": np.zeros((1, 1, 3))}
    layer = load_eca_layers(sd, gate="hard_sigmoid", channel_axis=-1, padding=None)["a.eca"]
    assert (layer.gate, layer.channel_axis, layer.padding) == ("hard_sigmoid", -1, "zeros")
    y = layer(np.ones((1, 2, 2, 6)))
    np.testing.assert_allclose(y, np.full((1, 2, 2, 6), 0.5))  # relu6(0 + 3) / 6


# --- no torch needed for safetensors; clear errors without the optional packages -------------

def _run_without(module: str, code: str) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter where importing ``module`` fails."""
    prelude = f"import sys\nsys.modules[{module!r}] = None\n"
    return subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code)],
                          capture_output=True, text=True, cwd=REPO, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO)})


def test_safetensors_loads_without_torch(torch, safetensors, tmp_path):
    from safetensors.torch import save_file

    model, channels = build_network(torch, "official")
    save_file(model.state_dict(), str(tmp_path / "m.safetensors"))
    x = np.random.default_rng(3).standard_normal((2, 32, 3, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    done = _run_without("torch", f"""
        import numpy as np
        from npeca.checkpoint import load_eca_layers
        layers = load_eca_layers({str(tmp_path / 'm.safetensors')!r})
        x = np.load({str(tmp_path / 'x.npy')!r})
        np.save({str(tmp_path / 'y.npy')!r}, layers["layer2.1.eca"](x))
        assert "torch" not in sys.modules or sys.modules["torch"] is None
        """)
    assert done.returncode == 0, done.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"),
                               run_torch(torch, model.layer2[1].eca, x), **F32)


def test_pth_without_torch_says_how_to_install(torch, tmp_path):
    torch.save({"eca.conv.weight": torch.ones(1, 1, 3)}, tmp_path / "m.pth")
    done = _run_without("torch", f"""
        from npeca.checkpoint import load_eca_layers
        from npeca.errors import BackendUnavailableError
        try:
            load_eca_layers({str(tmp_path / 'm.pth')!r})
        except BackendUnavailableError as exc:
            print(exc)
        """)
    assert done.returncode == 0, done.stderr
    assert "needs torch: pip install torch" in done.stdout
    assert "safetensors" in done.stdout  # the torch-free route


def test_safetensors_missing_says_how_to_install(tmp_path, monkeypatch):
    (tmp_path / "m.safetensors").write_bytes(b"\x00" * 16)
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(BackendUnavailableError, match="pip install safetensors"):
        load_eca_layers(tmp_path / "m.safetensors")


# --- malformed and unsafe checkpoints ---------------------------------------------------------

@pytest.mark.parametrize("shape, error, match", [
    ((1, 1, 4), ShapeError, r"layer1\.0\.eca\.conv\.weight has shape \(1, 1, 4\): kernel size "
                            r"k = 4 is even"),
    ((1, 2, 3), ShapeError, r"layer1\.0\.eca\.conv\.weight has shape \(1, 2, 3\), which is not "
                            r"an ECA kernel"),
    ((16, 16, 3), ShapeError, r"layer1\.0\.eca\.conv\.weight has shape \(16, 16, 3\).*full "
                              r"Conv1d"),
    ((16, 16, 3, 3), ShapeError, r"\(16, 16, 3, 3\).*Conv2d.*leave 'eca' out of names="),
])
@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_non_eca_shapes_are_refused_naming_key_and_shape(torch, safetensors, tmp_path, fmt,
                                                         shape, error, match):
    from safetensors.torch import save_file

    sd = {"layer1.0.conv1.weight": torch.ones(16, 16, 1, 1),
          "layer1.0.eca.conv.weight": torch.ones(shape)}
    path = tmp_path / f"bad.{fmt}"
    torch.save(sd, path) if fmt == "pth" else save_file(sd, str(path))
    with pytest.raises(error, match=match) as info:
        load_eca_layers(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize("fmt", ["pth", "safetensors", "dict"])
def test_integer_tensors_are_refused(torch, safetensors, tmp_path, fmt):
    from safetensors.torch import save_file

    sd = {"stages.0.0.attn.conv.weight": torch.ones(1, 1, 3, dtype=torch.int64)}
    source = sd
    if fmt != "dict":
        source = tmp_path / f"int.{fmt}"
        torch.save(sd, source) if fmt == "pth" else save_file(sd, str(source))
    with pytest.raises(DTypeError, match=r"stages\.0\.0\.attn\.conv\.weight must hold "
                                         r"floating-point weights.*int64"):
        load_eca_layers(source)


def test_other_integer_tensors_are_ignored(torch):
    """BatchNorm's int64 num_batches_tracked is no ECA weight and must not trip the loader."""
    model, channels = build_network(torch, "official")
    assert any(v.dtype == torch.int64 for v in model.state_dict().values())
    assert list(load_eca_layers(model.state_dict())) == list(channels)


def test_timm_use_mlp_variant_is_refused(torch):
    mods = torch_modules(torch)
    net = torch.nn.Module()
    net.layer1 = torch.nn.Sequential(_block(torch, 64, "se",
                                            mods["EcaModule"](channels=64, use_mlp=True)))
    with pytest.raises(ParameterError, match=r"'layer1\.0\.se\.conv2\.weight'.*use_mlp=True"):
        load_eca_layers(net.state_dict())


def test_bias_of_wrong_shape_is_refused():
    sd = {"a.eca.conv.weight": np.ones((1, 1, 3)), "a.eca.conv.bias": np.ones(2)}
    with pytest.raises(ShapeError, match=r"a\.eca\.conv\.bias must have shape \(1,\).*got "
                                         r"shape \(2,\)"):
        load_eca_layers(sd)


@pytest.mark.parametrize("fmt", ["pth", "safetensors"])
def test_truncated_files_are_refused(torch, safetensors, tmp_path, fmt):
    from safetensors.torch import save_file

    model, _ = build_network(torch, "official")
    path = tmp_path / f"m.{fmt}"
    torch.save(model.state_dict(), path) if fmt == "pth" else save_file(model.state_dict(),
                                                                         str(path))
    data = path.read_bytes()
    for cut in (len(data) // 2, len(data) - 7, 5):
        path.write_bytes(data[:cut])
        with pytest.raises(CheckpointError, match="truncated or corrupt") as info:
            load_eca_layers(path)
        assert str(path) in str(info.value)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors", ".npz"])
def test_garbage_files_are_refused(safetensors, torch, tmp_path, suffix):
    path = tmp_path / f"garbage{suffix}"
    path.write_bytes(b"this is not a checkpoint" * 4)
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")):
        load_eca_layers(path)


class _Payload:
    """Unpickling this would create ``marker``: a stand-in for code a malicious pickle runs."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickles_with_objects_are_refused_without_running_them(torch, tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {"eca.conv.weight": torch.ones(1, 1, 3)},
                "payload": _Payload(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError,
                       match=r"pickled (io|builtins)\.open \(not a tensor\).*refuses"):
        load_eca_layers(tmp_path / "evil.pth")
    assert not marker.exists()
    torch.save({"state_dict": {"eca.conv.weight": torch.ones(1, 1, 3)},
                "args": argparse.Namespace(lr=0.1)}, tmp_path / "args.pth")
    with pytest.raises(CheckpointError, match=r"argparse\.Namespace.*weights-only"):
        load_eca_layers(tmp_path / "args.pth")


def test_a_checkpoint_that_is_not_a_state_dict(torch, tmp_path):
    torch.save(torch.ones(1, 1, 3), tmp_path / "tensor.pt")
    with pytest.raises(CheckpointError, match="holds a Tensor, not a state dict"):
        load_eca_layers(tmp_path / "tensor.pt")


def test_source_errors(tmp_path):
    (tmp_path / "m.onnx").write_bytes(b"x")
    with pytest.raises(CheckpointError, match=r"unknown checkpoint format '\.onnx'.*"
                                              r"\.safetensors, \.pth"):
        load_eca_layers(tmp_path / "m.onnx")
    with pytest.raises(FileNotFoundError, match="no checkpoint file"):
        load_eca_layers(tmp_path / "missing.pth")
    with pytest.raises(DTypeError, match="file path or a mapping.*list"):
        load_eca_layers([np.ones(3)])
    with pytest.raises(CheckpointError, match="keys must be strings; got 3"):
        load_eca_layers({3: np.ones((1, 1, 3))})


def test_bad_options_are_refused_before_reading(tmp_path):
    missing = tmp_path / "never-read.safetensors"
    with pytest.raises(ParameterError, match="padding must be one of 'zeros', 'circular'; got "
                                             "'reflect'"):
        load_eca_layers(missing, padding="reflect")
    with pytest.raises(ParameterError, match="gate must be one of"):
        load_eca_layers(missing, gate="relu")
    with pytest.raises(DTypeError, match="dtype must be float16, float32, float64 or bfloat16"):
        load_eca_layers(missing, dtype=np.int8)
    with pytest.raises(ParameterError, match="names must be non-empty strings"):
        load_eca_layers({}, names=("eca", ""))


def test_checkpoint_without_eca_is_refused():
    se_resnet = {"layer1.0.se.fc1.weight": np.ones((4, 16, 1, 1)),
                 "layer1.0.se.fc2.weight": np.ones((16, 4, 1, 1))}
    with pytest.raises(CheckpointError, match=r"no ECA convolution in the state dict.*"
                                              r"'layer1\.0\.se\.fc1\.weight'"):
        load_eca_layers(se_resnet)


def test_unnamed_1x1xk_conv_inside_a_bigger_module_is_not_taken():
    sd = {"head.conv.weight": np.ones((1, 1, 3)), "head.fc.weight": np.ones((2, 2)),
          "x.eca.conv.weight": np.ones((1, 1, 3))}
    assert list(load_eca_layers(sd)) == ["x.eca"]


# Mark the tests that cross-check against PyTorch (those taking the torch fixture).
for _name, _test in list(globals().items()):
    if _name.startswith("test_") and "torch" in inspect.signature(_test).parameters:
        globals()[_name] = pytest.mark.torch(_test)


def test_argument_and_content_errors(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((1, 1, 3)))
    (tmp_path / "w.npy").rename(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="single .npy array"):
        load_eca_layers(tmp_path / "w.npz")
    with pytest.raises(CheckpointError, match="not a rectangular array"):
        load_eca_layers({"a.eca.conv.weight": [[1.0, 2.0], [3.0]]})
    sd = {"a.eca.conv.weight": np.ones((1, 1, 3))}
    for kw in ({"modules": 5}, {"names": 5}, {"key": [1]}):
        with pytest.raises(ParameterError):
            load_eca_layers(sd, **kw)

"""npeca.backends.cuda_ptx, the check that every CUDA kernel signature compiles for real GPUs
and assembles without register spills (no GPU needed), proven able to fail. Needs the
cuda-check extra (numba-cuda and NVIDIA's NVVM, NVRTC and nvcc wheels): skipped without it,
except under NPECA_REQUIRE_CUDA_CHECK=1, which CI sets when it runs this file after
installing the extra (the README's test command does not install it)."""

from __future__ import annotations

import pytest

from conftest import require


@pytest.fixture(scope="module")
def ptx():
    require("numba.cuda", "NPECA_REQUIRE_CUDA_CHECK")
    require("nvidia.cu13", "NPECA_REQUIRE_CUDA_CHECK")  # the NVVM / nvcc wheels
    from npeca.backends import cuda_ptx

    if cuda_ptx.find_ptxas() is None:
        pytest.fail("ptxas not found although the nvidia wheels are installed")
    return cuda_ptx


def test_a_kernel_that_does_not_compile_fails_the_check(ptx, monkeypatch):
    from npeca.backends import numba_cuda

    good = [s for s in numba_cuda.launch_signatures() if s[0] == "gate_scale_first"][0]
    kinds = list(good[1])
    kinds[13] = ("bool",)  # y as a scalar bool: y[off + i] = a * x does not compile
    bad = (good[0], tuple(kinds))
    monkeypatch.setattr(numba_cuda, "launch_signatures", lambda: [bad])
    (result,) = ptx.check([(9, 0)])
    assert not result.ok and "compile_ptx" in result.message


def test_register_spills_fail_the_check(ptx, monkeypatch):
    """The same kernel passes as it is and fails when ptxas may use only 16 registers (it
    needs about 60): spills are detected, not just errors."""
    from npeca.backends import numba_cuda

    sig = [s for s in numba_cuda.launch_signatures() if s[0] == "dx_params_first"][:1]
    monkeypatch.setattr(numba_cuda, "launch_signatures", lambda: sig)
    (good,) = ptx.check([(8, 0)])
    assert good.ok and good.spill_stores == 0 and good.registers > 16
    real_run = ptx.subprocess.run

    def squeezed(cmd, **kw):
        return real_run(cmd[:1] + ["-maxrregcount=16"] + cmd[1:], **kw)
    monkeypatch.setattr(ptx.subprocess, "run", squeezed)
    (spilled,) = ptx.check([(8, 0)])
    assert not spilled.ok and spilled.spill_stores > 0


def test_the_command_line(ptx, monkeypatch, capsys):
    from npeca.backends import numba_cuda

    sig = [s for s in numba_cuda.launch_signatures() if s[0] == "slope"]
    monkeypatch.setattr(numba_cuda, "launch_signatures", lambda: sig)
    assert ptx.main(["--cc", "9.0"]) == 0
    assert "1 of 1 kernel signatures compiled and assembled without spills for sm_90" in \
        capsys.readouterr().out
    assert ptx.main(["--cc", "nine"]) == 2
    assert "--cc takes MAJOR.MINOR" in capsys.readouterr().err

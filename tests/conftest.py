"""Shared test configuration: Hypothesis profiles and the optional-dependency policy."""

from __future__ import annotations

import importlib
import os

import pytest
from hypothesis import HealthCheck, settings

# deadline=None everywhere: the first call of a JIT backend compiles for seconds.
settings.register_profile("dev", deadline=None, max_examples=60)
settings.register_profile(
    "ci",
    deadline=None,
    max_examples=120,
    derandomize=True,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("stress", deadline=None, max_examples=2000,
                          suppress_health_check=[HealthCheck.too_slow])  # hunting, by hand
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))

# Compile numba kernels in the calling thread (npeca.backends.numba_cpu._compile.BACKGROUND):
# every call then runs the kernel its schedule names (the parallel twin on large inputs, not
# the serial one while the parallel one compiles), and backend="auto" is deterministic. Set
# before npeca is imported; inherited by the subprocesses tests start. The tests of the
# background compile switch it on for themselves.
os.environ.setdefault("NPECA_BACKGROUND_COMPILE", "0")

# The CUDA tests need NUMBA_ENABLE_CUDASIM=1 before numba is imported, or a GPU: they run in
# their own process (tests/test_cuda_simulator.py), or directly with `pytest tests/cuda_sim`.
if os.environ.get("NUMBA_ENABLE_CUDASIM") != "1" and os.environ.get("NPECA_CUDA_TESTS") != "1":
    collect_ignore = ["cuda_sim"]


def require(module: str, env: str):
    """Import an optional dependency; skip without it, fail without it when ``env`` is 1."""
    if os.environ.get(env) == "1":
        return importlib.import_module(module)  # an ImportError here fails the test
    return pytest.importorskip(module, reason=f"{module} is not installed (set {env}=1 to "
                                               f"make this a failure)")


@pytest.fixture(scope="session")
def ml_dtypes():
    """ml_dtypes (bfloat16 arrays), or a skip (a failure under CI)."""
    return require("ml_dtypes", "NPECA_REQUIRE_OPTIONAL")


@pytest.fixture(scope="session")
def torch():
    """PyTorch in float64-friendly single-threaded mode, or a skip (a failure under CI)."""
    mod = require("torch", "NPECA_REQUIRE_TORCH")
    mod.set_num_threads(1)
    return mod

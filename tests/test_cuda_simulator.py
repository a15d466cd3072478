"""Runs tests/cuda_sim on Numba's CUDA simulator in a fresh process (the simulator must be
switched on before numba is first imported, which this process has long done), and checks
the error path of backend="cuda" on a machine without a GPU."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require

HERE = Path(__file__).resolve().parent


@pytest.mark.slow
def test_cuda_kernels_on_the_simulator():
    require("numba.cuda", "NPECA_REQUIRE_OPTIONAL")
    env = dict(os.environ, NUMBA_ENABLE_CUDASIM="1")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(HERE / "cuda_sim")],
        capture_output=True, text=True, env=env, timeout=1800, cwd=HERE.parent)
    out = done.stdout + done.stderr
    assert done.returncode == 0, out[-4000:]
    passed = re.search(r"(\d+) passed", out)
    assert passed and int(passed.group(1)) >= 10, out[-2000:]
    assert "skipped" not in out and "error" not in out.lower().split("passed")[-1], out[-2000:]


@pytest.mark.skipif(shutil.which("nvidia-smi") is not None,
                    reason="a GPU driver is present: the error path cannot be observed")
def test_cuda_without_a_gpu_raises_backend_unavailable():
    code = (
        "import numpy as np, npeca\n"
        "try:\n"
        "    npeca.eca(np.ones((1, 4, 3)), np.ones(3), backend='cuda')\n"
        "except npeca.BackendUnavailableError as exc:\n"
        "    print('UNAVAILABLE', exc)\n"
        "y = npeca.eca(np.ones((1, 4, 3), dtype=np.float32), np.ones(3))\n"
        "print('AUTO', type(y).__module__)\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_ENABLE_CUDASIM"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    assert "UNAVAILABLE" in done.stdout
    assert ("GPU" in done.stdout and "NUMBA_ENABLE_CUDASIM" in done.stdout) or \
        "pip install 'npeca[cuda]'" in done.stdout, done.stdout
    assert "AUTO numpy" in done.stdout  # auto never picks CUDA for NumPy input

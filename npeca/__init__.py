"""npeca: a framework-free reference implementation of ECA (Efficient Channel Attention).

ECA (Wang et al., CVPR 2020, arXiv:1910.03151) pools each channel, runs a small 1-D
cross-correlation across channels, gates the result and rescales the input:

>>> import numpy as np, npeca
>>> x = np.random.default_rng(0).standard_normal((2, 16, 8, 8))
>>> k = npeca.kernel_size(16)
>>> npeca.eca(x, np.full(k, 0.1)).shape
(2, 16, 8, 8)

Importing npeca imports NumPy only; accelerated backends load on first use.
"""

from ._version import __version__
from .api import eca, eca_backward, eca_forward
from .errors import (
    BackendUnavailableError,
    DTypeError,
    NpecaError,
    ParameterError,
    ShapeError,
)
from .checkpoint import CheckpointError, load_eca_layers
from .kernel_size import kernel_size
from .layer import ECA
from .results import ECAForward, ECAGrads

__all__ = [
    "__version__",
    "eca",
    "eca_forward",
    "eca_backward",
    "kernel_size",
    "ECA",
    "load_eca_layers",
    "ECAForward",
    "ECAGrads",
    "NpecaError",
    "ShapeError",
    "ParameterError",
    "DTypeError",
    "BackendUnavailableError",
    "CheckpointError",
]

"""Golden test vectors: a versioned, self-checking suite any ECA backend can be verified
against, readable without npeca (the format is specified in docs/golden.md).

>>> import tempfile, pathlib
>>> from npeca import golden
>>> path = golden.generate(pathlib.Path(tempfile.mkdtemp()) / "g", progress=False)
>>> results = golden.verify(path, "numpy", progress=False)
>>> sorted({r.status for r in results})
['PASS']
"""

from .bounds import error_bounds
from .generate import build_case, generate
from .io import SCHEMA, SCHEMA_VERSION, GoldenIntegrityError, Suite, digest
from .verify import CaseResult, OutputResult, compare, format_table, to_json, verify

__all__ = ["generate", "verify", "Suite", "GoldenIntegrityError", "SCHEMA", "SCHEMA_VERSION",
           "CaseResult", "OutputResult", "compare", "format_table", "to_json", "build_case",
           "digest", "error_bounds"]

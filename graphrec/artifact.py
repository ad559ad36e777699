"""Old import path of ``graphrec.artifacts``, kept for one release."""

import warnings

from graphrec.artifacts.model_dir import (  # noqa: F401
    check_compatible,
    load_arrays,
    read_model_config,
    save_model,
)

warnings.warn("graphrec.artifact is now graphrec.artifacts", DeprecationWarning, stacklevel=2)

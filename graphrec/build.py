"""Old import path of ``graphrec.data.build``, kept for one release."""

import warnings

from graphrec.data.build import BUNDLED_DATASET, BuildConfig, build_graph  # noqa: F401

warnings.warn("graphrec.build is now graphrec.data (BuildConfig, build_graph)",
              DeprecationWarning, stacklevel=2)

"""Old import path of ``graphrec.serve``, kept for one release."""

import warnings

from graphrec.serve.recommender import Recommendation, Recommender  # noqa: F401

warnings.warn("graphrec.recommend is now graphrec.serve", DeprecationWarning, stacklevel=2)

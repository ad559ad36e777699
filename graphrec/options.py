"""The choices of every enumerated setting, in one module that needs neither torch nor
numpy: the library validates against these tuples and the command line offers them, so a
choice is written once (and ``graphrec --help`` stays fast). Also how a config dataclass's
defaults and field docstrings are read, for help texts."""

import ast
import dataclasses
import functools
import inspect
import textwrap

SPLIT_STRATEGIES = ("random", "temporal", "leave-one-out")
"""How build-graph splits each user's interactions (``graphrec.data.split.assign_folds``)."""
TEXT_PRECISIONS = ("auto", "float32", "bfloat16")
"""Text-encoder arithmetic; auto: bfloat16 on CPUs with native bfloat16 instructions."""
ITEM_INITS = ("text", "id", "text+id")
"""An item's layer-0 embedding: its text projected, a free id embedding, or their sum."""
COLD_STARTS = ("ridge", "two-sided", "bpr", "layer0")
"""How items without training edges are placed from their text (``graphrec.model.coldstart``):
ridge regression text -> final embedding over warm items, rescaled to warm norms; a linear
text head trained jointly by a BPR term; or the item's own text projection, rescaled."""
NEGATIVE_SAMPLERS = ("uniform", "popularity")
"""BPR negative samplers: uniform over items, or in proportion to (degree + 1)^alpha."""
LOSSES = ("bpr", "softmax")
"""Training losses: BPR against the hardest candidate, or a sampled softmax over every
candidate with a temperature (``graphrec.model.losses``)."""
LR_SCHEDULES = ("auto", "constant", "cosine")
"""Learning-rate schedules of training."""
PRECISIONS = ("float32", "bfloat16")
"""Precision of the CPU's sparse products in training."""
TAIL_SHAPES = ("degree", "flat")
"""How the tail boost is shared among tail items (``graphrec.popularity.tail_boost_weights``)."""
RETRIEVAL_INDEXES = ("exact", "ann", "auto")
"""Top-k retrieval when serving: exact products, a faiss ANN index, or ANN above a catalog
size (``graphrec.serve.recommender``)."""
MODEL_KINDS = ("lightgcn", "filter", "ensemble")
"""The model a run fits: TextLightGCN, the training-free graph filter, or the blend of the
two (graphrec.model.filter, graphrec.model.ensemble)."""


@functools.cache
def field_defaults(config: type) -> dict[str, object]:
    """Each field of the dataclass ``config`` and its default."""
    return {f.name: f.default for f in dataclasses.fields(config)}


@functools.cache
def field_docs(config: type) -> dict[str, str]:
    """Each field of the dataclass ``config`` and its docstring (the string literal below the
    field), white space folded: one source for the library's docs and the command's help."""
    body = ast.parse(textwrap.dedent(inspect.getsource(config))).body[0].body
    docs = {}
    for node, doc in zip(body, body[1:], strict=False):
        if (isinstance(node, ast.AnnAssign) and isinstance(doc, ast.Expr)
                and isinstance(doc.value, ast.Constant) and isinstance(doc.value.value, str)):
            docs[node.target.id] = " ".join(doc.value.value.split())
    return docs

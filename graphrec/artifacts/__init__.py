"""On-disk artefacts: the graph directory (build-graph) and the model directory (train,
add-items). Versioned, written atomically, no pickle."""

from graphrec.artifacts.graph_dir import GRAPH_FORMAT_VERSION, GraphData, load_graph, save_graph
from graphrec.artifacts.model_dir import (
    MODEL_FORMAT_VERSION,
    check_compatible,
    graph_identity,
    load_arrays,
    read_model_config,
    save_model,
)

__all__ = [
    "GRAPH_FORMAT_VERSION", "MODEL_FORMAT_VERSION", "GraphData", "check_compatible",
    "graph_identity", "load_arrays", "load_graph", "read_model_config", "save_graph",
    "save_model",
]

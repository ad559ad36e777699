"""graphrec: graph-based recommendation with text-initialised LightGCN.

Interactions become a bipartite user-item graph; item nodes start from BERT text embeddings;
LightGCN propagation; BPR training with popularity-debiased negatives.
"""

__version__ = "0.1.0"

"""The `graphrec` command line (cli.main)."""

import os

# Large CPU tensors (embedding tables, adjacency) on 2 MB transparent huge pages: fewer TLB
# misses in the sparse products' row gathers once a graph outgrows the CPU cache (about -15%
# per product at 10M interactions, experiments/RESULTS.md). PyTorch reads this at its first
# large allocation, so it is set before anything imports torch; THP_MEM_ALLOC_ENABLE=0 in
# the environment turns it off.
os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")

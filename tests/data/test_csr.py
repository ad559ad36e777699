"""graphrec.data.csr: building a CSR from pairs, gathering rows."""

from __future__ import annotations

import numpy as np
import torch

from graphrec.data import Csr
from graphrec.data.csr import gather_rows
from tests.helpers import csr


def test_csr_from_pairs() -> None:
    csr = Csr.from_pairs(np.array([2, 0, 2, 0]), np.array([5, 3, 1, 0]), num_rows=4)
    assert csr.indptr.tolist() == [0, 2, 2, 4, 4]
    assert [csr.row(u).tolist() for u in range(4)] == [[0, 3], [], [1, 5], []]
    assert csr.nnz == 4 and csr.row_index().tolist() == [0, 0, 2, 2]


def test_gather_rows():
    c = csr([[1, 2], [], [0, 4, 5], [3]])
    local, cols = gather_rows(torch.from_numpy(c.indptr), torch.from_numpy(c.indices),
                              torch.tensor([3, 1, 2, 0]))
    assert local.tolist() == [0, 2, 2, 2, 3, 3]
    assert cols.tolist() == [3, 0, 4, 5, 1, 2]

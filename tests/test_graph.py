"""graphrec.graph: normalised adjacency against a dense reference, statistics, export."""

from __future__ import annotations

from pathlib import Path

import networkx as nx
import numpy as np
import pytest
import torch

from graphrec.data import Csr
from graphrec.graph import (
    BALANCE_ABOVE,
    chunk_imbalance,
    edge_index,
    graph_statistics,
    item_node,
    normalized_adjacency,
    normalized_bipartite,
    propagation_adjacency,
    thread_balanced_order,
    to_networkx,
)
from tests.helpers import dense_adjacency, random_graph


@pytest.mark.parametrize("seed", range(3))
def test_normalized_adjacency_matches_dense(seed: int) -> None:
    users, items, nu, ni = random_graph(seed, 12, 9, 30, isolated_last=True)
    adj = normalized_adjacency(users, items, nu, ni)
    assert adj.layout == torch.sparse_csr and adj.dtype == torch.float32
    assert adj.shape == (nu + ni, nu + ni)
    ref = dense_adjacency(users, items, nu, ni)
    np.testing.assert_allclose(adj.to_dense().numpy(), ref, atol=1e-6)
    crow = adj.crow_indices().numpy()
    assert crow[nu] == crow[nu - 1]  # the isolated user's row is empty
    assert crow[-1] == crow[-2]  # ...and the isolated item's


@pytest.mark.parametrize("seed", range(3))
def test_normalized_bipartite_blocks_match_dense(seed: int) -> None:
    users, items, nu, ni = random_graph(seed, 12, 9, 30, isolated_last=True)
    r, rt = normalized_bipartite(users, items, nu, ni)
    assert r.layout == rt.layout == torch.sparse_csr
    assert r.shape == (nu, ni) and rt.shape == (ni, nu)
    ref = dense_adjacency(users, items, nu, ni)
    np.testing.assert_allclose(r.to_dense().numpy(), ref[:nu, nu:], atol=1e-6)
    np.testing.assert_allclose(rt.to_dense().numpy(), ref[nu:, :nu], atol=1e-6)
    assert r.crow_indices()[-1] == r.crow_indices()[-2]  # isolated user: empty row
    assert rt.crow_indices()[-1] == rt.crow_indices()[-2]  # isolated item: empty row
    # Column indices sorted within each row (what the CSR kernels expect).
    for m in (r, rt):
        crow, col = m.crow_indices().numpy(), m.col_indices().numpy()
        for k in range(len(crow) - 1):
            row = col[crow[k]:crow[k + 1]]
            assert (np.diff(row) > 0).all()


def test_blocks_use_32_bit_indices() -> None:
    # Half the index bytes per product; cuSPARSE would copy 64-bit indices to 32 bits.
    r, rt = normalized_bipartite(*random_graph(0, 12, 9, 30, isolated_last=True))
    for m in (r, rt):
        assert m.crow_indices().dtype == m.col_indices().dtype == torch.int32


def test_known_answer_small_graph() -> None:
    # user 0 - items 0, 1; user 1 - item 0. Degrees: u0 2, u1 1, i0 2, i1 1.
    r, _ = normalized_bipartite(np.array([0, 0, 1]), np.array([0, 1, 0]), 2, 2)
    expected = [[1 / 2, 1 / np.sqrt(2)], [1 / np.sqrt(2), 0.0]]
    np.testing.assert_allclose(r.to_dense().numpy(), expected, atol=1e-7)


def test_chunk_imbalance_against_counting_by_hand() -> None:
    degrees = np.array([5, 1, 1, 1, 1, 1, 0])  # 10 nonzeros; 3 threads take rows 3, 3, 1
    assert chunk_imbalance(degrees, 3) == pytest.approx(7 * 3 / 10)
    assert chunk_imbalance(degrees, 2) == pytest.approx(8 * 2 / 10)  # rows 4 and 3
    assert chunk_imbalance(degrees, 1) == 1.0
    assert chunk_imbalance(np.zeros(4, dtype=np.int64), 2) == 1.0


@pytest.mark.parametrize("threads", [2, 3, 4, 8])
def test_popularity_ordered_rows_are_dealt_to_threads_evenly(threads: int) -> None:
    """Degrees falling with the id (ids in popularity order) put most nonzeros in the first
    thread's rows; the returned order is a permutation under which no thread's share
    exceeds the threshold."""
    degrees = np.round(1000 / np.arange(1, 5001) ** 0.7).astype(np.int64)
    assert chunk_imbalance(degrees, threads) > BALANCE_ABOVE
    order = thread_balanced_order(degrees, threads)
    assert order is not None and sorted(order.tolist()) == list(range(len(degrees)))
    assert chunk_imbalance(degrees[order], threads) <= BALANCE_ABOVE


def test_balanced_rows_keep_their_order() -> None:
    rng = np.random.default_rng(0)
    degrees = rng.integers(1, 50, size=10_000)  # no trend: every range has an even share
    assert thread_balanced_order(degrees, 2) is None
    assert thread_balanced_order(np.arange(100)[::-1], 1) is None  # one thread: no split


def test_degrees_with_the_threads_period_fall_back_to_a_random_order() -> None:
    """Dealing rows k, k + T, ... to thread k keeps a period-T pattern on one thread; the
    seeded random order balances it."""
    degrees = np.tile([100, 1], 2000)
    assert chunk_imbalance(degrees, 2) == pytest.approx(1.0)  # own order even...
    ramp = np.tile([100, 1], 2000) * np.repeat([3, 1], 2000)  # ...this one is not
    order = thread_balanced_order(ramp, 2)
    assert order is not None
    assert chunk_imbalance(ramp[order], 2) <= BALANCE_ABOVE


@pytest.mark.parametrize("threads", [1, 2, 3])
def test_propagation_adjacency_keeps_every_node_at_its_position(threads: int) -> None:
    """With a node order, entry (p, q) of r is entry (users[p], items[q]) of the plain
    block, and rt stays r's transpose."""
    rng = np.random.default_rng(threads)
    pu, pi = 1 / np.arange(1, 41) ** 1.2, 1 / np.arange(1, 31) ** 1.2
    keys = np.unique(rng.choice(40, 400, p=pu / pu.sum()) * 30
                     + rng.choice(30, 400, p=pi / pi.sum()))
    users, items = keys // 30, keys % 30
    adj = propagation_adjacency(users, items, 40, 30, threads)
    plain_r, _ = normalized_bipartite(users, items, 40, 30)
    if threads == 1:
        assert adj.order is None
        torch.testing.assert_close(adj.r.to_dense(), plain_r.to_dense())
        return
    assert adj.order is not None and adj.order.users is not None
    uo = adj.order.users if adj.order.users is not None else torch.arange(40)
    io = adj.order.items if adj.order.items is not None else torch.arange(30)
    torch.testing.assert_close(adj.r.to_dense(), plain_r.to_dense()[uo][:, io])
    torch.testing.assert_close(adj.rt.to_dense(), adj.r.to_dense().T)
    assert (adj.order.users[adj.order.user_positions] == torch.arange(40)).all()
    # Better balanced than the own order (a graph this small cannot be balanced fully).
    assert chunk_imbalance(np.diff(adj.r.crow_indices().numpy()), threads) < chunk_imbalance(
        np.diff(plain_r.crow_indices().numpy()), threads)


def test_edge_index_and_item_node() -> None:
    assert item_node(3, 10) == 13
    ei = edge_index(np.array([0, 2]), np.array([1, 0]), num_users=3)
    assert ei.dtype == torch.long
    assert ei.tolist() == [[0, 2, 4, 3], [4, 3, 0, 2]]


def test_graph_statistics_hand_made() -> None:
    # Users 0-3, items 0-4. One component {u0, u1, u2, i0, i1, i2}; u3, i3, i4 isolated.
    # Item degrees: i0 3, i1 1, i2 1 -> the head (20% of 5 items = 1 item) holds 3 of 5.
    users, items = np.array([0, 0, 1, 2, 2]), np.array([0, 1, 0, 2, 0])
    stats = graph_statistics(users, items, num_users=4, num_items=5)
    assert stats["num_edges"] == 5
    assert stats["density"] == pytest.approx(5 / 20)
    assert stats["components"] == 4
    assert stats["largest_component_nodes"] == 6
    assert stats["largest_component_share"] == pytest.approx(6 / 9)
    assert stats["head_items"] == 1
    assert stats["head_interaction_share"] == pytest.approx(3 / 5)
    assert stats["users_without_train"] == 1 and stats["items_without_train"] == 2
    assert stats["user_degree"]["p100"] == 2 and stats["user_degree"]["p0"] == 0
    assert stats["item_degree"]["p50"] == 1


def test_graph_statistics_two_components() -> None:
    stats = graph_statistics(np.array([0, 1]), np.array([0, 1]), 2, 2)
    assert stats["components"] == 2 and stats["largest_component_nodes"] == 2
    assert stats["head_interaction_share"] == pytest.approx(0.5)


def small_csr():
    # u:a - i:x, i:y; u:b - i:y; item z has no edge.
    train = Csr.from_pairs(np.array([0, 0, 1]), np.array([0, 1, 1]), 2)
    return train, np.array(["a", "b"]), np.array(["x", "y", "z"]), ["X", "Y & <Z>", ""]


def test_to_networkx() -> None:
    train, users, items, titles = small_csr()
    g = to_networkx(train, users, items, titles)
    assert g.number_of_nodes() == 5 and g.number_of_edges() == 3
    assert {frozenset(e) for e in g.edges()} == {
        frozenset(e) for e in (("u:a", "i:x"), ("u:a", "i:y"), ("u:b", "i:y"))}
    assert g.nodes["u:a"] == {"kind": "user", "raw_id": "a"}
    assert g.nodes["i:y"] == {"kind": "item", "raw_id": "y", "title": "Y & <Z>"}
    assert g.degree("i:z") == 0


@pytest.mark.parametrize("fmt", ["graphml", "gexf"])
def test_export_round_trip(tmp_path: Path, fmt: str) -> None:
    train, users, items, titles = small_csr()
    g = to_networkx(train, users, items, titles)
    path = tmp_path / f"g.{fmt}"
    (nx.write_graphml if fmt == "graphml" else nx.write_gexf)(g, path)
    back = nx.read_graphml(path) if fmt == "graphml" else nx.read_gexf(path)
    assert set(back.nodes) == set(g.nodes)
    assert {frozenset(e) for e in back.edges} == {frozenset(e) for e in g.edges}
    for node, attrs in g.nodes(data=True):
        for key in ("kind", "raw_id", "title"):
            if key in attrs:
                assert back.nodes[node][key] == attrs[key]


@pytest.mark.parametrize("seed", range(6))
def test_component_sizes_match_networkx(seed: int) -> None:
    import networkx as nx

    from graphrec.graph import component_sizes

    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 300))
    e = int(rng.integers(0, 2 * n))
    src, dst = rng.integers(0, n, e), rng.integers(0, n, e)
    if seed == 0:  # a long path: the slowest case for label propagation
        src, dst = np.arange(n - 1)[::-1], np.arange(1, n)[::-1]
    g = nx.Graph()
    g.add_nodes_from(range(n))
    g.add_edges_from(zip(src.tolist(), dst.tolist(), strict=True))
    expected = sorted((len(c) for c in nx.connected_components(g)), reverse=True)
    assert component_sizes(src, dst, n) == expected

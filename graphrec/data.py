"""Id maps, interaction arrays, CSR adjacency lists and train/valid/test splits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Csr:
    """Per-user item lists in compressed sparse row form.

    ``indptr``: [num_users + 1] int64; ``indices``: [nnz] int64 item indices, sorted within
    each row. Row ``u`` holds ``indices[indptr[u]:indptr[u + 1]]``.
    """

    indptr: np.ndarray
    indices: np.ndarray

    @property
    def num_rows(self) -> int:
        return len(self.indptr) - 1

    @property
    def nnz(self) -> int:
        return int(self.indptr[-1])

    def row_lengths(self) -> np.ndarray:
        """[num_rows] int64 number of items per row."""
        return np.diff(self.indptr)

    def row(self, u: int) -> np.ndarray:
        return self.indices[self.indptr[u] : self.indptr[u + 1]]

    def row_index(self) -> np.ndarray:
        """[nnz] int64 row of each entry."""
        return np.repeat(np.arange(self.num_rows, dtype=np.int64), self.row_lengths())

    @classmethod
    def from_pairs(cls, rows: np.ndarray, cols: np.ndarray, num_rows: int) -> Csr:
        """Build from parallel [nnz] int arrays; duplicate pairs are kept as given."""
        rows = np.asarray(rows, dtype=np.int64)
        cols = np.asarray(cols, dtype=np.int64)
        order = np.lexsort((cols, rows))
        counts = np.bincount(rows, minlength=num_rows)
        indptr = np.zeros(num_rows + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        return cls(indptr=indptr, indices=cols[order])


def _unique_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique raw ids (numeric order when every id is an integer) and the inverse."""
    try:
        as_int = values.astype(np.int64)
    except (ValueError, OverflowError):
        uniq, inverse = np.unique(values, return_inverse=True)
        return uniq.astype(str), inverse.astype(np.int64)
    # Integer ids keep numeric order, so LightGCN files keep index == raw id.
    uniq, first, inverse = np.unique(as_int, return_index=True, return_inverse=True)
    if len(uniq) != len(np.unique(values)):
        # "01" and "1" are different ids in the input; do not merge them.
        uniq, inverse = np.unique(values, return_inverse=True)
        return uniq.astype(str), inverse.astype(np.int64)
    # The ids as spelled in the input ("007" stays "007"), in numeric order.
    return values[first].astype(str), inverse.astype(np.int64)


@dataclass
class IdMap:
    """Raw id (str) <-> contiguous index. ``ids``: [n] str, index k holds the raw id of k."""

    ids: np.ndarray

    def __post_init__(self) -> None:
        self._lookup: dict[str, int] | None = None

    def __len__(self) -> int:
        return len(self.ids)

    @classmethod
    def build(cls, values: np.ndarray) -> tuple[IdMap, np.ndarray]:
        """Map raw ids to indices; returns the map and [n] int64 indices of ``values``."""
        uniq, inverse = _unique_ids(np.asarray(values, dtype=str))
        return cls(uniq), inverse

    def get(self, raw: str) -> int | None:
        """Index of a raw id, or None when unknown."""
        if self._lookup is None:
            self._lookup = {str(r): k for k, r in enumerate(self.ids)}
        return self._lookup.get(str(raw).strip())

    def subset(self, keep: np.ndarray) -> tuple[IdMap, np.ndarray]:
        """Keep indices where ``keep`` [n] bool is True; returns the new map and old->new
        index array ([n] int64, -1 for dropped)."""
        remap = np.full(len(self.ids), -1, dtype=np.int64)
        remap[keep] = np.arange(int(keep.sum()), dtype=np.int64)
        return IdMap(self.ids[keep]), remap


@dataclass
class Interactions:
    """Interactions in index space: ``users``, ``items`` [n] int64, optional ``ratings``,
    ``timestamps`` [n] float64 and ``fold`` [n] int8 (a split fixed by the input)."""

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    fold: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.users)

    def take(self, mask_or_index: np.ndarray) -> Interactions:
        def pick(a: np.ndarray | None) -> np.ndarray | None:
            return None if a is None else a[mask_or_index]

        return Interactions(self.users[mask_or_index], self.items[mask_or_index],
                            pick(self.ratings), pick(self.timestamps), pick(self.fold))


def deduplicate(inter: Interactions, num_items: int) -> tuple[Interactions, int]:
    """Keep one row per (user, item): the latest by timestamp, else the last in file order.

    Returns the deduplicated interactions and the number of rows dropped.
    """
    key = inter.users * num_items + inter.items
    when = inter.timestamps if inter.timestamps is not None else np.zeros(len(key))
    # lexsort is stable, so equal timestamps keep file order and the later row wins.
    order = np.lexsort((when, key))
    sorted_key = key[order]
    last = np.ones(len(order), dtype=bool)
    last[:-1] = sorted_key[1:] != sorted_key[:-1]
    keep = np.sort(order[last])
    return inter.take(keep), len(key) - len(keep)


def k_core(inter: Interactions, num_users: int, num_items: int,
           min_user: int, min_item: int) -> Interactions:
    """Iteratively drop users with < ``min_user`` and items with < ``min_item`` interactions."""
    if min_user <= 1 and min_item <= 1:
        return inter
    keep = np.ones(len(inter), dtype=bool)
    while True:
        u_deg = np.bincount(inter.users[keep], minlength=num_users)
        i_deg = np.bincount(inter.items[keep], minlength=num_items)
        new_keep = keep & (u_deg[inter.users] >= min_user) & (i_deg[inter.items] >= min_item)
        if new_keep.sum() == keep.sum():
            return inter.take(keep)
        keep = new_keep


# Fold codes of a split.
TRAIN, VALID, TEST = 0, 1, 2
SPLIT_STRATEGIES = ("random", "temporal", "leave-one-out")


def _rank_within_user(users: np.ndarray, sort_key: np.ndarray,
                      tie_break: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For each row: its 0-based rank among the user's rows by ``sort_key``, then
    ``tie_break`` (both descending, so rank 0 is the row that goes to test first) and the
    user's row count."""
    order = np.lexsort((-tie_break, -sort_key, users))
    counts = np.bincount(users)
    starts = np.cumsum(counts) - counts
    rank = np.empty(len(users), dtype=np.int64)
    rank[order] = np.arange(len(users)) - starts[users[order]]
    return rank, counts[users]


def assign_folds(
    inter: Interactions,
    strategy: str = "random",
    test_ratio: float = 0.2,
    valid_ratio: float = 0.1,
    seed: int = 0,
) -> np.ndarray:
    """Per-user split into TRAIN / VALID / TEST; returns [n] int8 fold codes.

    ``random``: a random ``test_ratio`` (and ``valid_ratio``) of each user's rows.
    ``temporal``: each user's latest rows by timestamp go to test, the ones before to valid.
    ``leave-one-out``: each user's latest row (random when there are no timestamps) to test,
    the one before to valid when ``valid_ratio`` > 0. Every user keeps at least one training
    row.
    """
    n = len(inter)
    rng = np.random.default_rng(seed)
    noise = rng.random(n)
    if strategy == "random":
        key = noise
    elif strategy in ("temporal", "leave-one-out"):
        if inter.timestamps is None:
            if strategy == "temporal":
                raise ValueError("temporal split needs timestamps")
            key = noise
        else:
            # Latest first; the noise only breaks ties (as a second sort key: added to the
            # time it would reorder timestamps closer together than the noise).
            key = inter.timestamps
    else:
        raise ValueError(f"unknown split strategy {strategy!r}")
    rank, count = _rank_within_user(inter.users, key, noise)
    if strategy == "leave-one-out":
        n_test = np.where(count >= 2, 1, 0)
        n_valid = np.where((count >= 3) & (valid_ratio > 0), 1, 0)
    else:
        n_test = np.floor(count * test_ratio + 0.5).astype(np.int64)
        n_valid = np.floor(count * valid_ratio + 0.5).astype(np.int64)
        # Keep at least one training row: shrink validation first, then test.
        over = np.maximum(n_test + n_valid - (count - 1), 0)
        cut_valid = np.minimum(over, n_valid)
        n_valid = n_valid - cut_valid
        n_test = np.maximum(n_test - (over - cut_valid), 0)
    fold = np.full(n, TRAIN, dtype=np.int8)
    fold[rank < n_test] = TEST
    fold[(rank >= n_test) & (rank < n_test + n_valid)] = VALID
    return fold


def choose_cold_items(num_items: int, fraction: float, seed: int) -> np.ndarray:
    """[num_items] bool: a random ``fraction`` of the items, to be held out of training."""
    cold = np.zeros(num_items, dtype=bool)
    n_cold = int(round(num_items * fraction))
    if n_cold:
        rng = np.random.default_rng([seed, 7919])
        cold[rng.choice(num_items, size=n_cold, replace=False)] = True
    return cold


def cold_item_folds(items: np.ndarray, cold: np.ndarray, test_ratio: float,
                    valid_ratio: float, seed: int) -> np.ndarray:
    """Fold of each interaction of a cold item: the cold items are divided between
    validation and test in proportion ``valid_ratio : test_ratio``, whole items at a time,
    so no cold item is seen during model selection and scored again at test."""
    cold_ids = np.flatnonzero(cold)
    rng = np.random.default_rng([seed, 104729])
    share = valid_ratio / (valid_ratio + test_ratio) if valid_ratio + test_ratio > 0 else 0.0
    n_valid = int(round(len(cold_ids) * share))
    item_fold = np.full(len(cold), TRAIN, dtype=np.int8)
    perm = rng.permutation(cold_ids)
    item_fold[perm[:n_valid]] = VALID
    item_fold[perm[n_valid:]] = TEST
    return item_fold[items]

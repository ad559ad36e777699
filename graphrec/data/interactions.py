"""Raw ids to contiguous indices, interaction arrays in index space, de-duplication, k-core."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _unique_ids(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted unique raw ids (numeric order when every id is an integer) and the inverse.
    ``values``: [n] str, or integers (a typed input's column: only the unique ids become
    strings)."""
    if values.dtype.kind in "iu":
        uniq, inverse = np.unique(values, return_inverse=True)
        return uniq.astype(str), inverse.astype(np.int64)
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
        values = np.asarray(values)
        uniq, inverse = _unique_ids(values if values.dtype.kind in "iu"
                                    else values.astype(str))
        return cls(uniq), inverse

    def get(self, raw: str) -> int | None:
        """Index of a raw id, or None when unknown."""
        if self._lookup is None:
            self._lookup = {str(r): k for k, r in enumerate(self.ids)}
        return self._lookup.get(str(raw).strip())

    def grow(self, values: np.ndarray) -> tuple[IdMap, np.ndarray]:
        """This map with the raw ids of ``values`` it lacks appended, in order of first
        appearance (every existing index keeps its id), and [n] int64 indices of ``values``.
        One dictionary lookup per distinct id, none per row."""
        uniq, first, inverse = np.unique(np.asarray(values, dtype=str), return_index=True,
                                         return_inverse=True)
        self.get("")  # builds the lookup
        found = np.fromiter((self._lookup.get(u, -1) for u in uniq.tolist()), np.int64,
                            len(uniq))
        new = np.flatnonzero(found < 0)
        new = new[np.argsort(first[new], kind="stable")]
        found[new] = len(self) + np.arange(len(new))
        grown = IdMap(np.concatenate([self.ids, uniq[new]]).astype(str)) if len(new) else self
        return grown, found[inverse.reshape(-1)]

    def subset(self, keep: np.ndarray) -> tuple[IdMap, np.ndarray]:
        """Keep indices where ``keep`` [n] bool is True; returns the new map and old->new
        index array ([n] int64, -1 for dropped)."""
        remap = np.full(len(self.ids), -1, dtype=np.int64)
        remap[keep] = np.arange(int(keep.sum()), dtype=np.int64)
        return IdMap(self.ids[keep]), remap


class IdGrower:
    """Raw ids to contiguous indices one chunk of a log at a time (no Python per row; per
    distinct id only for ids that are not integers), numbered as :meth:`IdMap.build` numbers
    the whole log once :meth:`finish` renumbers them.

    Integer ids are kept as a sorted int64 array with each id's provisional index; the first
    chunk that holds an id that is not an integer turns every id into its text (integers as
    their decimal spelling) and a dictionary. :meth:`finish` gives the map (integer ids in
    numeric order, else text order) and the array that renumbers provisional indices.
    """

    def __init__(self) -> None:
        self._ints = np.empty(0, dtype=np.int64)  # sorted ids, integer mode
        self._codes = np.empty(0, dtype=np.int64)  # their provisional indices
        self._lookup: dict[str, int] | None = None  # text mode
        self._names: list[str] = []  # text mode: ids by provisional index
        self._table: np.ndarray | None = None  # id -> provisional index, small integer ids
        self.size = 0

    def add(self, values: np.ndarray) -> np.ndarray:
        """[n] int64 provisional indices of ``values`` ([n] integers or str), new ids added."""
        values = np.asarray(values)
        if self._lookup is None and values.dtype.kind in "iu":
            return self._add_ints(values.astype(np.int64, copy=False))
        if self._lookup is None:
            self._to_text()
        return self._add_text(values.astype(str))

    def _add_ints(self, values: np.ndarray) -> np.ndarray:
        if not len(values):
            return np.empty(0, dtype=np.int64)
        lo, hi = int(values.min()), int(values.max())
        if len(self._ints):  # the table must hold the ids seen before too
            lo, hi = min(lo, int(self._ints[0])), max(hi, int(self._ints[-1]))
        if lo >= 0 and hi < max(4 * (self.size + len(values)), 1 << 16):
            return self._add_dense(values, hi)
        self._table = None  # ids too sparse (or negative) for a table: sort each chunk
        uniq, inverse = np.unique(values, return_inverse=True)
        pos = np.searchsorted(self._ints, uniq)
        known = pos < len(self._ints)
        known[known] = self._ints[pos[known]] == uniq[known]
        codes = np.empty(len(uniq), dtype=np.int64)
        codes[known] = self._codes[pos[known]]
        new = ~known
        codes[new] = self._insert(uniq[new])
        return codes[inverse.reshape(-1)]

    def _add_dense(self, values: np.ndarray, hi: int) -> np.ndarray:
        """Ids that are small non-negative integers: looked up in a table indexed by id
        (one gather per row, no sort)."""
        table = self._table
        if table is None or len(table) <= hi:
            grown = np.full(max(hi + 1, 2 * (0 if table is None else len(table))), -1,
                            dtype=np.int64)
            grown[self._ints] = self._codes
            self._table = table = grown
        out = table[values]
        miss = out < 0
        if miss.any():
            new = np.unique(values[miss])
            table[new] = self._insert(new)
            out[miss] = table[values[miss]]
        return out

    def _insert(self, new: np.ndarray) -> np.ndarray:
        """Provisional indices for ``new`` (sorted ids not seen before), kept in order."""
        codes = self.size + np.arange(len(new))
        at = np.searchsorted(self._ints, new)
        self._ints = np.insert(self._ints, at, new)
        self._codes = np.insert(self._codes, at, codes)
        self.size += len(new)
        return codes

    def _to_text(self) -> None:
        names = np.empty(self.size, dtype=object)
        names[self._codes] = self._ints.astype(str)
        self._names = names.tolist()
        self._lookup = {name: k for k, name in enumerate(self._names)}
        self._ints = self._codes = np.empty(0, dtype=np.int64)
        self._table = None

    def _add_text(self, values: np.ndarray) -> np.ndarray:
        uniq, inverse = np.unique(values, return_inverse=True)
        lookup = self._lookup
        found = np.fromiter((lookup.get(u, -1) for u in uniq.tolist()), np.int64, len(uniq))
        for k in np.flatnonzero(found < 0).tolist():
            name = str(uniq[k])
            found[k] = lookup[name] = len(self._names)
            self._names.append(name)
        self.size = len(self._names)
        return found[inverse.reshape(-1)]

    def finish(self) -> tuple[IdMap, np.ndarray]:
        """The map, and [size] int64: the final index of each provisional index."""
        remap = np.empty(self.size, dtype=np.int64)
        if self._lookup is None:
            remap[self._codes] = np.arange(self.size)
            return IdMap(self._ints.astype(str)), remap
        # The whole log's rule on its distinct ids (numeric order when all are integers).
        ids, remap = _unique_ids(np.asarray(self._names, dtype=str))
        return IdMap(ids), remap


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
    n = len(inter)
    # One stable sort by pair: a pair's rows are then together, in file order. (Temporaries
    # are freed as soon as they are used: at 100M rows each is 800 MB.)
    key = inter.users * num_items + inter.items
    order = np.argsort(key, kind="stable")
    key = key[order]
    last = np.ones(n, dtype=bool)  # the last row of each pair's run
    np.not_equal(key[1:], key[:-1], out=last[:-1])
    del key
    if inter.timestamps is not None and not last.all():
        # Within each run the latest row wins, ties to the later in file order: the last
        # row of the run whose time equals the run's maximum.
        times = inter.timestamps[order]
        ends = np.flatnonzero(last)
        starts = np.concatenate([[0], ends[:-1] + 1])
        latest = np.maximum.reduceat(times, starts)
        candidate = times == np.repeat(latest, ends - starts + 1)
        del times, latest, starts
        # Index of each run's last candidate: the running maximum of candidate positions,
        # read at the run's end.
        at = np.arange(n)
        at[~candidate] = -1
        del candidate
        np.maximum.accumulate(at, out=at)
        pick = at[ends]
        del at, ends
        last[:] = False
        last[pick] = True
        del pick
    keep = order[last]
    del order, last
    keep.sort()
    return inter.take(keep), n - len(keep)


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

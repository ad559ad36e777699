"""BPR triples (user, positive item, negative item), vectorised.

Negatives are drawn uniformly or in proportion to (training degree + 1)^alpha among items that
have training interactions (items held out of training are unknown to the trainer). A user's
own training positives are never returned as negatives: collisions are redrawn.

Hard negatives (dynamic negative sampling, Zhang et al., SIGIR 2013): each triple gets K
candidates from the sampler and trains on the one the current model scores highest
(:func:`hardest`). A drawn negative is most often an item the user's embedding already
scores far below the positive, whose BPR gradient is nearly zero; the hardest of K carries
most of the signal.
"""

from __future__ import annotations

import torch
from torch import Tensor

from graphrec.options import NEGATIVE_SAMPLERS

DRAW_CHUNK = 2**24
"""Negatives drawn per call of the redraw loop in an epoch (about 0.5 GB of temporaries)."""
HARDEST_CHUNK = 8192
"""Triples scored at a time when choosing the hardest candidate."""
FILTER_BITS_PER_KEY = 8
"""Size of the membership pre-filter: about 7% of non-interactions pass it (at 10M
interactions 16 MB, which stays in cache where the 80 MB of sorted keys do not)."""
_HASH_USER, _HASH_ITEM = 0x9E3779B1, 0x85EBCA77  # odd multipliers, < 2^32


def alias_table(probs: Tensor) -> tuple[Tensor, Tensor]:
    """Walker's alias table for drawing from ``probs`` [N] (non-negative, positive sum).

    Returns (accept [N] float32, alias [N] int64): draw a column k uniformly, keep k with
    probability accept[k], else take alias[k]. Column k then yields item j with probability
    (accept[j] if k == j) + (1 - accept[k] if alias[k] == j), and the columns' shares add up
    to probs (Vose's construction, O(N)); a draw costs two random numbers and two lookups
    instead of a binary search over the cumulative distribution (torch.multinomial).
    """
    p = probs.detach().double().cpu()
    scaled = (p * (len(p) / p.sum())).tolist()
    accept, alias = [1.0] * len(p), list(range(len(p)))
    small = [k for k, q in enumerate(scaled) if q < 1.0]
    large = [k for k, q in enumerate(scaled) if q >= 1.0]
    while small and large:
        s, big = small.pop(), large[-1]
        accept[s], alias[s] = scaled[s], big
        scaled[big] -= 1.0 - scaled[s]
        if scaled[big] < 1.0:
            small.append(large.pop())
    # What is left holds ~1 of mass up to rounding: kept whole, unless it has none at all.
    top = int(torch.argmax(p))
    for k in small:
        accept[k], alias[k] = (1.0, k) if p[k] > 0 else (0.0, top)
    return (torch.tensor(accept, dtype=torch.float32, device=probs.device),
            torch.tensor(alias, dtype=torch.long, device=probs.device))


class BPRSampler:
    """Draws BPR batches over the training interactions.

    Args:
        users, items: [E] int64 training interactions (deduplicated).
        num_items: catalog size I.
        negatives: "uniform" or "popularity".
        alpha: exponent of the popularity distribution p(i) ~ (deg_i + 1)^alpha.
        share: the share of negatives drawn from the popularity distribution, the rest
            uniformly ("popularity" only): each draw comes from the mixture
            share * popularity + (1 - share) * uniform.
        device: where the sampled indices live.
    """

    def __init__(self, users: Tensor, items: Tensor, num_items: int, negatives: str = "uniform",
                 alpha: float = 0.5, device: torch.device | str = "cpu", max_redraws: int = 50,
                 share: float = 1.0):
        if negatives not in NEGATIVE_SAMPLERS:
            raise ValueError(f"negatives {negatives!r}: expected one of {NEGATIVE_SAMPLERS}")
        self.device = torch.device(device)
        self.num_items = num_items
        self.max_redraws = max_redraws
        # Sorted (user, item) keys: membership test by binary search, no per-user sets. The
        # interactions are kept in key order, so that negatives drawn for them in that order
        # look up neighbouring keys one after the other (epoch).
        self.keys = torch.sort(users.to(self.device, torch.long) * num_items
                               + items.to(self.device, torch.long)).values
        self.users = torch.div(self.keys, num_items, rounding_mode="floor")
        self.items = self.keys - self.users * num_items
        degree = torch.bincount(self.items, minlength=num_items).double()
        warm = degree > 0
        if negatives == "uniform":
            probs = warm.double()
        else:
            probs = torch.where(warm, (degree + 1.0).pow(alpha), torch.zeros_like(degree))
            if share < 1.0:
                probs = share * probs / probs.sum() + (1.0 - share) * warm / warm.sum()
        self.probs = (probs / probs.sum()).float()
        self.uniform = negatives == "uniform"
        self.warm_items = torch.nonzero(warm).flatten()
        if not self.uniform:
            self.accept, self.alias = alias_table(self.probs)
        self._build_filter()
        self.focused: Tensor | None = None
        """Positions (in key order) of the interactions an epoch goes over; None: all."""

    def focus(self, users: Tensor, items: Tensor) -> None:
        """Epochs go over these training interactions only ([n] int64 each, every pair a
        training interaction); negatives still exclude all of a user's positives."""
        q = users.to(self.device, torch.long) * self.num_items + items.to(self.device, torch.long)
        pos = torch.searchsorted(self.keys, q).clamp_(max=max(len(self.keys) - 1, 0))
        if len(q) and not bool((self.keys[pos] == q).all()):
            raise ValueError("focus pairs must be training interactions")
        self.focused = torch.unique(pos)

    def _build_filter(self) -> None:
        """A one-hash bitmap of the interactions: a pair whose bit is clear is not one. Most
        draws end there; only the ~7% that pass go on to the binary search."""
        num_users = int(self.users.max()) + 1 if len(self.users) else 0
        self.filter = None
        if max(num_users, self.num_items) >= 2**30:  # the hash below would overflow int64
            return
        self.filter_mask = (1 << max(10, (FILTER_BITS_PER_KEY * len(self.keys) - 1)
                                     .bit_length())) - 1
        hit = torch.zeros(self.filter_mask + 1, dtype=torch.bool, device=self.device)
        hit[self._hash(self.users, self.items)] = True
        weights = torch.tensor([1, 2, 4, 8, 16, 32, 64, 128], dtype=torch.uint8,
                               device=self.device)
        self.filter = (hit.view(-1, 8).to(torch.uint8) * weights).sum(1, dtype=torch.uint8)

    def passes_filter(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] bool: the pair's bit is set (every interaction's is; ~7% of the others')."""
        h = self._hash(users, items)
        return ((self.filter[h >> 3] >> (h & 7).to(torch.uint8)) & 1).bool()

    def _hash(self, users: Tensor, items: Tensor) -> Tensor:
        return (users * _HASH_USER + items * _HASH_ITEM) & self.filter_mask

    def _draw(self, n: int, generator: torch.Generator) -> Tensor:
        if self.uniform:
            pick = torch.randint(len(self.warm_items), (n,), device=self.device,
                                 generator=generator)
            return self.warm_items[pick]
        column = torch.randint(self.num_items, (n,), device=self.device, generator=generator)
        keep = torch.rand(n, device=self.device, generator=generator) < self.accept[column]
        return torch.where(keep, column, self.alias[column])

    def is_positive(self, users: Tensor, items: Tensor) -> Tensor:
        """[B] bool: whether each (user, item) pair is a training interaction."""
        if self.filter is None:
            return self._search(users, items)
        passed = torch.nonzero(self.passes_filter(users, items)).flatten()
        out = torch.zeros(len(users), dtype=torch.bool, device=self.device)
        out[passed] = self._search(users[passed], items[passed])
        return out

    def _search(self, users: Tensor, items: Tensor) -> Tensor:
        q = users * self.num_items + items
        pos = torch.searchsorted(self.keys, q).clamp_(max=len(self.keys) - 1)
        return self.keys[pos] == q

    def negatives(self, users: Tensor, generator: torch.Generator) -> Tensor:
        """[B] int64 negative items for ``users`` [B], none of them a training positive."""
        neg = self._draw(len(users), generator)
        # Only the rows just redrawn are checked again: a kept draw stays valid.
        bad = torch.nonzero(self.is_positive(users, neg)).flatten()
        for _ in range(self.max_redraws):
            if len(bad) == 0:
                return neg
            neg[bad] = self._draw(len(bad), generator)
            bad = bad[self.is_positive(users[bad], neg[bad])]
        if len(bad):
            # Only users who hold almost every item get here: draw from their complement.
            for row in bad.tolist():
                neg[row] = self._draw_outside(int(users[row]), generator)
        return neg

    def _draw_outside(self, user: int, generator: torch.Generator) -> int:
        lo = torch.searchsorted(self.keys, torch.tensor(user * self.num_items, device=self.device))
        hi = torch.searchsorted(self.keys, torch.tensor((user + 1) * self.num_items,
                                                        device=self.device))
        own = self.keys[lo:hi] - user * self.num_items
        probs = self.probs.clone()
        probs[own] = 0.0
        if probs.sum() <= 0:
            raise ValueError(f"user index {user} interacted with every item: no negative exists")
        return int(torch.multinomial(probs, 1, generator=generator))

    def epoch(self, batch_size: int, generator: torch.Generator, candidates: int = 1):
        """Yield (users, pos, neg) batches covering every training interaction once, in a
        random order; neg is [B], or [B, candidates] negatives per triple when candidates > 1.

        The whole epoch's negatives are drawn up front: the redraw loop's host round trips
        (the number of collisions) happen a few times per epoch, not per batch, so a CUDA
        epoch runs its batches without waiting on the host. They are drawn for the
        interactions in key order and shuffled with them: the membership test's binary
        searches then walk the keys in order (2-3x faster on the CPU than in random order).
        """
        # Candidate k of interaction e at k * E + e, drawn in chunks of DRAW_CHUNK (one chunk
        # up to Gowalla with 8 candidates), which bounds the redraw loop's temporaries on
        # large graphs; viewed [E, K].
        for users, items, neg, _ in self.epoch_share(batch_size, generator, candidates):
            yield users, items, neg

    def epoch_share(self, batch_size: int, generator: torch.Generator, candidates: int = 1,
                    users_from: int = 0, users_to: int | None = None):
        """:meth:`epoch`'s batches cut to the triples whose user is in [users_from,
        users_to), each with the size of the whole batch: (users, pos, neg, size). The
        generator's stream is the whole epoch's, so that processes that split the users
        between them train on the parts of the same batches; only this part's negatives are
        kept (drawn chunk by chunk, the whole epoch's never held at once)."""
        all_users, all_items = self.users, self.items
        if self.focused is not None:
            all_users, all_items = all_users[self.focused], all_items[self.focused]
        n = len(all_users)
        part = None
        if users_from > 0 or users_to is not None:
            mine = all_users >= users_from
            if users_to is not None:
                mine &= all_users < users_to
            part = torch.nonzero(mine).flatten()
            del mine
        kept = n if part is None else len(part)
        neg = torch.empty(candidates * kept, dtype=torch.long, device=self.device)
        for start in range(0, candidates * n, DRAW_CHUNK):
            stop = min(start + DRAW_CHUNK, candidates * n)
            drawn = self.negatives(_repeated(all_users, start, stop), generator)
            if part is None:
                neg[start:stop] = drawn
            else:  # this chunk's draws at the part's interactions, candidate by candidate
                for k in range(start // n, (stop - 1) // n + 1):
                    lo, hi = max(start, k * n), min(stop, (k + 1) * n)
                    a, b = torch.searchsorted(part, torch.tensor(
                        [lo - k * n, hi - k * n], device=self.device)).tolist()
                    neg[k * kept + a:k * kept + b] = drawn[part[a:b] + k * n - start]
        neg = neg.view(candidates, kept).T
        perm = torch.randperm(n, device=self.device, generator=generator)
        if part is not None:
            # Where each interaction sits in the part (-1: not in it); batches keep theirs.
            at = torch.full((n,), -1, dtype=torch.long, device=self.device)
            at[part] = torch.arange(kept, device=self.device)
            where, all_users, all_items = at[perm], all_users[part], all_items[part]
            del at
        else:
            where = perm
        if candidates == 1:
            neg = neg.squeeze(1)
        for start in range(0, n, batch_size):
            rows = where[start:start + batch_size]
            size = len(rows)
            if part is not None:
                rows = rows[rows >= 0]
            yield all_users[rows], all_items[rows], neg[rows], size

    def num_batches(self, batch_size: int) -> int:
        n = len(self.users) if self.focused is None else len(self.focused)
        return -(-n // batch_size)


def _repeated(users: Tensor, start: int, stop: int) -> Tensor:
    """Rows [start, stop) of ``users`` repeated end to end (slices, not a gather)."""
    n, parts = len(users), []
    while start < stop:
        a = start % n
        b = min(n, a + stop - start)
        parts.append(users[a:b])
        start += b - a
    return parts[0] if len(parts) == 1 else torch.cat(parts)


def hardest(user_emb: Tensor, users: Tensor, item_emb: Tensor, candidates: Tensor,
            chunk: int = HARDEST_CHUNK, top: int = 1,
            generator: torch.Generator | None = None) -> Tensor:
    """[B] the column of ``candidates`` [B, K] each user scores highest; with ``top`` N > 1,
    a column drawn uniformly (from ``generator``) among the N highest (DNS(M, N)).

    user_emb: [U', d] user embeddings; users: [B] rows of user_emb; item_emb: [I', d] item
    embeddings; candidates: [B, K] rows of item_emb. No gradient flows through the choice.
    Triples are scored ``chunk`` at a time, their user and candidate rows gathered per chunk:
    the gathered blocks stay in cache (at 10M interactions, batch 524,288 x 8 candidates:
    0.25-0.3 s a step instead of 0.7) and no [B, d] copy of the user rows is made.
    """
    with torch.no_grad():
        b, k = candidates.shape
        pick = torch.empty(b, dtype=torch.long, device=candidates.device)
        for start in range(0, b, chunk):
            c = candidates[start:start + chunk]
            rows = item_emb.index_select(0, c.flatten()).view(len(c), k, -1)
            u = user_emb.index_select(0, users[start:start + chunk])
            scores = torch.bmm(rows, u.unsqueeze(2)).squeeze(2)
            if top == 1:
                pick[start:start + chunk] = scores.argmax(1)
            else:
                best = scores.topk(min(top, k), dim=1).indices
                at = torch.randint(best.shape[1], (len(c), 1), device=c.device,
                                   generator=generator)
                pick[start:start + chunk] = best.gather(1, at).squeeze(1)
        return pick

"""users.txt and items.jsonl: the raw ids (and item titles and text) of a graph or model
directory, index k on line k + 1. Written and read here only."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from graphrec.fsio import read_jsonl, read_lines, write_jsonl, write_lines

USERS_FILE = "users.txt"
ITEMS_FILE = "items.jsonl"


def write_id_files(folder: Path, user_ids: Sequence, item_ids: Sequence,
                   titles: Sequence[str], texts: Sequence[str] | None = None) -> None:
    """users.txt (one raw id a line) and items.jsonl ({"id", "title"[, "text"]} a line)."""
    write_users_file(folder, user_ids)
    write_items_file(folder, item_ids, titles, texts)


def write_users_file(folder: Path, user_ids: Sequence) -> None:
    write_lines(folder / USERS_FILE, [str(u) for u in user_ids])


def write_items_file(folder: Path, item_ids: Sequence, titles: Sequence[str],
                     texts: Sequence[str] | None = None) -> None:
    if texts is None:
        records = ({"id": str(i), "title": t} for i, t in zip(item_ids, titles, strict=True))
    else:
        records = ({"id": str(i), "title": t, "text": x}
                   for i, t, x in zip(item_ids, titles, texts, strict=True))
    with open(folder / ITEMS_FILE, "w", encoding="utf-8") as f:
        write_jsonl(f, records)


def append_items(folder: Path, item_ids: Sequence, titles: Sequence[str]) -> None:
    """Add items at the end of items.jsonl (new indices; existing lines keep theirs)."""
    with open(folder / ITEMS_FILE, "a", encoding="utf-8") as f:
        write_jsonl(f, ({"id": str(i), "title": str(t)}
                        for i, t in zip(item_ids, titles, strict=True)))


def read_id_files(folder: Path) -> tuple[np.ndarray, np.ndarray, list[str], list[str] | None]:
    """(user_ids [U] str, item_ids [I] str, titles, texts or None when not stored).

    Raises OSError, ValueError or KeyError for a damaged file (the callers name the folder).
    """
    user_ids = np.asarray(read_lines(folder / USERS_FILE), dtype=str)
    rows = read_jsonl(folder / ITEMS_FILE)
    bad = next((k for k, r in enumerate(rows)
                if not (isinstance(r, dict) and isinstance(r.get("id"), str)
                        and isinstance(r.get("title"), str))), None)
    if bad is not None:
        raise ValueError(f"{ITEMS_FILE} line {bad + 1}: expected an object with string id "
                         "and title")
    item_ids = np.asarray([r["id"] for r in rows], dtype=str)
    titles = [r["title"] for r in rows]
    texts = [r["text"] for r in rows] if rows and "text" in rows[0] else None
    return user_ids, item_ids, titles, texts

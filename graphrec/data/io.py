"""Readers for interaction logs and item text.

Formats: CSV/TSV with a header (user, item[, rating][, timestamp]) or the same columns in
Parquet, the LightGCN text format
(``user item item ...`` per line) and a MovieLens folder (ratings.csv, movies.csv, tags.csv).
Every reader raises :class:`DataError` naming the file, the line where there is one, what was
found and what was expected. Raw ids stay strings here; contiguous indices start in ``data``.
"""

from __future__ import annotations

import csv
import logging
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from graphrec.errors import DataError, mention

log = logging.getLogger(__name__)

USER_COLUMNS = ("user", "user_id", "userid", "userId", "uid", "visitorid")
ITEM_COLUMNS = ("item", "item_id", "itemid", "itemId", "movieId", "movie_id", "iid", "product_id")
RATING_COLUMNS = ("rating", "score", "value")
TIME_COLUMNS = ("timestamp", "time", "ts", "datetime", "date")
TITLE_COLUMNS = ("title", "name")

# Fixed-split folds, as stored in RawInteractions.fold for formats that carry their own split.
FOLD_TRAIN = 0
FOLD_TEST = 2


@dataclass
class RawInteractions:
    """Interactions with the ids as they appear in the input.

    ``users``, ``items``: [n] str, or [n] int64 where a typed input (Parquet) stores integer
    ids; ``ratings``: [n] float64 or None; ``timestamps``: [n]
    float64 or None; ``fold``: [n] int8 (FOLD_TRAIN / FOLD_TEST) when the input fixes the split.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None = None
    timestamps: np.ndarray | None = None
    fold: np.ndarray | None = None
    source: str = ""

    def __len__(self) -> int:
        return len(self.users)


@dataclass
class ItemText:
    """Item descriptions: ``ids`` [m] str, ``titles`` and ``texts`` (lists of m str)."""

    ids: np.ndarray
    titles: list[str]
    texts: list[str]


def _check_file(path: Path, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise DataError(f"{mention(what)} {path}: file not found")
    if path.is_dir():
        raise DataError(f"{mention(what)} {path}: is a directory, expected a file")
    if path.stat().st_size == 0:
        raise DataError(
            f"{mention(what)} {path}: file is empty, expected a header row and data rows")
    return path


def _delimiter(path: Path, header_line: str) -> str:
    if path.suffix.lower() in (".tsv", ".tab") or "\t" in header_line:
        return "\t"
    if ";" in header_line and "," not in header_line:
        return ";"
    return ","


def _pick_column(header: list[str], wanted: str | None, candidates: tuple[str, ...],
                 what: str, option: str, path: Path, required: bool = True) -> int | None:
    if wanted is not None:
        if wanted not in header:
            raise DataError(
                f"{path}: no column {wanted!r} (given by {mention(option)}); found columns {header}"
            )
        return header.index(wanted)
    lowered = [h.strip().lower() for h in header]
    for name in candidates:
        if name.lower() in lowered:
            return lowered.index(name.lower())
    if required:
        raise DataError(
            f"{path}: no {what} column; found columns {header}, expected one of "
            f"{list(candidates)} or name it with {mention(option)}"
        )
    return None


def _read_table(path: Path, what: str) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a delimited file; rows with the wrong field count are errors."""
    path = _check_file(path, what)
    try:
        # Decoding happens in chunks, so even the first readline can meet a bad byte.
        with open(path, newline="", encoding="utf-8-sig") as f:
            first = f.readline()
            f.seek(0)
            reader = csv.reader(f, delimiter=_delimiter(path, first))
            header = next(reader, None)
            rows = list(reader)
    except (csv.Error, UnicodeDecodeError) as exc:
        raise DataError(f"{mention(what)} {path}: cannot parse as delimited text ({exc})") from exc
    if header is None:
        raise DataError(f"{mention(what)} {path}: no text in it, expected a header row")
    header = [h.strip() for h in header]
    if not any(header):
        raise DataError(f"{mention(what)} {path}: line 1 is empty, expected a header row")
    repeated = sorted({h for h in header if header.count(h) > 1})
    if repeated:
        raise DataError(f"{mention(what)} {path} line 1: column {repeated[0]!r} appears more "
                        "than once in the header; expected each column once")
    width = len(header)
    # Blank lines are skipped; a short or long row is an error with its line number.
    bad = [k for k, r in enumerate(rows) if len(r) != width and r]
    if bad:
        k = bad[0]
        raise DataError(
            f"{mention(what)} {path} line {k + 2}: {len(rows[k])} fields, expected {width} "
            f"as in the header {header}"
        )
    rows = [r for r in rows if r]
    return header, rows


def _parse_floats(values: list[str], path: Path, column: str, line_offset: int = 2) -> np.ndarray:
    try:
        out = np.asarray(values, dtype=np.float64)
    except ValueError:
        for k, v in enumerate(values):
            try:
                float(v)
            except ValueError:
                raise DataError(
                    f"{path} line {k + line_offset}: {column} {v!r} is not a number"
                ) from None
        raise
    bad = np.flatnonzero(~np.isfinite(out))
    if len(bad):
        raise DataError(f"{path} line {bad[0] + line_offset}: {column} "
                        f"{values[bad[0]]!r} is not a finite number")
    return out


def _log_columns(header: list[str], path: Path, user_col: str | None, item_col: str | None,
                 rating_col: str | None, time_col: str | None) -> tuple:
    """Positions of an interaction log's user, item, rating and timestamp columns in
    ``header`` (the last two None when absent)."""
    return (_pick_column(header, user_col, USER_COLUMNS, "user", "user_col", path),
            _pick_column(header, item_col, ITEM_COLUMNS, "item", "item_col", path),
            _pick_column(header, rating_col, RATING_COLUMNS, "rating", "rating_col", path,
                         required=False),
            _pick_column(header, time_col, TIME_COLUMNS, "timestamp", "time_col", path,
                         required=False))


def read_interactions_csv(
    path: str | Path,
    user_col: str | None = None,
    item_col: str | None = None,
    rating_col: str | None = None,
    time_col: str | None = None,
) -> RawInteractions:
    """Read a CSV/TSV interaction log with a header row.

    Column names default to common spellings (``user``/``userId``..., ``item``/``movieId``...,
    ``rating``, ``timestamp``); rating and timestamp are optional. Timestamps must be numeric
    (e.g. Unix seconds).
    """
    path = Path(path)
    header, rows = _read_table(path, "interactions")
    if not rows:
        raise DataError(
            f"{mention('interactions')} {path}: header only, expected at least one data row")
    ui, ii, ri, ti = _log_columns(header, path, user_col, item_col, rating_col, time_col)
    cols = list(zip(*rows, strict=True))
    users = np.asarray(cols[ui], dtype=str)
    items = np.asarray(cols[ii], dtype=str)
    for arr, name in ((users, header[ui]), (items, header[ii])):
        empty = np.flatnonzero(np.char.str_len(np.char.strip(arr)) == 0)
        if len(empty):
            raise DataError(
                f"{mention('interactions')} {path} line {empty[0] + 2}: empty {name} id")
        _check_one_line_ids(np.char.strip(arr), name, "interactions", path)
    ratings = _parse_floats(list(cols[ri]), path, header[ri]) if ri is not None else None
    times = _parse_floats(list(cols[ti]), path, header[ti]) if ti is not None else None
    return RawInteractions(np.char.strip(users), np.char.strip(items), ratings, times,
                           source=str(path))


PARQUET_SUFFIXES = (".parquet", ".pq")


def read_interactions(path: str | Path, user_col: str | None = None,
                      item_col: str | None = None, rating_col: str | None = None,
                      time_col: str | None = None) -> RawInteractions:
    """An interaction log: Parquet by its suffix (.parquet, .pq), else delimited text
    (:func:`read_interactions_csv`); the same column names and checks either way."""
    if Path(path).suffix.lower() in PARQUET_SUFFIXES:
        return read_interactions_parquet(path, user_col, item_col, rating_col, time_col)
    return read_interactions_csv(path, user_col, item_col, rating_col, time_col)


def read_interactions_parquet(path: str | Path, user_col: str | None = None,
                              item_col: str | None = None, rating_col: str | None = None,
                              time_col: str | None = None) -> RawInteractions:
    """Read a Parquet interaction log (pyarrow): the columns of :func:`read_interactions_csv`,
    picked the same way; ids of any type become strings, ratings and timestamps numbers
    (a timestamp column in seconds). Errors name the row (from 1)."""
    path = _check_file(Path(path), "interactions")
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{mention('interactions')} {path}: reading Parquet needs pyarrow "
                        "(pip install 'graphrec[scale]')") from None
    try:
        header = pq.read_schema(path).names
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{mention('interactions')} {path}: cannot read as Parquet "
                        f"({str(exc).splitlines()[0]})") from None
    ui, ii, ri, ti = _log_columns(header, path, user_col, item_col, rating_col, time_col)
    wanted = [header[c] for c in (ui, ii, ri, ti) if c is not None]
    try:
        table = pq.read_table(path, columns=list(dict.fromkeys(wanted)))
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{mention('interactions')} {path}: cannot read as Parquet "
                        f"({str(exc).splitlines()[0]})") from None
    if table.num_rows == 0:
        raise DataError(f"{mention('interactions')} {path}: no rows, expected at least one")

    def ids(name: str) -> np.ndarray:
        return _arrow_ids(table.column(name), name, path)

    def numbers(name: str) -> np.ndarray:
        return _arrow_numbers(table.column(name), name, path)

    return RawInteractions(ids(header[ui]), ids(header[ii]),
                           numbers(header[ri]) if ri is not None else None,
                           numbers(header[ti]) if ti is not None else None, source=str(path))


def _arrow_ids(col, name: str, path: Path, first_row: int = 0, where: str = "row",
               canonical_ints: bool = False) -> np.ndarray:
    """An id column (pyarrow) as [n] int64 when it holds integers, else [n] str; errors name
    the row (``where`` "row": from 1; "line": the file's line, the header being line 1).
    ``canonical_ints``: a text column whose every id is an integer written plainly ("7",
    never "07" or "+7") becomes integers too."""
    import pyarrow as pa
    import pyarrow.compute as pc

    def at(k: int) -> str:
        return f"{where} {first_row + k + (1 if where == 'row' else 2)}"

    if pa.types.is_integer(col.type):  # kept as integers: strings only for unique ids
        bad = np.flatnonzero(pc.is_null(col).to_numpy(zero_copy_only=False))
        if len(bad):
            raise DataError(f"{mention('interactions')} {path} {at(bad[0])}: empty {name} id")
        try:
            return col.cast(pa.int64()).to_numpy(zero_copy_only=False)
        except pa.ArrowException:  # uint64 past int64: as strings below
            pass
    try:
        col = pc.utf8_trim_whitespace(col.cast(pa.string()))
    except pa.ArrowException:
        raise DataError(f"{mention('interactions')} {path}: column {name!r} of type "
                        f"{col.type} cannot be read as ids") from None
    empty = pc.or_kleene(pc.is_null(col), pc.equal(pc.utf8_length(col), 0))
    bad = np.flatnonzero(empty.to_numpy(zero_copy_only=False))
    if len(bad):
        raise DataError(f"{mention('interactions')} {path} {at(bad[0])}: empty {name} id")
    if canonical_ints and pc.all(pc.match_substring_regex(
            col, r"^(0|-?[1-9][0-9]{0,17})$")).as_py():
        return col.cast(pa.int64()).to_numpy(zero_copy_only=False)
    out = col.to_numpy(zero_copy_only=False).astype(str)
    _check_one_line_ids(out, name, "interactions", path)
    return out


def _arrow_numbers(col, name: str, path: Path, first_row: int = 0,
                   where: str = "row") -> np.ndarray:
    """A rating or timestamp column (pyarrow) as [n] float64 (timestamps in seconds)."""
    import pyarrow as pa

    try:
        if pa.types.is_timestamp(col.type):
            unit = {"s": 1, "ms": 1e3, "us": 1e6, "ns": 1e9}[col.type.unit]
            values = col.cast(pa.int64()).to_numpy(zero_copy_only=False) / unit
        else:
            values = col.cast(pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowException:
        raise DataError(f"{mention('interactions')} {path}: column {name!r} of type "
                        f"{col.type} is not numbers") from None
    values = np.asarray(values, dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(values))
    if len(bad):
        k = first_row + bad[0] + (1 if where == "row" else 2)
        raise DataError(f"{mention('interactions')} {path} {where} {k}: {name} "
                        "is missing or not a finite number")
    return values


CHUNK_ROWS = 1 << 21
"""Rows per chunk when a log is read in chunks (:func:`interaction_chunks`)."""
STREAM_CSV_BYTES = 64 << 20
"""Delimited logs from this size on are read in chunks by pyarrow when it is installed
(smaller ones by the line-exact reader, :func:`read_interactions_csv`)."""


def streams(path: str | Path) -> bool:
    """Whether :func:`interaction_chunks` reads this log (Parquet always; delimited text of
    :data:`STREAM_CSV_BYTES` or more when pyarrow is installed)."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        return True
    try:
        import pyarrow.csv  # noqa: F401
    except ImportError:
        return False
    return path.is_file() and path.stat().st_size >= STREAM_CSV_BYTES


def estimated_rows(path: str | Path) -> int:
    """Rows of a log read in chunks: exact for Parquet (its metadata), estimated from the
    first MiB's line lengths for delimited text."""
    path = Path(path)
    if path.suffix.lower() in PARQUET_SUFFIXES:
        import pyarrow.parquet as pq
        try:
            return int(pq.ParquetFile(path).metadata.num_rows)
        except Exception:  # unreadable: interaction_chunks says why
            return 0
    with open(path, "rb") as f:
        head = f.read(1 << 20)
    lines = max(head.count(b"\n"), 1)
    return int(path.stat().st_size / (len(head) / lines) * 1.02) + 1


def interaction_chunks(path: str | Path, user_col: str | None = None,
                       item_col: str | None = None, rating_col: str | None = None,
                       time_col: str | None = None, chunk_rows: int | None = None,
                       with_ratings: bool = True):
    """Read an interaction log (Parquet, or CSV/TSV with a header) in chunks of about
    ``chunk_rows`` rows with pyarrow, never the whole file at once: yields
    ``(rows_before, RawInteractions)``. Columns are picked and checked as the whole-file
    readers do; id columns come as int64 when they hold integers, else str (a chunk may
    differ from the one before). ``with_ratings`` False: the rating column is not read.
    ``chunk_rows`` None: :data:`CHUNK_ROWS` (delimited text: about that many, in blocks of
    24 bytes a row)."""
    path = _check_file(Path(path), "interactions")
    chunk_rows = chunk_rows or CHUNK_ROWS
    try:
        import pyarrow as pa
        import pyarrow.csv as pcsv
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{mention('interactions')} {path}: reading it in chunks needs "
                        "pyarrow (pip install 'graphrec[scale]')") from None
    parquet = path.suffix.lower() in PARQUET_SUFFIXES
    where = "row" if parquet else "line"
    try:
        if parquet:
            source = pq.ParquetFile(path)
            header = source.schema_arrow.names
        else:
            with open(path, newline="", encoding="utf-8-sig") as f:
                first = f.readline()
            header = [h.strip() for h in next(csv.reader([first], delimiter=_delimiter(
                path, first)), [])]
    except (pa.ArrowException, OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{mention('interactions')} {path}: cannot read "
                        f"({str(exc).splitlines()[0]})") from None
    if not any(header):
        raise DataError(f"{mention('interactions')} {path}: line 1 is empty, expected a header "
                        "row")
    ui, ii, ri, ti = _log_columns(header, path, user_col, item_col, rating_col, time_col)
    if not with_ratings:
        ri = None
    names = list(dict.fromkeys(header[c] for c in (ui, ii, ri, ti) if c is not None))
    if parquet:
        batches = source.iter_batches(batch_size=chunk_rows, columns=names)
    else:
        types = {header[c]: pa.string() for c in (ui, ii)}
        types.update({header[c]: pa.float64() for c in (ri, ti) if c is not None})
        batches = pcsv.open_csv(
            path, read_options=pcsv.ReadOptions(block_size=max(chunk_rows * 24, 1 << 10),
                                                encoding="utf8"),
            parse_options=pcsv.ParseOptions(delimiter=_delimiter(path, ",".join(header)),
                                             newlines_in_values=False),
            convert_options=pcsv.ConvertOptions(include_columns=names, column_types=types,
                                                strings_can_be_null=False))
    done = 0
    try:
        for batch in batches:
            if batch.num_rows == 0:
                continue
            cols = {name: batch.column(name) for name in names}
            yield done, RawInteractions(
                _arrow_ids(cols[header[ui]], header[ui], path, done, where, not parquet),
                _arrow_ids(cols[header[ii]], header[ii], path, done, where, not parquet),
                _arrow_numbers(cols[header[ri]], header[ri], path, done, where)
                if ri is not None else None,
                _arrow_numbers(cols[header[ti]], header[ti], path, done, where)
                if ti is not None else None, source=str(path))
            done += batch.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{mention('interactions')} {path}: cannot read past {where} "
                        f"{done + (1 if parquet else 2)} ({str(exc).strip().splitlines()[0]})"
                        ) from None
    if done == 0:
        raise DataError(f"{mention('interactions')} {path}: no rows, expected at least one")


def _is_int64(token: str) -> bool:
    try:
        value = int(token)
    except ValueError:
        return False
    return -(2**63) <= value < 2**63


def _lines(f, option: str, path: Path):
    """Lines of an open text file; bytes that are not UTF-8 are a DataError."""
    try:
        yield from f
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{mention(option)} {path}: not UTF-8 text ({exc}), expected lines 'user item item ...'"
        ) from None


def read_lightgcn(train_path: str | Path, test_path: str | Path | None = None) -> RawInteractions:
    """Read the LightGCN/NGCF text format: one line per user, ``user item item ...``.

    Ids are non-negative integers separated by whitespace. The test file, when given, fixes
    the split (``fold``). A user line without items is allowed.
    """
    users, items, folds = [], [], []
    for option, path, fold in (("train", train_path, FOLD_TRAIN),
                               ("test", test_path, FOLD_TEST)):
        if path is None:
            continue
        path = _check_file(Path(path), option)
        before = sum(len(x) for x in items)
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(_lines(f, option, path), start=1):
                parts = line.split()
                if not parts:
                    continue
                try:
                    ids = np.asarray(parts, dtype=np.int64)
                except (ValueError, OverflowError):
                    bad = next((p for p in parts if not _is_int64(p)), line.strip())
                    raise DataError(
                        f"{mention(option)} {path} line {lineno}: {bad!r} is not an integer id, "
                        "expected 'user item item ...' with integer ids"
                    ) from None
                if (ids < 0).any():
                    raise DataError(
                        f"{mention(option)} {path} line {lineno}: negative id {int(ids.min())}, "
                        "expected non-negative integer ids"
                    )
                users.append(np.full(len(ids) - 1, ids[0], dtype=np.int64))
                items.append(ids[1:])
                folds.append(np.full(len(ids) - 1, fold, dtype=np.int8))
        if fold == FOLD_TRAIN and sum(len(x) for x in items) == before:
            raise DataError(
                f"{mention(option)} {path}: no interactions, expected lines 'user item item ...'")
    if not users:
        raise DataError(
            f"{mention('train')} {train_path}: no interactions, "
            "expected lines 'user item item ...'")
    u = np.concatenate(users)
    i = np.concatenate(items)
    return RawInteractions(u.astype(str), i.astype(str), fold=np.concatenate(folds),
                           source=str(train_path))


_CONTROL = {c: " " for c in [*range(0x20), 0x7F]}
"""Control characters: spaces in titles and text (a terminal or GraphML must not see them)."""


def _clean(text: str) -> str:
    return " ".join(text.translate(_CONTROL).replace("|", ", ").split())


def _clean_title(text: str) -> str:
    return " ".join(text.translate(_CONTROL).split())


def read_items(
    path: str | Path,
    id_col: str | None = None,
    text_cols: list[str] | None = None,
    title_col: str | None = None,
) -> ItemText:
    """Read an item file: an id column and one or more text columns (CSV/TSV with header).

    Text = the text columns joined with ". " (``|``-separated lists become comma lists).
    By default every column except the id is text; the title is the ``title``/``name``
    column, else the first text column.
    """
    path = Path(path)
    header, rows = _read_table(path, "items")
    if not rows:
        raise DataError(f"{mention('items')} {path}: header only, expected at least one item row")
    ii = _pick_column(header, id_col, ITEM_COLUMNS + ("id",), "item id", "item_id_col", path)
    if text_cols:
        tcols = [_pick_column(header, c, (), "text", "text_cols", path) for c in text_cols]
    else:
        tcols = [k for k in range(len(header)) if k != ii]
    if not tcols:
        raise DataError(
            f"{mention('items')} {path}: only an id column {header}, expected text columns too")
    ti = _pick_column(header, title_col, TITLE_COLUMNS, "title", "title_col", path,
                      required=False)
    if ti is None:
        ti = tcols[0]
    ids = np.asarray([r[ii].strip() for r in rows], dtype=str)
    _check_one_line_ids(ids, header[ii], "items", path)
    seen: dict[str, int] = {}
    for k, i in enumerate(ids.tolist()):
        if i in seen:
            raise DataError(f"{mention('items')} {path} rows {seen[i] + 1} and {k + 1}: item "
                            f"{i!r} twice; expected one row per item")
        seen[i] = k
    titles = [_clean_title(r[ti]) for r in rows]
    texts = []
    for r in rows:
        parts = [_clean(r[k]) for k in tcols]
        texts.append(". ".join(p for p in parts if p and p != "(no genres listed)"))
    return ItemText(ids, titles, texts)


def read_movielens(folder: str | Path) -> tuple[RawInteractions, ItemText]:
    """Read a MovieLens folder (ratings.csv, movies.csv, optional tags.csv).

    Item text = "<title>. Genres: <g1>, <g2>. Tags: <t1>, <t2>" with the distinct tags users
    gave the movie, in order of first use (:func:`movielens_item_fields`).
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"MovieLens folder {folder}: not a directory")
    inter = read_interactions_csv(folder / "ratings.csv", "userId", "movieId", "rating",
                                  "timestamp")
    ids, fields = movielens_item_fields(folder)
    texts = [". ".join(p for p in parts if p) for parts in zip(*fields.values(), strict=True)]
    return inter, ItemText(ids, np.asarray(fields["title"], dtype=str), texts)


MOVIELENS_FIELDS = ("title", "genres", "tags")
"""The text fields of a MovieLens item, in the order its text joins them."""


def movielens_item_fields(folder: str | Path) -> tuple[np.ndarray, dict[str, list[str]]]:
    """Each movie's id [I] and its text fields as :func:`read_movielens` joins them:
    ``{"title": [...], "genres": ["Genres: a, b", ...], "tags": ["Tags: x, y", ...]}``, an
    empty string where a movie has no genres or no tags."""
    folder = Path(folder)
    header, rows = _read_table(folder / "movies.csv", "movies")
    id_k, title_k, genre_k = (_movielens_column(header, c, folder / "movies.csv")
                              for c in ("movieId", "title", "genres"))
    tags: dict[str, list[str]] = defaultdict(list)
    tag_path = folder / "tags.csv"
    if tag_path.exists():
        th, trows = _read_table(tag_path, "tags")
        m_k, t_k = (_movielens_column(th, c, tag_path) for c in ("movieId", "tag"))
        for r in trows:
            tag = " ".join(r[t_k].split())
            if tag and tag.lower() not in (t.lower() for t in tags[r[m_k]]):
                tags[r[m_k]].append(tag)
    ids, fields = [], {name: [] for name in MOVIELENS_FIELDS}
    for r in rows:
        mid, genres = r[id_k].strip(), r[genre_k]
        ids.append(mid)
        fields["title"].append(_clean_title(r[title_k]))
        fields["genres"].append("Genres: " + ", ".join(genres.split("|"))
                                if genres and genres != "(no genres listed)" else "")
        fields["tags"].append("Tags: " + ", ".join(tags[mid]) if tags.get(mid) else "")
    ids = np.asarray(ids, dtype=str)
    _check_one_line_ids(ids, "movieId", "movielens", folder / "movies.csv")
    return ids, fields


def _movielens_column(header: list[str], name: str, path: Path) -> int:
    if name not in header:
        raise DataError(f"{mention('movielens')} {path}: no {name!r} column (columns: "
                        f"{', '.join(header)}); expected MovieLens's movieId, title, genres "
                        "(and movieId, tag in tags.csv)")
    return header.index(name)


def _check_one_line_ids(ids: np.ndarray, column: str, option: str, path: Path) -> None:
    """Raise DataError for an id holding a line break: id files keep one id per line."""
    broken = np.flatnonzero((np.char.find(ids, "\n") >= 0) | (np.char.find(ids, "\r") >= 0))
    if len(broken):
        raise DataError(f"{mention(option)} {path} row {broken[0] + 1}: {column} id "
                        f"{str(ids[broken[0]])!r} holds a line break; ids must be one line")

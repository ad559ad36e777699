"""graphrec.data.io: the readers, and a DataError naming file and line for every bad input."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from graphrec.build import BUNDLED_DATASET
from graphrec.data import io
from graphrec.data.interactions import IdMap
from graphrec.errors import DataError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- CSV / TSV


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("log.csv", "user,item,rating,timestamp\na,x,4.5,10\nb,y,3,20\n"),
        ("log.tsv", "user\titem\trating\ttimestamp\na\tx\t4.5\t10\nb\ty\t3\t20\n"),
        ("log.txt", "user\titem\trating\ttimestamp\na\tx\t4.5\t10\nb\ty\t3\t20\n"),  # tab in header
        ("log.txt", "user;item;rating;timestamp\na;x;4.5;10\nb;y;3;20\n"),
    ],
)
def test_delimiter_detection(tmp_path: Path, name: str, text: str) -> None:
    raw = io.read_interactions_csv(write(tmp_path / name, text))
    assert raw.users.tolist() == ["a", "b"]
    assert raw.items.tolist() == ["x", "y"]
    np.testing.assert_array_equal(raw.ratings, [4.5, 3.0])
    np.testing.assert_array_equal(raw.timestamps, [10.0, 20.0])
    assert raw.ratings.dtype == np.float64 and raw.fold is None
    assert len(raw) == 2 and raw.source == str(tmp_path / name)


def test_default_column_spellings_and_optional_columns(tmp_path: Path) -> None:
    # MovieLens spellings, any case; no rating or timestamp column.
    path = write(tmp_path / "a.csv", "USERID,movieId,extra\n 7 , 12 ,z\n8,13,z\n")
    raw = io.read_interactions_csv(path)
    assert raw.users.tolist() == ["7", "8"]  # ids are stripped
    assert raw.items.tolist() == ["12", "13"]
    assert raw.ratings is None and raw.timestamps is None


def test_overridden_column_names(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "who,what,stars,when,user\n1,10,2,100,ignored\n2,11,5,200,x\n")
    raw = io.read_interactions_csv(path, user_col="who", item_col="what", rating_col="stars",
                                   time_col="when")
    assert raw.users.tolist() == ["1", "2"]
    assert raw.items.tolist() == ["10", "11"]
    np.testing.assert_array_equal(raw.ratings, [2.0, 5.0])
    np.testing.assert_array_equal(raw.timestamps, [100.0, 200.0])


def test_blank_lines_and_bom_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes("\ufeffuser,item\n1,2\n\n3,4\n".encode())
    raw = io.read_interactions_csv(path)
    assert raw.users.tolist() == ["1", "3"] and raw.items.tolist() == ["2", "4"]


# ----------------------------------------------------------------------------- bad CSV input


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match="file not found") as info:
        io.read_interactions_csv(path)
    assert str(path) in str(info.value)


def test_directory_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="is a directory"):
        io.read_interactions_csv(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = write(tmp_path / "empty.csv", "")
    with pytest.raises(DataError, match="file is empty") as info:
        io.read_interactions_csv(path)
    assert str(path) in str(info.value)


def test_header_only(tmp_path: Path) -> None:
    path = write(tmp_path / "h.csv", "user,item,rating\n")
    with pytest.raises(DataError, match="header only") as info:
        io.read_interactions_csv(path)
    assert str(path) in str(info.value)


def test_missing_item_column(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "user,product,rating\n1,2,3\n")
    with pytest.raises(DataError, match="no item column") as info:
        io.read_interactions_csv(path)
    message = str(info.value)
    assert str(path) in message and "product" in message and "item_col" in message


def test_misnamed_column_override(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "user,item,rating\n1,2,3\n")
    with pytest.raises(DataError, match="no column 'stars'") as info:
        io.read_interactions_csv(path, rating_col="stars")
    assert str(path) in str(info.value) and "rating_col" in str(info.value)


def test_non_numeric_rating_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "user,item,rating\n1,2,3\n1,3,4\n2,2,five\n")
    with pytest.raises(DataError) as info:
        io.read_interactions_csv(path)
    message = str(info.value)
    assert f"{path} line 4" in message and "'five'" in message and "not a number" in message


def test_non_numeric_timestamp_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "user,item,timestamp\n1,2,2020-01-01\n")
    with pytest.raises(DataError, match="line 2: timestamp '2020-01-01' is not a number"):
        io.read_interactions_csv(path)


def test_wrong_field_count_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "user,item,rating\n1,2,3\n1,3\n")
    with pytest.raises(DataError) as info:
        io.read_interactions_csv(path)
    message = str(info.value)
    assert f"{path} line 3" in message and "2 fields, expected 3" in message


def test_empty_id_names_line(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", "user,item\n1,2\n  ,3\n")
    with pytest.raises(DataError, match=r"line 3: empty user id"):
        io.read_interactions_csv(path)


def test_binary_file_is_a_data_error(tmp_path: Path) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(b"user,item\n\xff\xfe\x00\x81,1\n")
    with pytest.raises(DataError, match="cannot parse"):
        io.read_interactions_csv(path)


# ----------------------------------------------------------------------------- LightGCN format


def test_lightgcn_reader(lightgcn_files) -> None:
    raw = io.read_lightgcn(lightgcn_files.train, lightgcn_files.test)
    train = raw.fold == io.FOLD_TRAIN
    assert int(train.sum()) == 13 and int((~train).sum()) == 6
    assert list(zip(raw.users[train][:3], raw.items[train][:3], strict=True)) == [
        ("0", "0"), ("0", "1"), ("0", "2")]
    assert list(zip(raw.users[~train], raw.items[~train], strict=True)) == [
        ("0", "3"), ("1", "4"), ("2", "0"), ("2", "6"), ("3", "1"), ("4", "0")]
    assert raw.ratings is None and raw.timestamps is None


def test_lightgcn_train_only_user_without_items_and_blank_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "train.txt", "0 1 2\n\n1\n2 0\n")
    raw = io.read_lightgcn(path)
    assert raw.users.tolist() == ["0", "0", "2"] and raw.items.tolist() == ["1", "2", "0"]
    assert (raw.fold == io.FOLD_TRAIN).all()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("0 1 2\n1 x 3\n", r"line 2: 'x' is not an integer id"),
        ("0 1 2\n1 2.5\n", r"line 2: '2.5' is not an integer id"),
        ("0 1 -2\n", r"line 1: negative id -2"),
        ("0 1\n1 --5\n", r"line 2: '--5' is not an integer id"),
        ("0 99999999999999999999\n", r"line 1: '99999999999999999999' is not an integer id"),
    ],
)
def test_lightgcn_malformed_line(tmp_path: Path, text: str, expected: str) -> None:
    path = write(tmp_path / "train.txt", text)
    with pytest.raises(DataError, match=expected) as info:
        io.read_lightgcn(path)
    assert f"train {path}" in str(info.value)


def test_lightgcn_malformed_test_line_names_test_file(tmp_path: Path) -> None:
    train = write(tmp_path / "train.txt", "0 1\n")
    test = write(tmp_path / "test.txt", "0 2\n0 two\n")
    with pytest.raises(DataError, match=rf"test {test} line 2"):
        io.read_lightgcn(train, test)


def test_lightgcn_binary_file(tmp_path: Path) -> None:
    path = tmp_path / "train.txt"
    path.write_bytes(b"0 1 2\n1 \xff\xfe 3\n")
    with pytest.raises(DataError, match=rf"train {path}: not UTF-8 text"):
        io.read_lightgcn(path)


def test_lightgcn_empty_and_missing(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        io.read_lightgcn(tmp_path / "nope.txt")
    with pytest.raises(DataError, match="file is empty"):
        io.read_lightgcn(write(tmp_path / "empty.txt", ""))
    with pytest.raises(DataError, match="no interactions"):
        io.read_lightgcn(write(tmp_path / "users_only.txt", "0\n1\n"))


# ----------------------------------------------------------------------------- items


def test_items_reader_joins_text_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "items.csv",
                 "item_id,name,genres,blurb\n1,Heat,Crime|Thriller,  a  heist \n"
                 "2,Up,(no genres listed),\n")
    text = io.read_items(path)
    assert text.ids.tolist() == ["1", "2"]
    assert text.titles == ["Heat", "Up"]
    assert text.texts == ["Heat. Crime, Thriller. a heist", "Up"]


def test_items_reader_chosen_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "items.tsv", "sku\ttitle\tdesc\tjunk\nA\tT1\tD1\tx\nB\tT2\tD2\ty\n")
    text = io.read_items(path, id_col="sku", text_cols=["desc"], title_col="title")
    assert text.ids.tolist() == ["A", "B"]
    assert text.titles == ["T1", "T2"] and text.texts == ["D1", "D2"]


def test_items_reader_errors(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="items .*file not found"):
        io.read_items(tmp_path / "nope.csv")
    with pytest.raises(DataError, match="header only"):
        io.read_items(write(tmp_path / "h.csv", "item_id,title\n"))
    with pytest.raises(DataError, match="only an id column"):
        io.read_items(write(tmp_path / "id.csv", "item_id\n1\n"))
    with pytest.raises(DataError, match="no column 'blurb'.*text_cols"):
        io.read_items(write(tmp_path / "t.csv", "item_id,title\n1,x\n"), text_cols=["blurb"])
    with pytest.raises(DataError, match="no item id column"):
        io.read_items(write(tmp_path / "n.csv", "code,title\n1,x\n"))
    path = write(tmp_path / "w.csv", "item_id,title\n1,x\n2,y,z\n")
    with pytest.raises(DataError, match=rf"items {path} line 3: 3 fields, expected 2"):
        io.read_items(path)


# ----------------------------------------------------------------------------- MovieLens


@pytest.fixture(scope="module")
def movielens() -> tuple[io.RawInteractions, io.ItemText]:
    return io.read_movielens(BUNDLED_DATASET)


def test_bundled_movielens_counts(movielens) -> None:
    raw, items = movielens
    assert len(raw) == 100_836
    assert len(np.unique(raw.users)) == 610
    assert len(np.unique(raw.items)) == 9_724
    assert raw.ratings is not None and raw.timestamps is not None
    assert raw.ratings.min() == 0.5 and raw.ratings.max() == 5.0
    assert len(items.ids) == 9_742 and len(set(items.ids.tolist())) == 9_742
    assert set(raw.items.tolist()) <= set(items.ids.tolist())


def test_bundled_movielens_text_has_title_genres_and_tags(movielens) -> None:
    _, items = movielens
    k = items.ids.tolist().index("60756")  # tagged "funny", "Highly quotable", "will ferrell"
    assert items.titles[k] == "Step Brothers (2008)"
    assert items.texts[k].startswith("Step Brothers (2008). Genres: Comedy")
    assert "Tags: funny, Highly quotable, will ferrell" in items.texts[k]
    toy = items.ids.tolist().index("1")
    assert items.texts[toy].startswith(
        "Toy Story (1995). Genres: Adventure, Animation, Children, Comedy, Fantasy")


def test_movielens_fields_are_the_parts_of_its_text(tmp_path: Path) -> None:
    (tmp_path / "ratings.csv").write_text("userId,movieId,rating,timestamp\n1,10,4,5\n")
    (tmp_path / "movies.csv").write_text(
        "movieId,title,genres\n10,A  (1990),Drama|War\n11,B,(no genres listed)\n")
    (tmp_path / "tags.csv").write_text(
        "userId,movieId,tag,timestamp\n1,11,dark,1\n2,11,Dark,2\n2,11,slow  burn,3\n")
    ids, fields = io.movielens_item_fields(tmp_path)
    assert ids.tolist() == ["10", "11"]
    assert fields == {"title": ["A (1990)", "B"], "genres": ["Genres: Drama, War", ""],
                      "tags": ["", "Tags: dark, slow burn"]}
    _, items = io.read_movielens(tmp_path)
    assert items.texts == ["A (1990). Genres: Drama, War", "B. Tags: dark, slow burn"]


def test_movielens_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not a directory"):
        io.read_movielens(tmp_path / "nope")


def test_an_id_with_a_line_break_is_refused(tmp_path: Path) -> None:
    inter = tmp_path / "log.csv"
    inter.write_text('user_id,item_id\nu1,i1\n"u\nx",i2\n')
    with pytest.raises(DataError, match=r"row 2: user_id id 'u\\nx' holds a line break"):
        io.read_interactions_csv(inter)
    items = tmp_path / "items.csv"
    items.write_text('item_id,title\n"i\r1",A\n')
    with pytest.raises(DataError, match="holds a line break"):
        io.read_items(items)


def test_a_movielens_folder_without_its_columns_names_them(tmp_path: Path) -> None:
    import shutil

    folder = Path(shutil.copytree(BUNDLED_DATASET, tmp_path / "ml"))
    movies = folder / "movies.csv"
    movies.write_text(movies.read_text().replace("genres", "kinds", 1))
    with pytest.raises(DataError, match="no 'genres' column"):
        io.read_movielens(folder)


def test_a_header_naming_a_column_twice_is_refused(tmp_path: Path) -> None:
    inter = tmp_path / "log.csv"
    inter.write_text("user_id,item_id,item_id\nu1,i1,i2\n")
    with pytest.raises(DataError, match="column 'item_id' appears more than once"):
        io.read_interactions_csv(inter)


def test_non_finite_numbers_repeated_items_and_control_characters(tmp_path: Path) -> None:
    inter = tmp_path / "log.csv"
    inter.write_text("user_id,item_id,rating\nu1,i1,4\nu1,i2,nan\n")
    with pytest.raises(DataError, match="line 3: rating 'nan' is not a finite number"):
        io.read_interactions_csv(inter)
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\ni1,A\ni2,B\ni1,C\n")
    with pytest.raises(DataError, match="rows 1 and 3: item 'i1' twice"):
        io.read_items(items)
    items.write_text('item_id,title,about\ni1,"Bad\x1b[31m\x07 title","x\x00y"\n')
    text = io.read_items(items)
    assert text.titles == ["Bad [31m title"] and text.texts == ["Bad [31m title. x y"]


# ----------------------------------------------------------------------------- Parquet logs


def test_parquet_log_reads_as_its_csv(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    csv_path = write(tmp_path / "log.csv", "userId,movieId,rating,timestamp\n"
                     "1, 10,4.5,100\n2,007,3,200\n1,11,5,300\n")
    table = pa.table({"userId": [1, 2, 1], "movieId": [" 10", "007", "11"],
                      "rating": [4.5, 3.0, 5.0],
                      "timestamp": pa.array([100, 200, 300], pa.timestamp("s"))})
    pq.write_table(table, tmp_path / "log.parquet")
    a = io.read_interactions(csv_path)
    b = io.read_interactions(tmp_path / "log.parquet")
    for field in ("ratings", "timestamps"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert b.items.tolist() == ["10", "007", "11"]
    assert b.users.dtype == np.int64  # integer ids stay integers until they are mapped
    for field in ("users", "items"):
        (map_a, idx_a), (map_b, idx_b) = (IdMap.build(getattr(r, field)) for r in (a, b))
        assert map_a.ids.tolist() == map_b.ids.tolist() and np.array_equal(idx_a, idx_b)


@pytest.mark.parametrize(("columns", "needle"), [
    ({"user": ["1", None], "item": ["a", "b"]}, "row 2: empty user id"),
    ({"user": ["1", "2"], "item": ["a", " "]}, "row 2: empty item id"),
    ({"user": ["1", "2"], "item": ["a", "b"], "rating": [1.0, float("nan")]},
     "row 2: rating is missing or not a finite number"),
    ({"user": ["1", "2"], "item": ["a", "b"], "rating": ["x", "y"]}, "is not numbers"),
    ({"uid2": ["1"], "item": ["a"]}, "no user column"),
    ({"user": ["a\nb"], "item": ["a"]}, "holds a line break"),
])
def test_bad_parquet_logs_are_named(tmp_path: Path, columns: dict, needle: str) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(DataError, match=needle) as info:
        io.read_interactions(path)
    assert str(path) in str(info.value)


def test_a_file_that_is_not_parquet_is_named(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    path = write(tmp_path / "log.parquet", "user,item\n1,2\n")
    with pytest.raises(DataError, match="cannot read as Parquet"):
        io.read_interactions(path)

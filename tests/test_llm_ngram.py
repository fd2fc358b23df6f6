"""llm_ngram: the Kneser-Ney arithmetic, reproducible training, the train command and the detector in the real runner.

Every model here is trained on texts built in the test (no ../shared)."""

import hashlib
import json
import sys
import zlib

import numpy as np
import pytest

from provenance.detectors import DetectorError
from provenance.plugins import llm_ngram
from provenance.plugins._ngram_lm import (BOS, COMBINED_FEATURES, Artifact, _level_probs, contexts, expected_f,
                                          fit_combination, padded_ids, token_hashes)
from provenance.plugins.llm_ngram import LlmNgram
from provenance.testing import run_detector

HUMAN = ["the harvest was late this year because the rains came early and the river rose over the fields",
         "shares of the company fell sharply on monday after the board said profits would be lower",
         "the old man walked to the market every morning and bought bread , fish and a newspaper"]
LLM = ["certainly ! here is a detailed overview . overall , it is important to note that this is a complex topic",
       "as an ai language model , i can provide a comprehensive overview . in conclusion , it is important to",
       "sure ! here are some key points to consider . additionally , it is essential to note that overall"]


def human_doc(i):
    return " ".join(HUMAN[(i + k) % 3] for k in range(4))


def llm_doc(i):
    return " ".join(LLM[(i + k) % 3] for k in range(4))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tmp_path_factory.mktemp("llm") / "model.npz"
    art = Artifact.train([human_doc(i) for i in range(6)], [llm_doc(i) for i in range(6)], order=3,
                         max_vocab=200, min_count=2)
    art.calibration = (0.0, 4.0)
    art.save(path)
    return path


def _prob_sum(lm, history_ids, radix):
    """Sum over every token of P(token | history): a distribution must sum to one."""
    total = 0.0
    for w in range(radix):
        if w == 1:  # the start pad is never predicted
            continue
        ids = np.array([*history_ids, w], np.uint64)
        total += float(np.exp(lm.logprob(ids, np.array([len(history_ids)]))[0]))
    return total


@pytest.mark.parametrize("min_count", [1, 2, 3])
def test_kneser_ney_distributions_sum_to_one_with_pruning(min_count):
    art = Artifact.train([human_doc(i) for i in range(4)], [llm_doc(i) for i in range(4)], order=3,
                         max_vocab=100, min_count=min_count)
    the = int(art.vocab.ids(np.array([zlib.crc32(b"the")], np.uint64))[0])
    it = int(art.vocab.ids(np.array([zlib.crc32(b"it")], np.uint64))[0])
    for lm in (art.human, art.llm):
        for history in ([1, 1], [1, the], [it, the], [the, the], [0, 0]):  # seen, partly seen and unseen contexts
            assert _prob_sum(lm, history, art.vocab.radix) == pytest.approx(1.0, abs=1e-5)


def test_kneser_ney_matches_a_hand_computation():
    # one text "a b a b": trigrams (pad pad a) (pad a b) (a b a) (b a b), each seen once
    art = Artifact.train(["a b a b"], ["a b a b"], order=3, max_vocab=10, min_count=1)
    ids, real = padded_ids(art.vocab, *token_hashes(["a b a b"]), 3)
    p = np.exp(art.human.logprob(ids, np.flatnonzero(real)))
    # all trigram counts are 1 and there are no 2s, so D3 = 0.5 (the fallback); each trigram context was seen
    # once with one continuation: P3 = 0.5 + 0.5 * P2. Bigram continuation counts: (pad a)=1 (a b)=2 (b a)=1: n1=2, n2=1,
    # D2 = 2/4 = 0.5. Unigram continuation counts over the distinct bigrams: a=2 (pad a, b a), b=1;
    # add-one over radix 4 minus the pad's 1: P1(a) = 3/6, P1(b) = 2/6, P1(unk) = 1/6.
    p1a, p1b = 3 / 6, 2 / 6
    p_a_pad = (1 - .5) / 1 + .5 * 1 / 1 * p1a       # context pad: total 1, one distinct continuation
    p_b_a = (2 - .5) / 2 + .5 * 1 / 2 * p1b         # context a: (a b)=2
    p_a_b = (1 - .5) / 1 + .5 * 1 / 1 * p1a         # context b: (b a)=1
    assert p == pytest.approx([.5 + .5 * q for q in (p_a_pad, p_b_a, p_a_b, p_b_a)], rel=1e-6)


def test_training_is_reproducible_byte_for_byte(tmp_path):
    shas = []
    for name in ("one.npz", "two.npz"):
        art = Artifact.train([human_doc(i) for i in range(3)], [llm_doc(i) for i in range(3)], max_vocab=50)
        shas.append(art.save(tmp_path / name))
    assert shas[0] == shas[1] == hashlib.sha256((tmp_path / "one.npz").read_bytes()).hexdigest()
    assert Artifact.load(tmp_path / "one.npz").sha256 == shas[0]


def test_detector_tags_llm_text_only_in_the_real_runner(model):
    docs = [{"text": human_doc(0)}, {"text": llm_doc(1)}, {"text": "certainly ! here is a short one"}]
    tags = run_detector(LlmNgram, docs, {"model": str(model), "min_score": 0.5, "estimates": False})
    assert tags.num_rows == 1  # the human text scores low; the short LLM text is under min_tokens
    row = tags.to_pylist()[0]
    assert (row["category"], row["tag"]) == ("llm", "llm_generated")
    assert 0.5 <= row["score"] <= 1.0
    evidence = json.loads(row["evidence"])
    assert evidence["statistic"] == "centred_llr" and evidence["n_tokens"] >= 50
    assert evidence["mean_llr"] > 0 and evidence["centred_llr"] == pytest.approx(
        evidence["mean_llr"] - evidence["expected_llr"], abs=2e-4)
    assert evidence["model_sha256"] == hashlib.sha256(model.read_bytes()).hexdigest()


def test_estimates_fill_llm_score_for_every_scored_document_and_flag_nothing(model, tmp_path):
    """Under min_score a scored document gets llm_estimate with its score: doc_flags.llm_score ranks every
    document of min_tokens or more, while only llm_generated flags; a short text gets no score at all."""
    import provenance
    from provenance.testing import make_document, make_store

    docs = [{"text": human_doc(0)}, {"text": llm_doc(1)}, {"text": "certainly ! here is a short one"}]
    store = make_store(tmp_path / "store", docs)
    tags = run_detector(LlmNgram, store, {"model": str(model), "min_score": 0.5}).to_pylist()
    ids = [make_document(i, **d)["doc_id"] for i, d in enumerate(docs)]
    by_doc = {t["doc_id"]: t for t in tags}
    assert set(by_doc) == set(ids[:2])
    assert by_doc[ids[0]]["tag"] == "llm_estimate" and by_doc[ids[0]]["score"] < 0.5
    assert by_doc[ids[1]]["tag"] == "llm_generated" and by_doc[ids[1]]["score"] >= 0.5
    assert set(json.loads(by_doc[ids[0]]["evidence"])) == {"statistic", "centred_llr", "n_tokens"}
    flags = dict(((d, (f, s)) for d, f, s in provenance.connect(store).execute(
        "SELECT doc_id, flagged, llm_score FROM doc_flags").fetchall()))
    assert flags[ids[0]] == (False, by_doc[ids[0]]["score"])
    assert flags[ids[1]] == (True, by_doc[ids[1]]["score"])
    assert flags[ids[2]] == (False, None)


def test_scores_order_human_below_llm(model):
    art = Artifact.load(model)
    stats = art.doc_stats([human_doc(2), llm_doc(2), ""])
    mean, n = stats["mean_llr"], stats["n_tokens"]
    assert mean[0] < 0 < mean[1]
    assert n[2] == 0 and mean[2] == 0.0 and stats["statistic"][2] == 0.0
    assert stats["statistic"][0] < stats["statistic"][1] and stats["z"][0] < stats["z"][1]
    score = art.score(stats["statistic"])
    assert score[0] < score[1]


@pytest.mark.parametrize("min_count", [1, 2])
@pytest.mark.parametrize("q", ["llm", "human"])
def test_expectation_over_the_vocabulary_matches_a_brute_force_sum(q, min_count):
    art = Artifact.train([human_doc(i) for i in range(5)], [llm_doc(i) for i in range(5)], order=3,
                         max_vocab=60, min_count=min_count)
    the = int(art.vocab.ids(np.array([zlib.crc32(b"the")], np.uint64))[0])
    it = int(art.vocab.ids(np.array([zlib.crc32(b"it")], np.uint64))[0])
    # seen in both, in one model only, partly seen and unseen contexts
    ctx = np.array([[BOS, BOS], [BOS, the], [it, the], [the, it], [the, the], [0, 0], [it, 0]], np.uint64)
    everything = np.array([x for x in range(art.vocab.radix) if x != BOS], np.uint64)
    for alpha, beta in ((1.0, -1.0), (-1.0, 0.0)):  # the LLR; the LLM model's surprisal (cross-entropy)
        mean, second = expected_f(art, ctx, q, alpha, beta)
        for i, row in enumerate(ctx):
            rows = np.repeat(row[None], len(everything), axis=0)
            p_l, p_h = _level_probs(art.llm, rows, everything, 3), _level_probs(art.human, rows, everything, 3)
            p_q = p_l if q == "llm" else p_h
            f = alpha * np.log(p_l) + beta * np.log(p_h)
            assert mean[i] == pytest.approx((p_q * f).sum(), abs=1e-5)
            assert second[i] == pytest.approx((p_q * f ** 2).sum(), abs=1e-5)


def test_centred_statistic_is_the_llr_minus_its_expectation(model):
    art = Artifact.load(model)
    assert art.statistic == "centred_llr"
    texts = [human_doc(1), llm_doc(0)]
    stats = art.doc_stats(texts)
    hashes, lengths = token_hashes(texts)
    ids, real = padded_ids(art.vocab, hashes, lengths, 3)
    positions = np.flatnonzero(real)
    expected, _ = expected_f(art, contexts(ids, positions, 3), "llm", 1.0, -1.0)
    assert stats["expected_llr"] == pytest.approx([expected[:lengths[0]].mean(), expected[lengths[0]:].mean()])
    assert stats["statistic"] == pytest.approx(stats["mean_llr"] - stats["expected_llr"])
    assert (stats["expected_llr"] > 0).all()  # a KL divergence: the LLM model expects its own text to score high
    # an artifact of the mean LLR (and one saved before statistics were recorded) scores the plain mean
    art.statistic = "mean_llr"
    plain = art.doc_stats(texts)
    assert (plain["statistic"] == plain["mean_llr"]).all() and "expected_llr" not in plain
    del art.meta["statistic"]
    assert Artifact(art.vocab, art.human, art.llm, meta=art.meta).statistic == "mean_llr"
    with pytest.raises(ValueError, match="unknown llm-ngram statistic"):
        Artifact(art.vocab, art.human, art.llm, meta={"statistic": "perplexity"})


def test_binoculars_statistic_is_the_log_perplexity_over_the_cross_entropy(model):
    art = Artifact.load(model)
    art.statistic = "binoculars"
    texts = [human_doc(1), llm_doc(0), ""]
    stats = art.doc_stats(texts)
    hashes, lengths = token_hashes(texts)
    ids, real = padded_ids(art.vocab, hashes, lengths, 3)
    positions = np.flatnonzero(real)
    lp_llm = art.llm.logprob(ids, positions)
    # cross-entropy at each position: the human model's prediction scored by the LLM model, over every token
    cross, _ = expected_f(art, contexts(ids, positions, 3), "human", -1.0, 0.0)
    cut = lengths[0]
    for i, part in enumerate((slice(0, cut), slice(cut, None))):
        assert stats["log_ppl"][i] == pytest.approx(-lp_llm[part].mean())
        assert stats["cross_entropy"][i] == pytest.approx(cross[part].mean())
        assert stats["statistic"][i] == pytest.approx(lp_llm[part].mean() / cross[part].mean())
    assert stats["statistic"][0] < stats["statistic"][1]  # the LLM text is less surprising than expected
    assert stats["statistic"][2] == 0.0 and stats["n_tokens"][2] == 0


def test_combined_statistic_is_the_weighted_sum_of_its_features(model, tmp_path):
    art = Artifact.load(model)
    art.statistic, art.weights = "combined", np.array([2.0, 5.0, -1.5])
    texts = [human_doc(1), llm_doc(0), ""]
    stats = art.doc_stats(texts)
    hashes, lengths = token_hashes(texts)
    ids, real = padded_ids(art.vocab, hashes, lengths, 3)
    positions = np.flatnonzero(real)
    llr = art.llm.logprob(ids, positions) - art.human.logprob(ids, positions)
    centred = llr - expected_f(art, contexts(ids, positions, 3), "llm", 1.0, -1.0)[0]
    cut = lengths[0]
    for i, part in enumerate((slice(0, cut), slice(cut, None))):
        assert stats["centred_llr"][i] == pytest.approx(centred[part].mean())
        assert stats["centred_std"][i] == pytest.approx(centred[part].std())  # how even the LLR is over tokens
    art.statistic = "binoculars"
    assert stats["binoculars"] == pytest.approx(art.doc_stats(texts)["statistic"])
    assert stats["statistic"] == pytest.approx(2.0 * stats["centred_llr"] + 5.0 * stats["binoculars"]
                                               - 1.5 * stats["centred_std"])
    assert stats["statistic"][2] == 0.0 and stats["n_tokens"][2] == 0
    art.statistic = "combined"
    art.meta.update(statistic="combined", weights=[2.0, 5.0, -1.5])
    art.calibration = (0.0, 1.0)
    path = tmp_path / "combined.npz"
    art.save(path)
    assert list(Artifact.load(path).weights) == [2.0, 5.0, -1.5]
    row = run_detector(LlmNgram, [{"text": llm_doc(1)}], {"model": str(path), "min_score": 0.0}).to_pylist()[0]
    evidence = json.loads(row["evidence"])
    assert evidence["statistic"] == "combined" and row["score"] == pytest.approx(
        1 / (1 + np.exp(-evidence["combined"])), abs=1e-3)
    assert {"centred_llr", "binoculars", "centred_std", "mean_llr", "z"} <= set(evidence)
    with pytest.raises(ValueError, match="needs 3 weights"):
        Artifact(art.vocab, art.human, art.llm, meta={"statistic": "combined", "weights": [1.0]})


def test_fit_combination_recovers_the_weights_on_the_raw_features():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(20000, 2)) * [1.0, 10.0] + [0.0, 5.0]
    y = (rng.random(20000) < 1 / (1 + np.exp(-(0.5 + X @ [2.0, -0.1])))).astype(float)
    intercept, weights = fit_combination(X, y, l2=0.0)
    # classes weighted equally: the intercept moves by log(n_human / n_llm), the weights stay
    shift = np.log((1 - y).sum() / y.sum())
    assert weights == pytest.approx([2.0, -0.1], rel=0.1) and intercept == pytest.approx(0.5 + shift, abs=0.15)
    # separable held-out texts: the penalty keeps the fit finite
    intercept, weights = fit_combination(np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 3.0], [3.0, 2.0]]),
                                         np.array([0.0, 0.0, 1.0, 1.0]))
    assert np.isfinite(intercept) and np.isfinite(weights).all() and weights[0] > 0


def test_model_option_enters_the_config_hash(model, tmp_path):
    other = tmp_path / "other.npz"
    Artifact.train([human_doc(0)], [llm_doc(0)], max_vocab=20).save(other)
    a = LlmNgram.config_hash({"model": str(model)})
    assert a != LlmNgram.config_hash({"model": str(other)})
    copy = tmp_path / "copy.npz"
    copy.write_bytes(model.read_bytes())
    assert a == LlmNgram.config_hash({"model": str(copy)})  # the content decides, not the path
    with pytest.raises(DetectorError, match="is not a file"):
        LlmNgram.validate_options({"model": str(tmp_path / "missing.npz")})


def test_overlap_with_evaluation_data_drops_the_text_and_its_prompt_siblings():
    excluded = set()
    excluded |= llm_ngram._shingles("one two three four five six seven eight nine")
    records = [{"prompt": "p1", "text": "x one two three four five six seven eight y"},  # shares an 8-word run
               {"prompt": "p1", "text": "another generator answering the same prompt"},
               {"prompt": "p2", "text": "one two three four five six seven"},  # only 7 words in common
               {"text": "no prompt at all"}]
    kept, dropped = llm_ngram.drop_overlap(records, excluded)
    assert dropped == 2 and [r.get("prompt") for r in kept] == ["p2", None]


def test_train_command_writes_a_model_and_refuses_mistakes(cli, tmp_path):
    human = tmp_path / "human.jsonl"
    llm = tmp_path / "llm.jsonl"
    human.write_text("".join(json.dumps({"id": f"h{i}", "text": human_doc(i)}) + "\n" for i in range(30)))
    llm.write_text("".join(json.dumps({"id": f"l{i}", "text": llm_doc(i)}) + "\n" for i in range(30)))
    out = tmp_path / "m.npz"
    proc = cli("train", "llm-ngram", "--human", human, "--llm", llm, "--out", out, "--max-vocab", "100", check=0)
    assert "held out for calibration" in proc.stdout and out.is_file()
    art = Artifact.load(out)
    assert art.meta["order"] == 4 and art.meta["human_texts"] + art.meta["llm_texts"] < 60
    # the default: one logistic fit of the three features on the held-out tenth; the intercept in calibration
    assert art.statistic == "combined" and len(art.meta["weights"]) == 3 and art.calibration[1] == 1.0
    assert "combined = " in proc.stdout
    cli("train", "llm-ngram", "--human", human, "--llm", llm, "--out", out, "--max-vocab", "100",
        "--statistic", "mean_llr", check=0)
    art = Artifact.load(out)
    assert art.statistic == "mean_llr" and "weights" not in art.meta
    assert art.calibration[1] > 0  # higher LLR, more likely LLM: fitted on the held-out tenth

    bad = cli("train", "llm-ngram", "--human", tmp_path / "nope.jsonl", "--llm", llm, "--out", out)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1 and "nope.jsonl" in bad.stderr
    bad = cli("train", "llm-ngram", "--human", human, "--llm", llm, "--out", out, "--order", "9")
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_shipped_model_loads():
    art = Artifact.load(llm_ngram.DEFAULT_ARTIFACT)
    assert art.order == 4 and art.vocab.radix == 202 and art.meta["human_texts"] > 1000
    assert art.statistic == "combined" and art.calibration[1] == 1.0
    weights = dict(zip(COMBINED_FEATURES, art.weights))
    # fitted on held-out references: a higher centred LLR and Binoculars ratio, and a more even LLR, mean LLM text
    assert weights["centred_llr"] > 0 and weights["binoculars"] > 0 and weights["centred_std"] < 0
    assert LlmNgram.config_hash({}) == LlmNgram.config_hash({"model": str(llm_ngram.DEFAULT_ARTIFACT)})

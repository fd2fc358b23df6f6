"""llm_lm's arithmetic against a hand computation, on tiny randomly initialised models and a tokenizer built
here (nothing fetched), and its contract: opt-in, refuses a missing folder in one line, new weights re-tag.
Skipped without torch and transformers (``pip install 'provenance-guard[lm]'``)."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch", reason="llm_lm needs torch: pip install 'provenance-guard[lm]'")
transformers = pytest.importorskip("transformers", reason="llm_lm needs transformers: pip install 'provenance-guard[lm]'")

from provenance.plugins.llm_lm import LlmLm  # noqa: E402
from provenance.testing import run_detectors  # noqa: E402

WORDS = "the a cat dog sat ran on under mat tree big small red blue and then it was quite very".split()
TEXTS = ["the cat sat on the mat and then the dog ran under the tree",
         "a big red dog sat",
         "it was quite a small blue cat and it was very big then",
         "the"]  # one token: nothing to score


def save_tiny_model(folder, seed: int):
    """A one-layer GPT-2 with random weights and a word-level tokenizer over WORDS, saved as a user's folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[UNK]", "[PAD]", *WORDS])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]").save_pretrained(folder)
    torch.manual_seed(seed)
    config = GPT2Config(vocab_size=len(vocab), n_positions=64, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).eval().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    return save_tiny_model(root / "observer", 1), save_tiny_model(root / "performer", 2)


def next_token_log_probs(folder, text):
    """Per position, the list of log-probabilities of every next token, in plain Python floats."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ids = AutoTokenizer.from_pretrained(folder)(text, add_special_tokens=False)["input_ids"]
    logits = AutoModelForCausalLM.from_pretrained(folder)(torch.tensor([ids])).logits[0].double().tolist()
    out = []
    for row in logits[:-1]:
        m = max(row)
        log_z = m + math.log(sum(math.exp(v - m) for v in row))
        out.append([v - log_z for v in row])
    return ids, out


def hand_fast_detectgpt(folder, text):
    ids, log_p = next_token_log_probs(folder, text)
    ll = mean = var = 0.0
    for t, row in enumerate(log_p):
        probs = [math.exp(v) for v in row]
        mu = sum(p * v for p, v in zip(probs, row))
        ll += row[ids[t + 1]]
        mean += mu
        var += sum(p * v * v for p, v in zip(probs, row)) - mu * mu
    return (ll - mean) / math.sqrt(var)


def hand_binoculars(observer, performer, text):
    ids, log_obs = next_token_log_probs(observer, text)
    _, log_perf = next_token_log_probs(performer, text)
    n = len(log_perf)
    log_ppl = -sum(row[ids[t + 1]] for t, row in enumerate(log_perf)) / n
    x_ppl = -sum(sum(math.exp(o) * q for o, q in zip(orow, qrow)) for orow, qrow in zip(log_obs, log_perf)) / n
    return log_ppl / x_ppl


def test_fast_detectgpt_matches_the_hand_computation_in_mixed_length_batches(models):
    observer, _ = models
    detector = LlmLm(model=str(observer), batch_tokens=32, max_tokens=32)  # several padded batches
    crit, n = detector.criteria(TEXTS)
    assert list(n) == [13, 4, 12, 0]
    for text, value in zip(TEXTS[:3], crit[:3]):
        assert value == pytest.approx(hand_fast_detectgpt(observer, text), rel=1e-6)
    assert math.isnan(crit[3])


def test_binoculars_matches_the_hand_computation(models):
    observer, performer = models
    detector = LlmLm(model=str(observer), reference_model=str(performer), method="binoculars")
    crit, _ = detector.criteria(TEXTS[:3])
    for text, value in zip(TEXTS[:3], crit):
        assert value == pytest.approx(hand_binoculars(observer, performer, text), rel=1e-6)
    # the score falls as the criterion rises past the threshold (low binoculars = machine)
    assert detector.score(crit.min()) > detector.score(crit.max())


def test_through_the_runner_opt_in_and_evidence(models, tmp_path):
    observer, _ = models
    docs = [{"url": f"https://example.test/{i}", "text": t} for i, t in enumerate(TEXTS)]
    # threshold far below every criterion: each scored document is tagged, with its criterion as evidence
    result = run_detectors([LlmLm], docs, {"llm_lm": {"model": str(observer), "threshold": -100.0,
                                                      "min_tokens": 2}})
    rows = result.tags.to_pylist()
    assert len(rows) == 3 and {r["tag"] for r in rows} == {"llm_generated"}
    evidence = [json.loads(r["evidence"]) for r in rows]
    assert sorted(e["n_tokens"] for e in evidence) == [4, 12, 13]
    assert all(e["method"] == "fast_detectgpt" for e in evidence)


def test_new_weights_change_the_config_hash_and_a_missing_folder_is_one_line(models, tmp_path):
    observer, _ = models
    before = LlmLm.config_hash({"model": str(observer)})
    copy = save_tiny_model(tmp_path / "m", 1)
    assert LlmLm.config_hash({"model": str(copy)}) == before  # same weights elsewhere: same tags
    save_tiny_model(copy, 3)
    assert LlmLm.config_hash({"model": str(copy)}) != before
    with pytest.raises(Exception, match="is not a directory.*nothing is downloaded"):
        LlmLm.validate_options({"model": str(tmp_path / "nowhere")})


def test_not_run_by_default_only_when_configured(tmp_path, models):
    from provenance.pluginmanager import get_plugin_manager
    from provenance.runner import select_detectors

    pm = get_plugin_manager()
    assert "llm_lm" not in {r.spec.name for r in select_detectors(pm, {})}
    chosen = select_detectors(pm, {"detectors": {"llm_lm": {"model": str(models[0])}}})
    assert "llm_lm" in {r.spec.name for r in chosen}

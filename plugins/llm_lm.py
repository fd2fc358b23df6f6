"""LLM-generated text scored by a causal language model the user has on disk (optional: ``provenance-guard[lm]``).

Two published zero-shot criteria, both computed from one forward pass per model over the document's tokens
(the first token is context only):

- ``fast_detectgpt`` (Bao et al., 2024, the analytic "sampling discrepancy"): the text's log-likelihood under
  the scoring model minus its expectation when tokens are drawn from the reference model's next-token
  distribution, over the standard deviation of that expectation. LLM text sits high (models prefer their own
  likely tokens); human text near 0. One model serves as both unless ``reference_model`` is set.
- ``binoculars`` (Hans et al., 2024): the performer's log-perplexity of the text over the cross-perplexity
  between observer and performer (the observer's next-token distribution scored by the performer). LLM text
  sits low. Needs two models sharing a tokenizer: ``model`` (observer) and ``reference_model`` (performer).

Score = sigmoid((criterion - threshold) / scale), sign flipped for binoculars, so 0.5 sits at the threshold;
``threshold`` 0 means the method's published operating point (2.0 for fast_detectgpt, an illustrative value
for models of the GPT-Neo family; 0.9015 for binoculars, the paper's low-FPR point for Falcon-7B). Both
depend on the model: choose the threshold on your own labelled data. One tag, ``llm_generated`` (category
``llm``), on documents of at least ``min_tokens`` tokens scoring ``min_score`` or more; evidence:
criterion, method, token count, model hashes.

Nothing is ever downloaded: the models are loaded from local folders only (``local_files_only``, the Hub
offline), a missing folder is refused with one line, and the hash of each folder's files is in the config
hash, so new weights re-tag. Runs on a GPU when one is visible (``device = "auto"``), else on the CPU;
documents are batched by token length to waste little padding. It is opt-in (``opt_in``): it runs only when
``[detectors.llm_lm]`` is configured or it is named in ``--plugins``.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
from functools import lru_cache
from pathlib import Path

import numpy as np
import pyarrow as pa

import provenance

METHODS = {"fast_detectgpt": 2.0, "binoculars": 0.9015}  # method -> published operating point


def _missing_packages() -> list[str]:
    return [m for m in ("torch", "transformers") if importlib.util.find_spec(m) is None]


@lru_cache(maxsize=8)
def _folder_sha256(path: str, stamp: tuple) -> str:
    """sha256 over a model folder's files (names and contents); ``stamp`` (sizes, mtimes) keys the cache."""
    digest = hashlib.sha256()
    for file in sorted(p for p in Path(path).rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def folder_sha256(path: str) -> str:
    files = sorted(p for p in Path(path).rglob("*") if p.is_file())
    return _folder_sha256(path, tuple((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in files))


def _model_dir(option: str, key: str) -> str:
    path = Path(option).expanduser()
    if not path.is_dir():
        raise provenance.DetectorError(
            f"detector llm_lm: {key} {str(path)!r} is not a directory; set [detectors.llm_lm] {key} to a local "
            "Hugging Face model folder (config.json, weights, tokenizer): nothing is downloaded")
    return str(path.resolve())


class LlmLm(provenance.Detector):
    name = "llm_lm"
    version = "1"
    category = "llm"
    needs = ("text",)
    opt_in = True
    options = {"model": "", "reference_model": "", "method": "fast_detectgpt", "threshold": 0.0, "scale": 1.0,
               "max_tokens": 512, "batch_tokens": 8192, "min_tokens": 32, "min_score": 0.5, "device": "auto",
               "threads": 1}

    @classmethod
    def validate_options(cls, options):
        merged = super().validate_options(options)
        missing = _missing_packages()
        if missing:
            raise provenance.DetectorError(f"detector llm_lm needs {' and '.join(missing)}: "
                                           "pip install 'provenance-guard[lm]'")
        if not merged["model"]:
            raise provenance.DetectorError("detector llm_lm: set [detectors.llm_lm] model to a local model folder")
        merged["model"] = _model_dir(merged["model"], "model")
        if merged["reference_model"]:
            merged["reference_model"] = _model_dir(merged["reference_model"], "reference_model")
        if merged["method"] not in METHODS:
            raise provenance.DetectorError(f"detector llm_lm: method must be one of {sorted(METHODS)}")
        if merged["method"] == "binoculars" and not merged["reference_model"]:
            raise provenance.DetectorError("detector llm_lm: binoculars needs two models: set reference_model "
                                           "(the performer) beside model (the observer)")
        if merged["device"] not in ("auto", "cpu", "cuda") and not merged["device"].startswith("cuda:"):
            raise provenance.DetectorError("detector llm_lm: device must be auto, cpu, cuda or cuda:N")
        if merged["threads"] < 1:
            raise provenance.DetectorError("detector llm_lm: threads must be >= 1")
        if merged["scale"] <= 0 or merged["max_tokens"] < 2 or merged["batch_tokens"] < merged["max_tokens"]:
            raise provenance.DetectorError("detector llm_lm: scale must be > 0, max_tokens >= 2 and "
                                           "batch_tokens >= max_tokens")
        return merged

    @classmethod
    def config_hash(cls, options):
        # the weights, not their path, decide the output: new weights in the same folder re-tag
        merged = cls.validate_options(options)
        for key in ("model", "reference_model"):
            if merged[key]:
                merged[key] = folder_sha256(merged[key])
        merged.pop("device"), merged.pop("threads")  # where and how it runs does not change what it computes (to float rounding)
        return hashlib.sha256(json.dumps(merged, sort_keys=True).encode()).hexdigest()[:16]

    def __init__(self, **options):
        super().__init__(**options)
        os.environ.setdefault("HF_HUB_OFFLINE", "1")  # belt and braces beside local_files_only
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.torch = torch
        # One intra-op thread by default: a worker is forked, and a torch thread pool the parent already
        # started deadlocks in a forked child (seen whenever the calling process ran torch first). Parallel
        # CPU work comes from [tag] workers; raise ``threads`` where the tag command is the only torch user.
        torch.set_num_threads(self.options["threads"])
        device = self.options["device"]
        self.device = ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device

        def load(path):
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True)
            return model.to(self.device).eval()

        self.tokenizer = AutoTokenizer.from_pretrained(self.options["model"], local_files_only=True)
        self.model = load(self.options["model"])
        self.reference = self.model
        if self.options["reference_model"]:
            other = AutoTokenizer.from_pretrained(self.options["reference_model"], local_files_only=True)
            if other.get_vocab() != self.tokenizer.get_vocab():
                raise provenance.DetectorError("detector llm_lm: model and reference_model must share a tokenizer")
            self.reference = load(self.options["reference_model"])
        self.model_sha256 = folder_sha256(self.options["model"])[:16]

    def criteria(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """The method's criterion and the number of scored tokens per text (criterion NaN under 2 tokens)."""
        torch = self.torch
        ids = [self.tokenizer(t, add_special_tokens=False, truncation=True, max_length=self.options["max_tokens"])
               ["input_ids"] for t in texts]
        crit = np.full(len(texts), np.nan)
        n_scored = np.array([max(len(x) - 1, 0) for x in ids])
        order = sorted((i for i in range(len(ids)) if len(ids[i]) >= 2), key=lambda i: len(ids[i]))
        start = 0
        while start < len(order):  # batches of similar length, at most batch_tokens padded tokens each
            width = len(ids[order[start]])
            end = start
            while end < len(order) and (end - start + 1) * len(ids[order[end]]) <= self.options["batch_tokens"]:
                width = len(ids[order[end]])
                end += 1
            rows = order[start:end]
            batch = torch.zeros((len(rows), width), dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                batch[r, :len(ids[i])] = torch.tensor(ids[i])
                mask[r, :len(ids[i])] = 1
            with torch.inference_mode():
                batch, mask = batch.to(self.device), mask.to(self.device)
                scoring = self.model(input_ids=batch, attention_mask=mask).logits[:, :-1].double()
                reference = (scoring if self.reference is self.model else
                             self.reference(input_ids=batch, attention_mask=mask).logits[:, :-1].double())
                values = self._criterion(scoring, reference, batch[:, 1:], mask[:, 1:].double())
            crit[rows] = values.cpu().numpy()
            start = end
        return crit, n_scored

    def _criterion(self, scoring, reference, labels, mask):
        torch = self.torch
        log_p = torch.log_softmax(scoring, dim=-1)
        if self.options["method"] == "fast_detectgpt":
            p_ref = torch.softmax(reference, dim=-1)
            ll = log_p.gather(-1, labels.unsqueeze(-1)).squeeze(-1)
            mean = (p_ref * log_p).sum(-1)
            var = (p_ref * log_p.square()).sum(-1) - mean.square()
            return ((ll - mean) * mask).sum(-1) / (var * mask).sum(-1).sqrt()
        # binoculars: model = observer, reference = performer
        log_q = torch.log_softmax(reference, dim=-1)
        n = mask.sum(-1)
        log_ppl = -(log_q.gather(-1, labels.unsqueeze(-1)).squeeze(-1) * mask).sum(-1) / n
        x_ppl = -((torch.softmax(scoring, dim=-1) * log_q).sum(-1) * mask).sum(-1) / n
        return log_ppl / x_ppl

    def score(self, crit: np.ndarray) -> np.ndarray:
        method = self.options["method"]
        threshold = self.options["threshold"] or METHODS[method]
        z = (crit - threshold) / self.options["scale"]
        return 1.0 / (1.0 + np.exp(z if method == "binoculars" else -z))

    def tag_batch(self, batch: pa.RecordBatch):
        texts = [t or "" for t in batch.column("text").to_pylist()]
        crit, n = self.criteria(texts)
        score = self.score(crit)
        keep = np.flatnonzero((n >= self.options["min_tokens"]) & ~np.isnan(crit)
                              & (score >= self.options["min_score"]))
        if len(keep) == 0:
            return None
        evidence = [{"method": self.options["method"], "criterion": round(float(crit[i]), 4), "n_tokens": int(n[i]),
                     "model_sha256": self.model_sha256} for i in keep]
        return self.tags(batch.column("doc_id").take(pa.array(keep)), "llm_generated",
                         score=[round(float(score[i]), 4) for i in keep], evidence=evidence)


@provenance.hookimpl
def register_detectors(register):
    register(LlmLm)

"""``llm_ngram`` on labelled data it never trained on: AUROC, TPR at 1% FPR, FPR/TPR at the shipped threshold.

Data: ../shared/data/detect/labelled-dev.parquet (dataset, label 1 = LLM, generator, text). Nothing in the
model is trained or tuned on it (the references minus texts sharing an 8-word run or a prompt with it), so
every figure is leave-one-dataset-out by construction. Printed per dataset (and macro over datasets), per
generator within its dataset (against that dataset's human texts), for the mean LLR and for z (the mean
over its standard error), and the share of documents under ``min_tokens`` (no tag). Then the false-positive
rate at the shipped threshold on the human reference texts held out of training.

    .venv/bin/python eval/llm.py [--model ARTIFACT] [--dev PARQUET]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from metrics import auroc, tpr_at_fpr
from provenance.plugins import llm_ngram
from provenance.plugins._ngram_lm import Artifact

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def _row(name, labels, scores, flagged, width=34):
    labels = np.asarray(labels, bool)
    fpr = flagged[~labels].mean() if (~labels).any() else float("nan")
    tpr = flagged[labels].mean() if labels.any() else float("nan")
    return (f"  {name:<{width}} n={len(labels):>5}  AUROC {auroc(labels, scores):.3f}  "
            f"TPR@1%FPR {tpr_at_fpr(labels, scores, 0.01):.3f}  FPR@thr {fpr:.3f}  TPR@thr {tpr:.3f}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default=str(llm_ngram.DEFAULT_ARTIFACT))
    ap.add_argument("--dev", default=str(SHARED / "detect" / "labelled-dev.parquet"))
    ap.add_argument("--human", default=str(SHARED / "text" / "human_reference.jsonl.gz"))
    args = ap.parse_args(argv)
    if not Path(args.dev).is_file():
        print(f"eval: {args.dev} not found (needs ../shared)", file=sys.stderr)
        return 2
    art = Artifact.load(args.model)
    opts = llm_ngram.LlmNgram.options
    print(f"model {args.model} sha256 {art.sha256[:16]}  order {art.order}  vocab {art.vocab.radix - 2}  "
          f"calibration sigmoid({art.calibration[0]:.3f} + {art.calibration[1]:.3f} * mean_llr)  "
          f"threshold min_score={opts['min_score']}, min_tokens={opts['min_tokens']}")
    dev = pq.read_table(args.dev, columns=["dataset", "label", "generator", "text"]).to_pylist()
    t0 = time.process_time()
    mean, z, n = art.doc_stats([r["text"] for r in dev])
    print(f"scored {len(dev)} documents in {time.process_time() - t0:.1f} s CPU")
    score = art.score(mean)
    flagged = (n >= opts["min_tokens"]) & (score >= opts["min_score"])
    datasets = np.array([r["dataset"] for r in dev])
    generators = np.array([r["generator"] or "" for r in dev])
    labels = np.array([r["label"] == 1 for r in dev])
    for stat_name, stat in (("mean LLR (the score)", mean), ("z = mean / standard error", z)):
        print(f"\n{stat_name}")
        aucs, tprs = [], []
        for ds in sorted(set(datasets)):
            m = datasets == ds
            print(_row(ds, labels[m], stat[m], flagged[m]))
            aucs.append(auroc(labels[m], stat[m]))
            tprs.append(tpr_at_fpr(labels[m], stat[m], 0.01))
        print(f"  {'macro over datasets':<34} AUROC {np.mean(aucs):.3f}  TPR@1%FPR {np.mean(tprs):.3f}"
              f"   (study: 0.69-0.70, TPR@1%FPR 0.27)")
    print("\nper generator (mean LLR, against its dataset's human texts)")
    for ds in sorted(set(datasets)):
        for gen in sorted(set(generators[(datasets == ds) & labels])):
            m = (datasets == ds) & (~labels | (generators == gen))
            print(_row(f"{ds} / {gen}", labels[m], mean[m], flagged[m], 44))
    short = n < opts["min_tokens"]
    print(f"\nunder {opts['min_tokens']} tokens (never tagged): {short.mean():.3f} of dev documents")

    if Path(args.human).is_file():
        records = [r for r in llm_ngram.read_records(Path(args.human)) if llm_ngram.held_out(r)]
        hmean, _, hn = art.doc_stats([r["text"] for r in records])
        hflag = (hn >= opts["min_tokens"]) & (art.score(hmean) >= opts["min_score"])
        print(f"human reference texts held out of training: {len(records)}, flagged at the shipped threshold: "
              f"{hflag.mean():.4f} (the calibration was fitted on these, so this is in-distribution)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Caption scorers (UCIT's VizWiz-caption and Flickr30k): coco-caption metrics over a whole task.

Each sample's references are ``sample.answers`` (the five captions of the task's COCO-format file,
matched by position as UCIT's evaluator does); the prediction of sample i is scored against them.
The task number is the metric x 100, as UCIT's ``Result.text`` prints it (CIDEr exceeds 100 when
predictions repeat references). Metrics: ``mmcit/evaluation/captions.py``.

* ``caption_cider``: CIDEr-D. mmcit's default caption number: it needs no Java.
* ``caption_average6``: mean of BLEU-1..4, ROUGE-L and CIDEr-D (the reference's average without
  METEOR, the one metric that needs Java).
* ``caption_average``: the mean of the seven numbers UCIT's evaluator prints (BLEU-1..4, METEOR,
  ROUGE-L, CIDEr), the number the only MCITlib aggregator found puts in the matrix; needs Java.

Both modes score alike; a missing prediction is an empty caption (the reference crashes instead).
"""
from __future__ import annotations

from typing import Sequence

from mmcit.data.sample import Sample
from mmcit.evaluation.captions import CAPTION_METRICS, WITHOUT_JAVA, caption_scores
from mmcit.evaluation.scoring import SCORERS, Scorer, pct_count


def _references(sample: Sample) -> list[str]:
    refs = sample.answers if sample.answers else ([sample.answer] if sample.answer else [])
    if not refs:
        raise ValueError(f"caption sample {sample.id!r} has no reference captions")
    return list(refs)


def _corpus(metrics: Sequence[str]):
    def score(predictions: list, samples: Sequence[Sample], reference: bool) -> tuple[float, list[float]]:
        corpus, per = caption_scores([p or "" for p in predictions], [_references(s) for s in samples], metrics)
        per_sample = [100.0 * sum(per[m][i] for m in metrics) / len(metrics) for i in range(len(samples))]
        return 100.0 * sum(corpus.values()) / len(metrics), per_sample
    return score


def _not_per_sample(pred: str, sample: Sample, reference: bool) -> float:
    raise ValueError("caption metrics are computed over a whole task")


for _name, _metrics, _doc in (
    ("caption_cider", ("CIDEr",), "CIDEr-D x 100 over the task (coco-caption; Python PTB tokenizer; no Java)"),
    ("caption_average6", WITHOUT_JAVA, "Mean of BLEU-1..4, ROUGE-L, CIDEr-D x 100 (coco-caption; no Java)"),
    ("caption_average", CAPTION_METRICS,
     "Mean of BLEU-1..4, METEOR, ROUGE-L, CIDEr-D x 100: UCIT's 'Average' (METEOR needs Java)"),
):
    SCORERS.register(Scorer(_name, _not_per_sample, _doc, pct_count, corpus=_corpus(_metrics)), name=_name, doc=_doc)

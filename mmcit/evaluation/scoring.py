"""Per-sample scorers, registered by name, in two modes.

A task names its scorer (``TaskData.scorer``). ``reference`` mode gives, sample for sample, the result
of the original evaluation scripts, quirks included, so that numbers can be compared with published
ones; ``default`` mode differs only where a rule is a plain bug (each scorer's doc says which).
The built-in scorers are the modules of ``mmcit.evaluation.scorers`` (``coin.py``: CoIN's eight).

Whitespace: the reference generation scripts strip model outputs before writing the answer files
the evaluators read, so predictions are stripped of leading and trailing whitespace here, in both
modes, before any rule applies. Gold answers are used as given. A prediction of ``None`` means "no
prediction" and scores 0 in every scorer and mode.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from mmcit.data.sample import Sample
from mmcit.evaluation.config import MODES
from mmcit.registry import Registry

__all__ = ["MODES", "SCORERS", "Scorer", "score_sample", "score_task"]

# A scorer body receives the stripped prediction, the sample and whether reference mode is on.
ScoreFn = Callable[[str, Sample, bool], float]
# A corpus scorer (captions) sees the whole task at once: stripped predictions (None = no
# prediction), the samples and the mode; it returns the task's % and one score per sample.
CorpusFn = Callable[[list, Sequence[Sample], bool], tuple[float, list[float]]]


@dataclass(frozen=True)
class Scorer:
    """A registered scorer: its name, its function and what it does in each mode."""

    name: str
    fn: ScoreFn
    doc: str
    # How the reference script turns the per-sample scores into a %; scripts order the float
    # operations differently, and keeping each order makes the task % bit-identical too.
    percent: Callable[[float, int], float]
    #: The reference script's % where it differs from ``percent`` (OCRBench's hits / 10).
    percent_reference: Callable[[float, int], float] | None = None
    #: Set for a metric over the whole task (CIDEr): ``score_task`` calls it instead of ``fn``.
    corpus: CorpusFn | None = None


def pct_count(total: float, n: int) -> float:
    """``100. * right / total``."""
    return 100.0 * total / n


def pct_mean(total: float, n: int) -> float:
    """``100. * (sum(scores) / len(scores))`` (TextVQA)."""
    return 100.0 * (total / n)


def pct_avg_scaled(total: float, n: int) -> float:
    """``correct / total * 100`` (ScienceQA), ``avg(scores) * 100`` (GQA)."""
    return total / n * 100


#: scorer name -> Scorer (``mmcit ls scorers``).
SCORERS: Registry[Scorer] = Registry("scorers", package="mmcit.evaluation.scorers")


def _check(scorer: str, mode: str) -> Scorer:
    if mode not in MODES:
        raise ValueError(f"unknown scoring mode {mode!r}; valid modes: {', '.join(MODES)}")
    return SCORERS.get(scorer, "scorer")


def _score(entry: Scorer, prediction: str | None, sample: Sample, mode: str) -> float:
    if prediction is None:
        return 0.0
    if not isinstance(prediction, str):
        raise TypeError(f"prediction must be a str or None, got {type(prediction).__name__}")
    if entry.corpus is not None:
        raise ValueError(f"scorer {entry.name!r} scores a whole task (a corpus metric), not one sample")
    return float(entry.fn(prediction.strip(), sample, mode == "reference"))


def score_sample(scorer: str, prediction: str | None, sample: Sample, mode: str = "default") -> float:
    """Score one prediction for one sample; returns a value in [0, 1].

    ``scorer`` is one of ``SCORERS``; ``mode`` is "default" or "reference" (see the module
    docstring and each scorer's doc). The prediction is stripped of surrounding whitespace first;
    ``None`` scores 0. Raises ValueError for an unknown scorer or mode, or for a sample that lacks
    what its scorer needs (10 TextVQA answers, a grounding size, a ScienceQA gold letter...).
    """
    return _score(_check(scorer, mode), prediction, sample, mode)


def score_task(
    scorer: str,
    predictions: Sequence[str | None],
    samples: Sequence[Sample],
    mode: str = "default",
) -> tuple[float, list[float]]:
    """Score a whole test set: (accuracy in %, per-sample scores).

    Per-sample scorers give scores in [0, 1] and a % from 0 to 100; a corpus scorer (captions)
    gives its metric x 100 (CIDEr goes above 100) and each sample's own value of that metric.

    ``predictions[i]`` is scored against ``samples[i]``. Raises ValueError if the lengths differ,
    if there are no samples, or for an unknown scorer or mode.
    """
    entry = _check(scorer, mode)
    if len(predictions) != len(samples):
        raise ValueError(f"{len(predictions)} predictions for {len(samples)} samples; they must match")
    if not samples:
        raise ValueError("cannot score an empty task: no samples")
    if entry.corpus is not None:
        for p in predictions:
            if p is not None and not isinstance(p, str):
                raise TypeError(f"prediction must be a str or None, got {type(p).__name__}")
        stripped = [None if p is None else p.strip() for p in predictions]
        return entry.corpus(stripped, samples, mode == "reference")
    scores = [_score(entry, p, s, mode) for p, s in zip(predictions, samples)]
    percent = entry.percent_reference if mode == "reference" and entry.percent_reference else entry.percent
    return percent(sum(scores), len(scores)), scores

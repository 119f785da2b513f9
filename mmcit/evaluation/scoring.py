"""Per-sample scorers, registered by name, in two modes.

A task names its scorer (``TaskData.scorer``). ``reference`` mode gives, sample for sample, the result
of the original evaluation scripts, quirks included, so that numbers can be compared with published
ones; ``default`` mode differs only where a rule is a plain bug (each scorer's doc says which).
The built-in scorers are the modules of ``mmcit.evaluation.scorers`` (``coin.py``: CoIN's eight).

Whitespace: ``default`` mode strips leading and trailing whitespace from a prediction before any
rule applies; ``reference`` mode scores the text exactly as given, as the original evaluators read
an answer file (the reference generation scripts strip their own outputs before writing it, and so
does mmcit's generation, so the two modes differ here only for answers written by other tools).
Gold answers are used as given. A prediction of ``None`` means "no prediction" and scores 0 in
every scorer and mode.

``check_samples`` runs a scorer over a test set before any prediction exists, so that a run or a
scoring command refuses a sample its scorer cannot score (or says which ones it scores with a
fallback) before any work starts.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from mmcit.data.sample import Sample
from mmcit.evaluation.config import MODES
from mmcit.registry import Registry

__all__ = ["MODES", "SCORERS", "Scorer", "check_samples", "sample_problem", "score_sample", "score_task"]

# A scorer body receives the prediction (stripped in default mode), the sample and whether
# reference mode is on; it raises ValueError for a sample that lacks what it needs.
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
    # Why default mode scores this sample with a fallback (e.g. TextVQA without its ten answers),
    # or None; reference mode refuses such a sample (its ``fn`` raises).
    gap: Callable[[Sample], str | None] | None = None
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
    reference = mode == "reference"
    return float(entry.fn(prediction if reference else prediction.strip(), sample, reference))


def score_sample(scorer: str, prediction: str | None, sample: Sample, mode: str = "default") -> float:
    """Score one prediction for one sample; returns a value in [0, 1].

    ``scorer`` is one of ``SCORERS``; ``mode`` is "default" or "reference" (see the module
    docstring and each scorer's doc). Default mode strips the prediction's surrounding whitespace
    first, reference mode reads it as given; ``None`` scores 0. Raises ValueError for an unknown
    scorer or mode, or for a sample that lacks what its scorer needs (10 TextVQA answers in
    reference mode, a grounding size, a ScienceQA gold letter...).
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


def sample_problem(scorer: str, sample: Sample, mode: str = "default") -> str | None:
    """Why ``scorer`` cannot score ``sample`` in ``mode``, whatever the prediction, or None."""
    entry = _check(scorer, mode)
    if entry.corpus is not None:  # a corpus metric reads its golds when the whole task is scored
        return None
    try:
        entry.fn("", sample, mode == "reference")  # every scorer reads its gold whatever the prediction
    except ValueError as e:
        return str(e)
    return None


def check_samples(scorer: str, samples: Sequence[Sample], mode: str = "default") -> tuple[str | None, str | None]:
    """Whether ``scorer`` can score every sample in ``mode``, known before any prediction exists.

    Returns ``(error, warning)``, each one line or None: ``error`` counts the samples the scorer
    refuses (``sample_problem``: a missing gold box, a ScienceQA gold beyond its choices, TextVQA
    without its ten answers in reference mode...) and gives the first reason; ``warning`` counts
    those default mode scores with a fallback (``Scorer.gap``) and says why.
    """
    entry = _check(scorer, mode)
    failures: list[str] = []
    gaps: dict[str, int] = {}
    for sample in samples:
        problem = sample_problem(scorer, sample, mode)
        if problem is not None:
            failures.append(problem)
            continue
        reason = entry.gap(sample) if entry.gap is not None else None
        if reason:
            gaps[reason] = gaps.get(reason, 0) + 1
    n = len(samples)
    error = (f"{len(failures)} of {n} test sample(s) cannot be scored in {mode} mode; first: {failures[0]}"
             if failures else None)
    warning = "; ".join(f"{k} of {n} test sample(s): {reason}" for reason, k in gaps.items()) or None
    return error, warning

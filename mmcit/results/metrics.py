"""Continual-learning metrics from the accuracy matrix (docs/method.md, "Continual metrics").

``matrix[j][i]`` is the accuracy on task i after training task j (0-based here; the docs count from
1). A continual run of T tasks has T rows; row j holds the tasks seen so far, so entries i > j are
either ``None`` or left out (row j may have length j + 1, or anything up to T with ``None`` beyond
the diagonal). With A = matrix and L = T - 1 (the last row):

* average_accuracy = mean_i A[L][i]
* forgetting       = mean_{i<L} ( max_{j in [i, L-1]} A[j][i] - A[L][i] )   (positive = forgotten)
* new_accuracy     = mean_i A[i][i]                                           (plasticity)
* bwt              = mean_{i<L} ( A[L][i] - A[i][i] )
* maa              = mean_t ( mean_{i<=t} A[t][i] )

Forgetting and BWT have no term when T == 1 and are then ``None``.

A jointly trained ("multitask") run is evaluated once, on all tasks: a single row of T values.
Only average_accuracy is defined for it (the mean of the row); the other metrics are ``None``.
"""
from __future__ import annotations

import math
from numbers import Real
from typing import Sequence

__all__ = ["METRIC_KEYS", "continual_metrics"]

METRIC_KEYS: tuple[str, ...] = ("average_accuracy", "forgetting", "new_accuracy", "bwt", "maa")


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)


def _value(x: object, j: int, i: int) -> float:
    """A measured entry: a finite real number (bool is rejected: it is almost surely a bug)."""
    if x is None:
        raise ValueError(f"matrix[{j}][{i}] is None but task {i} was trained by step {j}: it must be measured")
    if isinstance(x, bool) or not isinstance(x, Real) or not math.isfinite(float(x)):
        raise ValueError(f"matrix[{j}][{i}] must be a finite number, got {x!r}")
    return float(x)


def _joint_metrics(row: Sequence[float | None]) -> dict:
    if any(x is None for x in row):
        raise ValueError(
            "a single row with several entries is read as a joint (multitask) run, which must have "
            f"every task measured, got {list(row)!r}; for a continual run give one row per task"
        )
    values = [_value(x, 0, i) for i, x in enumerate(row)]
    return {
        "average_accuracy": _mean(values),
        "forgetting": None,
        "new_accuracy": None,
        "bwt": None,
        "maa": None,
    }


def continual_metrics(matrix: Sequence[Sequence[float | None]], joint: bool | None = None) -> dict:
    """Average accuracy, forgetting, new accuracy, BWT and MAA of an accuracy matrix.

    ``matrix[j][i]``: accuracy on task i after training task j; entries above the diagonal are
    ``None`` or absent. Returns a dict with the keys of ``METRIC_KEYS``; forgetting and bwt are
    ``None`` when there is a single task.

    ``joint``: ``True`` reads ``matrix`` as one evaluation of a jointly trained run (exactly one
    row, every entry measured) and returns only average_accuracy (the others ``None``). ``False``
    always reads it as a continual run. ``None`` (default) detects a joint run: a matrix of one row
    with more than one entry is joint (a continual matrix's first row can hold only task 0), any
    other matrix is continual. A one-row, one-entry matrix is therefore read as a continual run of
    one task unless ``joint=True`` is given.

    Raises ValueError on an empty matrix, a ragged shape (row j shorter than j + 1 or longer than T,
    a value above the diagonal), a missing or non-numeric value on or below the diagonal.
    """
    rows = [list(r) for r in matrix]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("the accuracy matrix must have at least one row and no empty row")

    if joint is None:
        joint = len(rows) == 1 and len(rows[0]) > 1
    if joint:
        if len(rows) != 1:
            raise ValueError(f"a joint run is evaluated once: expected 1 row, got {len(rows)}")
        return _joint_metrics(rows[0])

    n = len(rows)  # T: one row per trained task
    a: list[list[float]] = []
    for j, row in enumerate(rows):
        if len(row) < j + 1 or len(row) > n:
            raise ValueError(
                f"row {j} has {len(row)} entries; after training task {j} of {n} it needs between "
                f"{j + 1} (lower-triangular) and {n} (full, None above the diagonal)"
            )
        if any(x is not None for x in row[j + 1 :]):
            raise ValueError(f"row {j} has a value for a task after task {j}, which was not yet trained")
        a.append([_value(row[i], j, i) for i in range(j + 1)])

    last = n - 1
    result = {
        "average_accuracy": _mean(a[last]),
        "forgetting": None,
        "new_accuracy": _mean([a[i][i] for i in range(n)]),
        "bwt": None,
        "maa": _mean([_mean(a[t]) for t in range(n)]),
    }
    if n > 1:
        # The best accuracy task i ever had before the final step, minus its final accuracy.
        result["forgetting"] = _mean([max(a[j][i] for j in range(i, last)) - a[last][i] for i in range(last)])
        result["bwt"] = _mean([a[last][i] - a[i][i] for i in range(last)])
    return result

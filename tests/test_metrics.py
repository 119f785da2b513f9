"""Continual metrics on small matrices computed by hand."""
from __future__ import annotations

import pytest

from mmcit.results.metrics import METRIC_KEYS, continual_metrics


def approx_dict(d: dict) -> dict:
    return {k: (None if v is None else pytest.approx(v)) for k, v in d.items()}


# A[j][i], 3 tasks:
#            task0 task1 task2
# after t0:   50
# after t1:   70    90
# after t2:   60    85    75
# average  = (60 + 85 + 75) / 3              = 220/3 = 73.333...
# forgetting: task0 max(50, 70) - 60 = 10; task1 max(90) - 85 = 5   -> 7.5
# new      = (50 + 90 + 75) / 3              = 215/3 = 71.666...
# bwt      : task0 60 - 50 = 10; task1 85 - 90 = -5                  -> 2.5
# maa      = (50 + (70+90)/2 + 220/3) / 3 = (50 + 80 + 73.333...) / 3 = 610/9 = 67.777...
EXPECTED_3X3 = {
    "average_accuracy": 220 / 3,
    "forgetting": 7.5,
    "new_accuracy": 215 / 3,
    "bwt": 2.5,
    "maa": 610 / 9,
}


def test_lower_triangular_3x3():
    m = [[50], [70, 90], [60, 85, 75]]
    out = continual_metrics(m)
    assert set(out) == set(METRIC_KEYS)
    assert out == approx_dict(EXPECTED_3X3)


def test_full_matrix_with_none_above_diagonal():
    m = [[50, None, None], [70, 90, None], [60, 85, 75]]
    assert continual_metrics(m) == approx_dict(EXPECTED_3X3)
    # Rows between the two forms are accepted as long as nothing is above the diagonal.
    m = [[50, None], [70, 90], [60, 85, 75]]
    assert continual_metrics(m) == approx_dict(EXPECTED_3X3)


def test_forgetting_is_not_minus_bwt_when_peak_is_off_diagonal():
    # 2 tasks: A = [[40], [80, 60]]. forgetting: max(40) - 80 = -40 (it improved);
    # bwt: 80 - 40 = 40; avg (80+60)/2 = 70; new (40+60)/2 = 50; maa (40 + 70)/2 = 55.
    out = continual_metrics([[40], [80, 60]])
    assert out == approx_dict(
        {"average_accuracy": 70, "forgetting": -40, "new_accuracy": 50, "bwt": 40, "maa": 55}
    )


def test_forgetting_uses_best_earlier_accuracy():
    # 4 tasks; task0 peaks at step 1, task1 at step 2.
    m = [
        [10],
        [30, 20],
        [25, 40, 50],
        [5, 35, 45, 60],
    ]
    # forgetting: t0 max(10,30,25)-5 = 25; t1 max(20,40)-35 = 5; t2 max(50)-45 = 5 -> 35/3
    # bwt: (5-10) + (35-20) + (45-50) = -5 + 15 - 5 = 5 -> 5/3
    # avg: (5+35+45+60)/4 = 36.25; new: (10+20+50+60)/4 = 35
    # maa: (10 + 25 + 115/3 + 36.25) / 4
    out = continual_metrics(m)
    assert out == approx_dict(
        {
            "average_accuracy": 36.25,
            "forgetting": 35 / 3,
            "new_accuracy": 35.0,
            "bwt": 5 / 3,
            "maa": (10 + 25 + 115 / 3 + 36.25) / 4,
        }
    )


def test_single_task():
    out = continual_metrics([[42.0]])
    assert out == {"average_accuracy": 42.0, "forgetting": None, "new_accuracy": 42.0, "bwt": None, "maa": 42.0}
    # Forced joint: only the average.
    out = continual_metrics([[42.0]], joint=True)
    assert out == {"average_accuracy": 42.0, "forgetting": None, "new_accuracy": None, "bwt": None, "maa": None}


def test_joint_row_detected_and_flagged():
    expected = {"average_accuracy": 60.0, "forgetting": None, "new_accuracy": None, "bwt": None, "maa": None}
    assert continual_metrics([[50, 60, 70]]) == expected
    assert continual_metrics([[50, 60, 70]], joint=True) == expected
    assert continual_metrics(((50, 60, 70),)) == expected


def test_joint_errors():
    with pytest.raises(ValueError, match="joint"):
        continual_metrics([[50, None, None]])          # auto-detected joint with a missing task
    with pytest.raises(ValueError, match="1 row"):
        continual_metrics([[50], [60, 70]], joint=True)
    with pytest.raises(ValueError, match="row 0"):
        continual_metrics([[50, 60, 70]], joint=False)  # as continual: row 0 too long


@pytest.mark.parametrize(
    "matrix, msg",
    [
        ([], "at least one row"),
        ([[]], "at least one row"),
        ([[50], []], "at least one row"),
        ([[50], [60]], "row 1"),                       # row 1 too short
        ([[50], [60, 70, 80]], "row 1"),               # row longer than T
        ([[50, 1], [60, 70]], "not yet trained"),      # value above the diagonal
        ([[50], [None, 70]], "None"),                  # missing measurement below the diagonal
        ([[50], [60, "70"]], "finite number"),
        ([[50], [60, float("nan")]], "finite number"),
        ([[True], [60, 70]], "finite number"),
    ],
)
def test_illegal_shapes(matrix, msg):
    with pytest.raises(ValueError, match=msg):
        continual_metrics(matrix)


def test_accepts_ints_and_returns_floats():
    out = continual_metrics([[1], [2, 3]])
    assert all(isinstance(v, float) for v in out.values())

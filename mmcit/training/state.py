"""What the training loop reports about a stage, and what it needs to continue one exactly."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class TrainStats:
    """What a stage's training did: steps, samples, first and last loss, seconds."""

    steps: int
    samples: int
    first_loss: float
    last_loss: float
    seconds: float


@dataclass
class TrainState:
    """Everything :func:`train_stage` needs to continue a stage exactly where it stopped.

    Taken after optimizer step ``step`` (1-based count of steps done) by the ``on_checkpoint``
    callback, and given back as ``resume``. The adapter weights and the method's state are not in
    here: the runner saves and restores those itself (mmcit/training/checkpoint.py).
    """

    step: int  # optimizer steps done in this stage
    total: int  # steps of the whole stage (a resume with another total would not be the same run)
    order: list[int]  # sample indices still to draw in the current epoch permutation
    rng: list  # random.Random(seed).getstate() of the shuffling RNG, as JSON-friendly lists
    first_loss: float
    last_loss: float
    seconds: float  # training time of this stage so far
    optimizer: dict[str, Any]  # optimizer.state_dict()
    scheduler: dict[str, Any]  # scheduler.state_dict() (LambdaLR: closures stored as None)
    global_rng: dict[str, Any] | None = None  # checkpoint.capture_rng(); restored just before the loop
    mix: dict[str, Any] | None = None  # the mixed-in rows' order and RNG (train_stage's ``mix``), if any

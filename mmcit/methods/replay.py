"""Replay (rehearsal): a buffer of earlier tasks' training samples mixed into every new batch.

Source: experience replay / rehearsal, Ratcliff (1990), "Connectionist models of recognition
memory", and, in the form used here (a small episodic memory filled by reservoir sampling whose
samples share each training batch with the current task's), Chaudhry et al. (2019), "On Tiny
Episodic Memories in Continual Learning" (arXiv 1902.10486); reservoir sampling is Vitter's
Algorithm R (1985, "Random sampling with a reservoir").

After each task the buffer keeps a share of that task's training samples: ``per_task_count``
samples, or ``per_task_fraction`` of them (rounded half up, at least one), chosen by Algorithm R
over the task's samples in file order with a generator seeded from the run's seed and the task's
name, so the buffer is the same on every process and in every run of one seed. During a later
task, ``mixed_rows(ratio, batch)`` rows of each global batch (``ratio * batch`` rounded half up, at
least 1, at most batch - 1) come from the buffer, drawn by their own seeded permutation of all
buffered samples, and the rest from the task; the number of steps is the task's own, so a replay
step costs what a ``lora_ft`` step costs. One shared adapter is trained, as in ``lora_ft``.

The buffer is kept as sample positions and ids per task (``state_dict``), so checkpoints hold it
and a resume uses exactly the same samples; the ids are checked against the data on resume.
"""
from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mmcit.errors import CheckpointError, ConfigError
from mmcit.methods.base import METHODS, Method, MethodConfig, Stage

if TYPE_CHECKING:
    from mmcit.data.sample import Sample, TaskData
    from mmcit.models.wrapper import MMModel


@dataclass
class ReplayConfig(MethodConfig):
    """``replay``: how much of each finished task the buffer keeps (a count or a fraction) and the
    share of every later global batch that buffered samples fill."""

    type: str = "replay"
    per_task_count: int | None = None  # samples kept per task; exclusive with per_task_fraction
    per_task_fraction: float | None = 0.1  # share of a task's training samples kept
    ratio: float = 0.25  # share of each global batch drawn from the buffer

    def validate(self) -> None:
        """Exactly one buffer size; the ratio leaves room for the task's own samples."""
        if (self.per_task_count is None) == (self.per_task_fraction is None):
            raise ConfigError("replay needs exactly one of method.per_task_count and method.per_task_fraction "
                              "(set the other to null)")
        if self.per_task_count is not None and self.per_task_count < 1:
            raise ConfigError(f"method.per_task_count must be >= 1, got {self.per_task_count}")
        if self.per_task_fraction is not None and not 0.0 < self.per_task_fraction <= 1.0:
            raise ConfigError(f"method.per_task_fraction must be in (0, 1], got {self.per_task_fraction}")
        if not 0.0 < self.ratio < 1.0:
            raise ConfigError(f"method.ratio must be in (0, 1) (the share of a batch drawn from the buffer), "
                              f"got {self.ratio}")

    def validate_run(self, run: Any) -> None:
        """Every global batch must hold a buffered row and a row of the task's own."""
        small = [b for b in [run.train.batch_size, *run.train.task_batch_size.values()] if b < 2]
        if small:
            raise ConfigError(f"replay mixes buffered samples into each batch: train.batch_size (and every "
                              f"train.task_batch_size) must be >= 2, got {small[0]}")

    def keep(self, n: int) -> int:
        """How many of a task's ``n`` training samples the buffer keeps."""
        if n == 0:
            return 0
        if self.per_task_count is not None:
            return min(self.per_task_count, n)
        return min(n, max(1, math.floor(self.per_task_fraction * n + 0.5)))


def reservoir(n: int, k: int, rng: random.Random) -> list[int]:
    """Algorithm R: ``k`` positions of a stream of ``n`` items, each subset equally likely; the
    positions in reservoir order."""
    kept = list(range(min(k, n)))
    for i in range(k, n):
        j = rng.randint(0, i)
        if j < k:
            kept[j] = i
    return kept


@METHODS.register
class Replay(Method):
    """One shared adapter; each batch mixes in samples of earlier tasks from a reservoir buffer."""

    name = "replay"
    config_cls = ReplayConfig

    def __init__(self, cfg: ReplayConfig):
        super().__init__(cfg)
        self.tasks: dict[str, "TaskData"] = {}
        self.buffer: dict[str, dict[str, list]] = {}  # task -> {"indices": [...], "ids": [...]}

    def plan(self, tasks: list["TaskData"]) -> list[Stage]:
        """Sequential stages; the tasks are kept to turn the buffer's positions back into samples."""
        self.tasks = {t.name: t for t in tasks}
        return super().plan(tasks)

    def mixed_in(self, stage: Stage) -> tuple[list["Sample"], float]:
        """The buffered samples of every earlier task, at ``ratio`` of each batch."""
        training = {t.name for t in stage.train}
        samples = [s for task, entry in self.buffer.items() if task not in training
                   for s in self._samples(task, entry)]
        return samples, self.cfg.ratio

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Fill the buffer with the stage's tasks' reservoirs."""
        seed = self.ctx.seed if self.ctx is not None else 0
        for task in stage.train:
            rng = random.Random(f"replay-{seed}-{task.name}")
            kept = reservoir(len(task.train), self.cfg.keep(len(task.train)), rng)
            self.buffer[task.name] = {"indices": kept, "ids": [task.train[i].id for i in kept]}

    def _samples(self, task: str, entry: dict[str, list]) -> list["Sample"]:
        data = self.tasks.get(task)
        if data is None:
            raise CheckpointError(f"the replay buffer holds samples of {task}, which is not in this run's stream")
        out = [data.train[i] if i < len(data.train) else None for i in entry["indices"]]
        if any(s is None or s.id != want for s, want in zip(out, entry["ids"])):
            raise CheckpointError(f"the replay buffer's samples of {task} are not in its training data any more "
                                  "(the data changed since the checkpoint)")
        return out

    # -- persistence and reporting ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """The buffer: sample positions and ids per task (JSON)."""
        return {"buffer": {t: {"indices": list(e["indices"]), "ids": list(e["ids"])} for t, e in self.buffer.items()}}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (checked against the data when first used)."""
        self.buffer = {t: {"indices": [int(i) for i in e["indices"]], "ids": list(e["ids"])}
                       for t, e in state.get("buffer", {}).items()}

    def stored_samples(self) -> dict[str, int]:
        """The buffer's size."""
        return {"replay_buffer": sum(len(e["indices"]) for e in self.buffer.values())}

    def summary(self) -> dict:
        """Buffered samples per task and the mix ratio."""
        c = self.cfg
        return {"ratio": c.ratio, "per_task_count": c.per_task_count, "per_task_fraction": c.per_task_fraction,
                "buffer": {t: len(e["indices"]) for t, e in self.buffer.items()}}

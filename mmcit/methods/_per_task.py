"""The state that the per-task-adapter methods share (not a method: the registry skips ``_`` modules).

* :class:`AnchoredAdapters`: an adapter per task and an :class:`~mmcit.routing.anchors.AnchorSelector`
  that picks one for each test sample from the sample's own features (``eproj``, ``disco``,
  ``hide_llava``).
* :class:`StackedLoRAs`: a fresh LoRA per task stacked over the frozen earlier ones, with one record
  per trained stage for the report (``olora``, ``sefe``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mmcit.methods.base import Method, RunContext, Stage
from mmcit.models.task_adapters import TaskAdapters
from mmcit.models.task_loras import TaskLoRAs
from mmcit.routing.anchors import AnchorSelector
from mmcit.training import distributed as dist

if TYPE_CHECKING:
    from mmcit.data.sample import Sample
    from mmcit.models.wrapper import MMModel


class AnchoredAdapters(Method):
    """Per-task adapters (``self.adapters``) chosen per test sample by ``self.selector`` over the
    config's ``anchors`` settings; ``temperature`` is the authors' softmax temperature (report only)."""

    temperature: float | None = None

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.adapters = TaskAdapters()
        self.selector = AnchorSelector(cfg.anchors, temperature=self.temperature)
        self.model: "MMModel | None" = None

    def setup(self, model: "MMModel", ctx: RunContext) -> None:
        """Keep the model: the test-time choice reads features through it."""
        super().setup(model, ctx)
        self.model = model

    def fit_anchors(self, stage: Stage, model: "MMModel") -> None:
        """Store the stage's anchors (from its training samples) under its adapter's name."""
        samples = [s for t in stage.train for s in t.train]
        seed = (self.ctx.seed if self.ctx else 0) + stage.index
        with dist.gathered(model):
            self.selector.fit(self.adapters.names[stage.index], [t.name for t in stage.train], model, samples, seed)
        self.selector.label = stage.name

    def select_adapter(self, samples: list["Sample"]) -> list[str | None]:
        """The adapter of the most similar task, from each sample's own features."""
        return self.selector.select(self.model, samples)

    def state_dict(self) -> dict:
        """The adapters (names, tasks) and the selector (anchors, counts)."""
        return {**self.adapters.state_dict(), **self.selector.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (the caller restored the adapters)."""
        self.adapters.load_state_dict(state)
        self.selector.load_state_dict(state)

    def summary(self) -> dict:
        """Adapters with their tasks, anchor sizes and how test samples were assigned."""
        return {"adapters": dict(zip(self.adapters.names, self.adapters.tasks)), **self.selector.summary()}


class StackedLoRAs(Method):
    """A fresh LoRA per task (``self.tasks``), the earlier ones frozen and stacked, and one record per
    trained stage (``self.records``) kept in checkpoints."""

    def __init__(self, cfg: Any):
        super().__init__(cfg)
        self.tasks = TaskLoRAs()
        self.records: list[dict[str, Any]] = []  # one per trained stage

    def setup(self, model: "MMModel", ctx: RunContext) -> None:
        """Keep the model: a resume restores the stack of task LoRAs on it."""
        super().setup(model, ctx)
        self.tasks.attach(model)

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """Add the stage's fresh LoRA (after the first stage) and stack every task's LoRA."""
        self.tasks.begin(stage.index, model)

    def state_dict(self) -> dict:
        """The task adapters and the records."""
        return {**self.tasks.state_dict(), "records": [dict(r) for r in self.records]}

    def load_state_dict(self, state: dict) -> None:
        """Restore the task adapters (and their stack on the model) and the records."""
        self.tasks.load_state_dict(state)
        self.records = [dict(r) for r in state.get("records", [])]

    def stack_summary(self, **settings: Any) -> dict:
        """``settings``, the task adapters and the records, for :meth:`summary`."""
        return {**settings, "adapters": list(self.tasks.names), "stages": [dict(r) for r in self.records]}

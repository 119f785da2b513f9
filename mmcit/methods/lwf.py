"""LwF: Learning without Forgetting, by distillation from the previous weights on the new task's data.

Source: Li and Hoiem (2016/2017), "Learning without Forgetting" (ECCV 2016; TPAMI 2018). While a
new task trains, the network is also asked to keep the responses the previous network gives on
the new task's own inputs: a distillation loss between the two networks' temperature-softened
output distributions, added with weight lambda_o (the paper: T = 2, lambda_o = 1).

Here the "previous network" is the model with the trainable weights it had when the task started
(the weights after the previous task). Only those weights are kept, a copy of the adapter's LoRA
matrices and projector copy: no second model. For every training micro-batch the method runs one
more forward, without gradients and in evaluation mode (no dropout), with the kept weights put in
place of the live ones for its duration, and adds

    weight * mean over answer tokens of KL( softmax(z_old / T) || softmax(z_new / T) )

where z are the logits that predict each answer token (the positions the language-model loss
scores). The paper writes the term as a cross-entropy with the old probabilities as targets; the
KL differs from it by the old distribution's entropy, a constant, so the gradient is the same and
the term is 0 when both weights are equal. The paper does not multiply by T^2 (Hinton et al.'s
distillation does); neither does mmcit. By default the term is on from the second task; with
``distill_first_task`` the first task is distilled towards the starting weights (the base model),
as the paper treats the pretrained network's own task.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import torch
import torch.nn.functional as F

from mmcit.data.collate import IGNORE_INDEX
from mmcit.errors import ConfigError
from mmcit.methods.base import METHODS, Method, MethodConfig, Stage
from mmcit.models.tower_cache import with_image_tokens

if TYPE_CHECKING:
    from mmcit.models.wrapper import MMModel


@dataclass
class LwFConfig(MethodConfig):
    """``lwf``: distillation temperature and weight, and whether the first task is distilled."""

    type: str = "lwf"
    temperature: float = 2.0  # T (the paper's value)
    weight: float = 1.0  # lambda_o (the paper's value)
    distill_first_task: bool = False

    def validate(self) -> None:
        """T > 0, weight >= 0."""
        if not self.temperature > 0:
            raise ConfigError(f"method.temperature must be > 0, got {self.temperature}")
        if not self.weight >= 0:
            raise ConfigError(f"method.weight must be >= 0, got {self.weight}")

    def validate_run(self, run: Any) -> None:
        """The distillation term reads the student's full logits, which only train.loss=model keeps."""
        if run.train.loss != "model":
            raise ConfigError(f"lwf distils the model's logits: train.loss must be model, got {run.train.loss}")


def distillation_kl(student: torch.Tensor, teacher: torch.Tensor, labels: torch.Tensor,
                    temperature: float) -> torch.Tensor:
    """Mean over answer tokens of KL(softmax(teacher / T) || softmax(student / T)), in float32.

    ``student`` and ``teacher`` are (batch, length, vocabulary) logits aligned with ``labels``; the
    logits at position t predict token t + 1, so the answer tokens' predictions are the positions
    whose next label is not IGNORE_INDEX. No answer token: 0 (with the student's graph attached).
    """
    mask = labels[:, 1:] != IGNORE_INDEX
    s = student[:, :-1][mask].float() / temperature
    if s.numel() == 0:
        return student.sum() * 0.0
    t = teacher[:, :-1][mask].float() / temperature
    log_p = F.log_softmax(t, dim=-1)
    kl = (log_p.exp() * (log_p - F.log_softmax(s, dim=-1))).sum(-1)
    return kl.mean()


@contextlib.contextmanager
def weights_swapped(params: list[torch.nn.Parameter], tensors: list[torch.Tensor]) -> Iterator[None]:
    """Inside the block the parameters hold ``tensors``' values (their storage is swapped in, not
    copied); the live storage is put back after. The autograd graph of an earlier forward refers
    to the parameters themselves, so it sees the live values again when backward runs."""
    live = [p.data for p in params]
    try:
        for p, t in zip(params, tensors):
            p.data = t
        yield
    finally:
        for p, t in zip(params, live):
            p.data = t


@METHODS.register
class LwF(Method):
    """One shared adapter; each task distils the previous weights' answers on its own samples."""

    name = "lwf"
    config_cls = LwFConfig

    def __init__(self, cfg: LwFConfig):
        super().__init__(cfg)
        self.teacher: dict[str, torch.Tensor] | None = None  # the kept weights, inside a stage
        self.records: list[dict[str, Any]] = []
        self._kl = [0.0, 0]  # sum and count of the stage's distillation terms, for the summary

    def before_stage(self, stage: Stage, model: "MMModel") -> None:
        """Keep a copy of the trainable weights (from the second task, or every task)."""
        distil = stage.index > 0 or self.cfg.distill_first_task
        self.teacher = {n: p.detach().clone() for n, p in model.trainable_named_parameters()} if distil else None
        self._kl = [0.0, 0]

    def extra_loss(self, model: "MMModel", batch: dict, outputs: Any) -> torch.Tensor | None:
        """``weight`` times the distillation term on this micro-batch's answer tokens."""
        if self.teacher is None or self.cfg.weight == 0:
            return None
        teacher = self.teacher_logits(model, batch)
        term = distillation_kl(outputs.logits, teacher, batch["labels"].to(teacher.device), self.cfg.temperature)
        self._kl[0] += float(term.detach())
        self._kl[1] += 1
        return self.cfg.weight * term

    @torch.no_grad()
    def teacher_logits(self, model: "MMModel", batch: dict) -> torch.Tensor:
        """The logits of the kept weights on ``batch`` (evaluation mode, no gradients)."""
        named = dict(model.trainable_named_parameters())
        if set(named) != set(self.teacher):
            raise RuntimeError("lwf: the trainable tensors changed inside the task")
        params = list(named.values())
        kept = [self.teacher[n].to(p.device) for n, p in named.items()]
        inputs = {k: v for k, v in batch.items() if k not in ("labels", "image_tokens")}
        model.eval()
        try:
            with weights_swapped(params, kept):
                if "image_tokens" in batch:  # the loop fed the tower's cached output: do the same
                    base = model.peft.get_base_model()
                    with model.autocast():
                        inputs = with_image_tokens(base, inputs, batch["image_tokens"])
                return model(**inputs).logits
        finally:
            model.train()

    def after_stage(self, stage: Stage, model: "MMModel") -> None:
        """Drop the kept weights; record the stage's mean distillation term."""
        self.records.append({"stage": stage.name, "distilled": self.teacher is not None,
                             "teacher_parameters": sum(t.numel() for t in (self.teacher or {}).values()),
                             "mean_kl": self._kl[0] / self._kl[1] if self._kl[1] else None})
        self.teacher = None

    # -- persistence and reporting ----------------------------------------------------------------
    def state_dict(self) -> dict:
        """Per-stage records; inside a stage also the kept weights and the running KL sums."""
        state: dict[str, Any] = {"tasks": [dict(r) for r in self.records]}
        if self.teacher is not None:
            state["teacher"] = dict(self.teacher)
            state["kl"] = list(self._kl)
        return state

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` (inside a stage: after ``before_stage``, replacing its copy)."""
        self.records = [dict(r) for r in state.get("tasks", [])]
        if "teacher" in state:
            self.teacher = {n: t.clone() for n, t in state["teacher"].items()}
            self._kl = [float(state["kl"][0]), int(state["kl"][1])]

    def summary(self) -> dict:
        """Temperature, weight and per stage whether it distilled and its mean term (the mean over this
        process's micro-batches: under data parallelism, rank 0's share)."""
        return {"temperature": self.cfg.temperature, "weight": self.cfg.weight,
                "distill_first_task": self.cfg.distill_first_task, "tasks": [dict(r) for r in self.records]}

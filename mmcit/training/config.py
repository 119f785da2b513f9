"""The ``train:`` block of a run's config."""
from __future__ import annotations

from dataclasses import dataclass, field

from mmcit.errors import ConfigError

SCHEDULES = ("cosine", "constant")
#: ``train.loss``: where the loss's logits are computed (mmcit/training/loss.py).
LOSSES = ("model", "answer", "fused")


@dataclass
class TrainConfig:
    """``train``: optimisation, batches, checkpoints inside a task, sharding."""

    epochs: float = 1.0
    max_steps: int | None = None  # per task; overrides epochs when set
    batch_size: int = 16
    lr: float = 2e-4  # LoRA
    projector_lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_ratio: float = 0.03
    schedule: str = "cosine"  # cosine | constant
    max_grad_norm: float = 1.0
    max_length: int = 2048
    # Optimizer steps between step checkpoints inside a task (None: only the checkpoint after each
    # task). They live under checkpoints/NN_<stage>/steps/ and let `mmcit run --resume` continue
    # mid-task; see mmcit/training/checkpoint.py.
    checkpoint_every: int | None = None
    # Global batch per task, overriding batch_size (CoIN's published batches differ per task).
    task_batch_size: dict[str, int] = field(default_factory=dict)
    # Epochs per task, overriding epochs (MLLM-DCL's published epochs differ per task).
    task_epochs: dict[str, float] = field(default_factory=dict)
    # Rows per forward/backward on one process; the global batch is accumulated from such
    # micro-batches, with the same gradient as one pass (None: the process's whole share at once).
    micro_batch_size: int | None = None
    # Tasks with at most this many training samples are encoded once; larger ones batch by batch.
    encode_once_limit: int = 4096
    # Keep a stage's frozen-tower tokens on disk (under the data cache folder, tower_tokens/) and
    # read them back when a run trains on the same images with the same tower weights, thread count,
    # torch and CPU (mmcit.models.tower_cache.TokenStore): the same bits, without re-running the
    # tower; concurrent runs split the work. Only where the tokens are cached in memory anyway
    # (single process, frozen tower). The tiny base's caption stage uses it too.
    tower_token_cache: bool = True
    # Shard the frozen base weights across data-parallel processes (FSDP2); also turned on by
    # `accelerate launch --use_fsdp`. Adapters stay whole on every process.
    fsdp: bool = False
    # Speed options (docs/performance.md); each gives the default's loss and gradients to float
    # tolerance, not bit for bit. packing: micro-batches without padding between samples (rows of
    # pack_length tokens; None: the micro-batch's longest sample), position ids restarting per sample.
    packing: bool = False
    pack_length: int | None = None
    # model: the model's forward with labels (logits everywhere); answer: the output layer only where
    # a label token is predicted; fused: the same through a fused linear + cross-entropy (Liger-Kernel
    # on a GPU where installed, else chunks) that never holds all the logits.
    loss: str = "model"

    def validate(self) -> None:
        """Value checks that the types alone cannot express."""
        checks = [
            (self.lr > 0, "train.lr must be > 0"),
            (self.projector_lr >= 0, "train.projector_lr must be >= 0"),
            (self.batch_size >= 1, "train.batch_size must be >= 1"),
            (all(v >= 1 for v in self.task_batch_size.values()), "train.task_batch_size values must be >= 1"),
            (self.micro_batch_size is None or self.micro_batch_size >= 1, "train.micro_batch_size must be >= 1"),
            (self.epochs > 0 or (self.max_steps or 0) > 0, "train.epochs must be > 0"),
            (self.max_steps is None or self.max_steps >= 1, "train.max_steps must be >= 1"),
            (self.checkpoint_every is None or self.checkpoint_every >= 1,
             "train.checkpoint_every must be >= 1 (or null for no step checkpoints)"),
            (0 <= self.warmup_ratio < 1, "train.warmup_ratio must be in [0, 1)"),
            (self.schedule in SCHEDULES, f"train.schedule must be one of {', '.join(SCHEDULES)}"),
            (self.loss in LOSSES, f"train.loss must be one of {', '.join(LOSSES)}"),
            # answer/fused call the backbone directly, past the wrapper FSDP's root hooks sit on.
            (self.loss == "model" or not self.fsdp, "train.loss=answer/fused is not supported with train.fsdp"),
            (self.pack_length is None or self.pack_length >= 1, "train.pack_length must be >= 1 (or null)"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)

"""The model wrapper every method and loop works with.

`MMModel` holds a peft-wrapped LLaVA-style model (any backend's) and its processor. The
language model carries named LoRA adapters; the projector is a peft `modules_to_save` module, so
each adapter owns its own projector copy and `set_adapter` switches both together. The vision
tower and the base LLM weights are frozen.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field

import torch

from mmcit.data.collate import Encoder
from mmcit.data.templates import ChatTemplate
from mmcit.models.base import LORA_TARGETS

PROJECTOR = "multi_modal_projector"


@dataclass
class LoraSettings:
    """The LoRA of every adapter: rank, alpha, dropout and the language model's target layers."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


def language_model_targets(modules: list[str]) -> str:
    """A peft target regex that matches the given linear layers inside the language model only.

    A plain list would also match the vision tower's q/k/v projections (CLIP uses the same names).
    """
    return rf".*language_model.*\.({'|'.join(modules)})$"


class MMModel:
    """A LLaVA-style model with named adapters, ready for training and batched generation."""

    def __init__(self, peft_model, processor, adapter: str = "default", template=None):
        self.peft = peft_model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.template = template or ChatTemplate()
        self.pad_to_square = False  # model.image_aspect == "pad"
        self.active_adapter = adapter
        self.adapters: list[str] = [adapter]
        # Where batches go, and the precision the frozen weights compute in: trainable weights stay
        # float32 and a bf16/fp16 model runs under autocast (mixed precision, as LLaVA trains).
        first = next(peft_model.parameters())
        self.device = first.device
        frozen = {p.dtype for p in peft_model.parameters() if not p.requires_grad and p.is_floating_point()}
        low = [d for d in (torch.bfloat16, torch.float16) if d in frozen]
        self.autocast_dtype = low[0] if low else None
        # Kept across evaluations (every later stage evaluates a task's test samples again): each test
        # sample's encoded prompt, and (eval.image_cache) the frozen tower's output per image path.
        self.encoded_prompts: dict[tuple, dict] = {}
        self.encoded_bytes = 0
        self.image_tokens: dict[str, torch.Tensor] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, base, processor, lora: LoraSettings, adapter: str = "default", template=None,
                  gradient_checkpointing: bool = False) -> "MMModel":
        """Freeze ``base``, add the first LoRA adapter (LM only) with a trainable projector copy."""
        from peft import LoraConfig, get_peft_model

        for p in base.parameters():
            p.requires_grad_(False)
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=language_model_targets(lora.target_modules),
            modules_to_save=[PROJECTOR],
            bias="none",
        )
        peft_model = get_peft_model(base, config, adapter_name=adapter)
        _float32_trainables(peft_model)
        if gradient_checkpointing:
            # Non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen).
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return cls(peft_model, processor, adapter, template)

    # -- adapters -----------------------------------------------------------------------------
    def add_adapter(self, name: str, copy_from: str | None = None) -> None:
        """Add a named adapter (LoRA + projector copy), initialised as a copy of ``copy_from``."""
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} exists already")
        source = copy_from or self.active_adapter
        cfg = copy.deepcopy(self.peft.peft_config[source])
        self.peft.add_adapter(name, cfg)
        _float32_trainables(self.peft)
        self.adapters.append(name)
        src = self.adapter_state(source)
        self.load_adapter_state(name, {k.replace(f".{source}.", f".{name}."): v for k, v in src.items()})
        self.set_adapter(name)

    def set_adapter(self, name: str) -> None:
        """Make ``name`` the active adapter (its LoRA and projector copy answer and train)."""
        if name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        if name != self.active_adapter:
            self.peft.set_adapter(name)
            self.active_adapter = name
        # peft's set_adapter marks the active adapter trainable; keep the vision tower frozen.

    def _adapter_params(self, name: str) -> dict[str, torch.nn.Parameter]:
        key = f".{name}."
        return {
            n: p
            for n, p in self.peft.named_parameters()
            if key in n and ("lora_" in n or "modules_to_save" in n)
        }

    def adapter_state(self, name: str | None = None) -> dict[str, torch.Tensor]:
        """Detached copies of one adapter's tensors (LoRA A/B and its projector copy)."""
        return {n: p.detach().clone() for n, p in self._adapter_params(name or self.active_adapter).items()}

    def load_adapter_state(self, name: str, state: dict[str, torch.Tensor]) -> None:
        """Copy ``state``'s tensors of adapter ``name`` into it (other keys are ignored)."""
        params = self._adapter_params(name)
        missing = set(params) - set(state)
        if missing:
            raise KeyError(f"adapter state for {name!r} lacks {sorted(missing)[:3]}...")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n].to(p.dtype))

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """``(name, parameter)`` of every tensor that trains now."""
        return [(n, p) for n, p in self.peft.named_parameters() if p.requires_grad]

    def projector_parameter_names(self) -> set[str]:
        """Names of the trainable projector tensors (they get their own learning rate)."""
        return {n for n, _ in self.trainable_named_parameters() if PROJECTOR in n}

    # -- running ------------------------------------------------------------------------------
    def encoder(self, max_length: int = 2048):
        """The sample encoder for this model: its processor, chat template and image handling."""
        return Encoder(self.processor, self.template, max_length=max_length, pad_to_square=self.pad_to_square)

    def train(self) -> None:
        """Training mode, with the frozen tower kept in eval mode."""
        self.peft.train()
        # The tower is frozen: a convolutional one must keep normalising with its BatchNorm running
        # statistics (train mode would use, and update, per-batch statistics).
        base = self.peft.get_base_model()
        tower = getattr(getattr(base, "model", base), "vision_tower", None)
        if tower is not None:
            tower.eval()

    def eval(self) -> None:
        """Evaluation mode."""
        self.peft.eval()

    def autocast(self):
        """Autocast to the frozen weights' low precision (a no-op for a float32 model)."""
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)

    def to_device(self, batch: dict) -> dict:
        """The batch's tensors on the model's device."""
        return {k: v.to(self.device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}

    def __call__(self, **batch):
        with self.autocast():
            return self.peft(**self.to_device(batch))

    @contextlib.contextmanager
    def merged(self, name: str | None = None):
        """Inside: adapter ``name`` (default: the active one) active, its LoRA merged into the base
        weights, so that generation runs plain linear layers. After: the base weights restored bit
        for bit from a copy taken before (peft's own unmerge subtracts the update again, which
        rounds). Layers peft cannot merge exactly this way (quantized ones) stay unmerged."""
        from peft.tuners.lora import Linear as LoraLinear

        name = name or self.active_adapter
        self.set_adapter(name)
        layers = [m for m in self.peft.modules() if type(m) is LoraLinear and name in m.lora_A and not m.merged
                  and isinstance(m.get_base_layer(), torch.nn.Linear)]
        backup = [m.get_base_layer().weight.detach().clone() for m in layers]
        try:
            for m in layers:
                m.merge(adapter_names=[name])
            yield
        finally:
            with torch.no_grad():
                for m, weight in zip(layers, backup):
                    m.get_base_layer().weight.copy_(weight)
                    m.merged_adapters.clear()

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int, **kwargs) -> list[str]:
        """Greedy generation for a left-padded batch; returns the decoded new text per row.

        ``kwargs`` go to transformers' ``generate`` (``adapter_names``: peft's adapter per row;
        ``cache_implementation="static"``). A batch with ``inputs_embeds`` (``input_ids`` kept beside
        them) starts from those embeddings."""
        tok = self.tokenizer
        batch = self.to_device(batch)
        with self.autocast():
            out = self.peft.generate(
                **batch,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                pad_token_id=tok.pad_token_id,
                eos_token_id=tok.eos_token_id,
                **kwargs,
            )
        new = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]

    def num_parameters(self) -> tuple[int, int]:
        """``(trainable, total)`` parameter counts."""
        total = sum(p.numel() for p in self.peft.parameters())
        trainable = sum(p.numel() for _, p in self.trainable_named_parameters())
        return trainable, total


def _float32_trainables(peft_model) -> None:
    """Keep every adapter weight (LoRA, projector copies, of every adapter) in float32 whatever the
    base's dtype: bf16 weights would lose small AdamW updates."""
    for n, p in peft_model.named_parameters():
        if ("lora_" in n or "modules_to_save" in n) and p.is_floating_point() and p.dtype != torch.float32:
            p.data = p.data.float()

"""The model wrapper every method and loop works with.

`MMModel` holds a peft-wrapped LLaVA-style model (any backend's) and its processor. The
language model carries named LoRA adapters; the projector is a peft `modules_to_save` module, so
each adapter owns its own projector copy and `set_adapter` switches both together. The vision
tower and the base LLM weights are frozen (the tower gets LoRA too where the backend's
``ModelParts.vision_lora`` names layers). Where the parts sit, and how samples are encoded and
batched, come from the backend's ``ModelParts`` (LLaVA's names by default).
"""
from __future__ import annotations

import contextlib
import copy
import re
from dataclasses import dataclass, field

import torch

from mmcit.data.collate import Encoder, collate
from mmcit.data.processor_encoder import ProcessorEncoder, collate_processor
from mmcit.data.templates import ChatTemplate
from mmcit.models.base import LORA_TARGETS, ModelParts


@dataclass
class LoraSettings:
    """The LoRA of every adapter: rank, alpha, dropout and the language model's target layers."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(default_factory=lambda: list(LORA_TARGETS))


def language_model_targets(modules: list[str], language_model: str = "language_model") -> str:
    """A peft target regex that matches the given linear layers inside the language model only.

    A plain list would also match the vision tower's q/k/v projections (CLIP uses the same names).
    """
    return rf".*{language_model}.*\.({'|'.join(modules)})$"


def lora_targets(modules: list[str], parts: ModelParts) -> str:
    """The peft target regex of ``parts``: the language model's layers, plus the vision tower's
    ``parts.vision_lora`` layers outside the projector (which trains whole, per adapter)."""
    lm = language_model_targets(modules, parts.language_model)
    if not parts.vision_lora:
        return lm
    tower = re.escape(parts.vision)
    vision = rf"(?!.*\.{re.escape(parts.projector)}\.).*{tower}\..*\.({'|'.join(parts.vision_lora)})$"
    return f"(?:{lm})|(?:{vision})"


class MMModel:
    """A LLaVA-style model with named adapters, ready for training and batched generation."""

    def __init__(self, peft_model, processor, adapter: str = "default", template=None,
                 parts: ModelParts | None = None):
        self.peft = peft_model
        self.parts = parts or ModelParts()
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.template = template or ChatTemplate()
        self.pad_to_square = False  # model.image_aspect == "pad"
        self.active_adapter = adapter
        self.adapters: list[str] = [adapter]
        self.stacked: list[str] = []  # adapters whose LoRAs answer together (stack_adapters), if any
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
        self.token_store = None  # a TokenStore (mmcit.models.tower_cache) the recipe sets for training
        self.image_tokens: dict[str, torch.Tensor] = {}

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, base, processor, lora: LoraSettings, adapter: str = "default", template=None,
                  gradient_checkpointing: bool = False, parts: ModelParts | None = None) -> "MMModel":
        """Freeze ``base``, add the first LoRA adapter (LM only, unless ``parts`` names tower layers)
        with a trainable projector copy."""
        parts = parts or ModelParts()
        from peft import LoraConfig, get_peft_model

        for p in base.parameters():
            p.requires_grad_(False)
        config = LoraConfig(
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora_targets(lora.target_modules, parts),
            modules_to_save=[parts.projector],
            bias="none",
        )
        peft_model = get_peft_model(base, config, adapter_name=adapter)
        _float32_trainables(peft_model)
        if gradient_checkpointing:
            # Non-reentrant checkpointing needs no input that requires grad (the embeddings are frozen).
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        return cls(peft_model, processor, adapter, template, parts)

    # -- adapters -----------------------------------------------------------------------------
    def add_adapter(self, name: str, copy_from: str | None = None, fresh_lora: bool = False) -> None:
        """Add a named adapter (LoRA + projector copy), initialised as a copy of ``copy_from``; with
        ``fresh_lora`` only the projector copy is copied and the LoRA keeps peft's fresh
        initialisation (random A, zero B: the adapter adds nothing until it trains)."""
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} exists already")
        source = copy_from or self.active_adapter
        cfg = copy.deepcopy(self.peft.peft_config[source])
        self.peft.add_adapter(name, cfg)
        _float32_trainables(self.peft)
        self.adapters.append(name)
        state = {k.replace(f".{source}.", f".{name}."): v for k, v in self.adapter_state(source).items()}
        if fresh_lora:
            own = self.adapter_state(name)
            state = {k: v if "modules_to_save" in k else own[k] for k, v in state.items()}
        self.load_adapter_state(name, state)
        self.set_adapter(name)

    def set_adapter(self, name: str) -> None:
        """Make ``name`` the active adapter (its LoRA and projector copy answer and train). Switching
        to another adapter ends a stack (``stack_adapters``); naming the stack's last one keeps it."""
        if name not in self.adapters:
            raise KeyError(f"unknown adapter {name!r}; have {self.adapters}")
        if name != self.active_adapter:
            self.peft.set_adapter(name)  # every LoRA layer back to this one adapter
            self.active_adapter = name
            self.stacked = []
        # peft's set_adapter marks the active adapter trainable; keep the vision tower frozen.

    def stack_adapters(self, names: list[str]) -> None:
        """Let the LoRAs of ``names`` answer together, their updates summed in every LoRA layer
        (peft sums a layer's active adapters), with the projector copy of the last one; only the
        last adapter's LoRA and projector copy train. Checkpoints still record the last one as the
        active adapter: a method that stacks restores its stack after a resume."""
        if not names or any(n not in self.adapters for n in names):
            raise KeyError(f"cannot stack {names}; have {self.adapters}")
        self.set_adapter(names[-1])
        for _, layer in self.lora_layers():
            layer.set_adapter(list(names))
        key = f".{names[-1]}."
        for n, p in self.peft.named_parameters():
            if "lora_" in n or "modules_to_save" in n:
                p.requires_grad_(key in n)
        self.stacked = list(names)

    def lora_layers(self) -> list[tuple[str, torch.nn.Module]]:
        """``(name, layer)`` of every LoRA layer (a peft layer with ``lora_A``/``lora_B`` per adapter:
        the language model's target linears)."""
        return [(n, m) for n, m in self.peft.named_modules()
                if isinstance(getattr(m, "lora_A", None), torch.nn.ModuleDict)]

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

    def adapter_sizes(self) -> dict[str, int]:
        """Values of each adapter's tensors (LoRA matrices and projector copy), by adapter name."""
        return {name: sum(p.numel() for p in self._adapter_params(name).values()) for name in self.adapters}

    def adapter_bytes(self) -> int:
        """Bytes of every adapter's tensors, as held in memory."""
        return sum(p.numel() * p.element_size() for name in self.adapters
                   for p in self._adapter_params(name).values())

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        """``(name, parameter)`` of every tensor that trains now."""
        return [(n, p) for n, p in self.peft.named_parameters() if p.requires_grad]

    def projector_parameter_names(self) -> set[str]:
        """Names of the trainable projector tensors (they get their own learning rate)."""
        return {n for n, _ in self.trainable_named_parameters() if self.parts.projector in n}

    # -- running ------------------------------------------------------------------------------
    def encoder(self, max_length: int = 2048):
        """The sample encoder for this model: its processor, chat template and image handling."""
        if self.parts.batch is not None:
            return ProcessorEncoder(self.processor, self.template, self.parts.batch, max_length=max_length,
                                    pad_to_square=self.pad_to_square)
        return Encoder(self.processor, self.template, max_length=max_length, pad_to_square=self.pad_to_square)

    def collate(self, features: list[dict], padding_side: str) -> dict:
        """Pad and join encoded features into a batch (right-padded to train, left to generate)."""
        pad = self.tokenizer.pad_token_id
        if self.parts.batch is not None:
            return collate_processor(features, pad, padding_side, self.parts.batch)
        return collate(features, pad, padding_side)

    def vision_tower(self):
        """The base model's vision tower module (None if it has none where ``parts`` says)."""
        base = self.peft.get_base_model()
        for path in dict.fromkeys((self.parts.vision, self.parts.vision.removeprefix("model."))):
            try:
                return base.get_submodule(path)
            except AttributeError:
                continue
        return None

    def train(self) -> None:
        """Training mode, with the frozen tower kept in eval mode."""
        self.peft.train()
        # The tower is frozen: a convolutional one must keep normalising with its BatchNorm running
        # statistics (train mode would use, and update, per-batch statistics).
        tower = self.vision_tower()
        if tower is not None and not self.parts.vision_lora:
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
                eos_token_id=self.parts.eos_ids or tok.eos_token_id,
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

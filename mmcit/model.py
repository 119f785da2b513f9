"""The model wrapper every method and loop works with, and the tiny LLaVA built from config.

`MMModel` holds a peft-wrapped transformers `LlavaForConditionalGeneration` and its processor. The
language model carries named LoRA adapters; the projector is a peft `modules_to_save` module, so
each adapter owns its own projector copy and `set_adapter` switches both together. The vision
tower and the base LLM weights are frozen.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
PROJECTOR = "multi_modal_projector"


@dataclass
class LoraSettings:
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

    def __init__(self, peft_model, processor, adapter: str = "default"):
        self.peft = peft_model
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.active_adapter = adapter
        self.adapters: list[str] = [adapter]

    # -- construction -------------------------------------------------------------------------
    @classmethod
    def from_base(cls, base, processor, lora: LoraSettings, adapter: str = "default") -> "MMModel":
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
        return cls(peft_model, processor, adapter)

    # -- adapters -----------------------------------------------------------------------------
    def add_adapter(self, name: str, copy_from: str | None = None) -> None:
        """Add a named adapter (LoRA + projector copy), initialised as a copy of ``copy_from``."""
        if name in self.adapters:
            raise ValueError(f"adapter {name!r} exists already")
        source = copy_from or self.active_adapter
        cfg = copy.deepcopy(self.peft.peft_config[source])
        self.peft.add_adapter(name, cfg)
        self.adapters.append(name)
        src = self.adapter_state(source)
        self.load_adapter_state(name, {k.replace(f".{source}.", f".{name}."): v for k, v in src.items()})
        self.set_adapter(name)

    def set_adapter(self, name: str) -> None:
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
        params = self._adapter_params(name)
        missing = set(params) - set(state)
        if missing:
            raise KeyError(f"adapter state for {name!r} lacks {sorted(missing)[:3]}...")
        with torch.no_grad():
            for n, p in params.items():
                p.copy_(state[n].to(p.dtype))

    def trainable_named_parameters(self) -> list[tuple[str, torch.nn.Parameter]]:
        return [(n, p) for n, p in self.peft.named_parameters() if p.requires_grad]

    def projector_parameter_names(self) -> set[str]:
        return {n for n, _ in self.trainable_named_parameters() if PROJECTOR in n}

    # -- running ------------------------------------------------------------------------------
    def train(self) -> None:
        self.peft.train()

    def eval(self) -> None:
        self.peft.eval()

    def __call__(self, **batch):
        return self.peft(**batch)

    @torch.no_grad()
    def generate(self, batch: dict, max_new_tokens: int) -> list[str]:
        """Greedy generation for a left-padded batch; returns the decoded new text per row."""
        tok = self.tokenizer
        out = self.peft.generate(
            **batch,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            pad_token_id=tok.pad_token_id,
            eos_token_id=tok.eos_token_id,
        )
        new = out[:, batch["input_ids"].shape[1]:]
        return [t.strip() for t in tok.batch_decode(new, skip_special_tokens=True)]

    def num_parameters(self) -> tuple[int, int]:
        total = sum(p.numel() for p in self.peft.parameters())
        trainable = sum(p.numel() for _, p in self.trainable_named_parameters())
        return trainable, total

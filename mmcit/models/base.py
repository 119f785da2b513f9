"""The model-backend interface: a config dataclass per backend, selected by ``model.type``.

A backend turns its config into ``Built``: a transformers-style multimodal model (a vision tower,
a projector and a language model somewhere in its module tree, ``forward(input_ids,
attention_mask, pixel_values, labels, ...)`` returning ``.loss``/``.logits``, and ``generate``
returning prompt + new tokens), the processor that encodes an image and text into those inputs,
the chat template that turns a conversation into text, and ``ModelParts``: where the parts sit
(LLaVA's names ``vision_tower``, ``multi_modal_projector``, ``language_model`` by default) and how
samples are encoded and batched. Everything after that (LoRA, adapters, training, evaluation,
routing, predict) is one code path for every backend.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

from mmcit.data.templates import TEMPLATES
from mmcit.errors import ConfigError
from mmcit.registry import Registry

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
QUANTIZATION = (None, "4bit", "8bit")
DTYPES = ("float32", "bfloat16", "float16")


@dataclass
class ModelConfig:
    """Settings every backend shares; ``type`` selects the backend (a module of mmcit/models/)."""

    type: str = "tiny_llava"
    __registry__: ClassVar[Registry]  # set below: ``type`` resolves through BACKENDS
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # Linear layers of the language model that get LoRA (never the vision tower's, which CLIP
    # names the same way).
    lora_targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    # How a conversation becomes text: vicuna_v1 (LLaVA-1.5's, with its system prompt),
    # vicuna_plain (the same without a system prompt), tokenizer (the LM tokenizer's own chat
    # template) or processor (the checkpoint processor's chat template).
    chat_template: str = "vicuna_v1"
    # crop: the processor's resize and centre crop; pad: first pad the image to a square with the
    # processor's mean colour, as LLaVA-1.5 does ("images padded to square").
    image_aspect: str = "crop"

    def validate(self) -> None:
        """Raise ``ConfigError`` for the first problem of ``problems()``."""
        problems = self.problems()
        if problems:
            raise ConfigError(problems[0])

    def problems(self) -> list[str]:
        """Problems with the values, one line each (empty when fine); backends extend it."""
        problems = []
        if self.lora_r < 1:
            problems.append("model.lora_r must be >= 1")
        if not self.lora_targets:
            problems.append("model.lora_targets is empty: LoRA needs at least one layer name")
        if self.image_aspect not in ("crop", "pad"):
            problems.append("model.image_aspect must be crop or pad")
        if self.chat_template not in TEMPLATES:
            problems.append(f"model.chat_template must be one of {', '.join(TEMPLATES.names())}")
        return problems


@dataclass
class PretrainedConfig(ModelConfig):
    """Settings of the backends that load real weights from local folders."""

    dtype: str = "bfloat16"  # float32 | bfloat16 | float16: the frozen weights' dtype
    attn_implementation: str = "sdpa"  # eager | sdpa | flash_attention_2 | ...
    gradient_checkpointing: bool = True
    quantization: str | None = None  # 4bit (NF4, double quantisation) | 8bit: the frozen LLM via bitsandbytes
    device: str = "auto"  # auto (cuda when available, else cpu) | cpu | cuda | cuda:N

    def problems(self) -> list[str]:
        """Problems with the values, one line each (empty when fine)."""
        problems = super().problems()
        if self.dtype not in DTYPES:
            problems.append(f"model.dtype must be one of {', '.join(DTYPES)}")
        if self.quantization not in QUANTIZATION:
            problems.append("model.quantization must be 4bit, 8bit or null")
        return problems


@dataclass
class BuildContext:
    """What a backend may need besides its config (the tiny backend pretrains on the data)."""

    data: Any = None  # mmcit.data.stream.StreamData
    cache_dir: Path | None = None
    seed: int = 0
    log: Callable[[str], None] = print
    progress: bool = True
    tower_token_cache: bool = True  # train.tower_token_cache: the tiny base's caption stage stores its tower tokens


@dataclass
class ModelParts:
    """Where a backend's model keeps its parts, and how its samples are encoded and batched.

    The defaults are LLaVA's (transformers' LLaVA classes, the composed and tiny backends); the
    ``hf_vlm`` backend fills them from its family table (``mmcit.models.families``).
    """

    vision: str = "model.vision_tower"  # module path of the vision tower (kept in eval mode while frozen)
    projector: str = "multi_modal_projector"  # module name peft's modules_to_save copies per adapter
    language_model: str = "language_model"  # module name LoRA targets must lie under
    vision_lora: list[str] = field(default_factory=list)  # linear layers of the tower that get LoRA too
    # The processor's batch layout (mmcit.data.processor_encoder): None encodes with LLaVA's Encoder.
    batch: dict[str, str] | None = None
    eos_ids: list[int] | None = None  # token ids generation stops at; None: the tokenizer's eos


@dataclass
class Built:
    """What a backend builds: the base model, its processor, its chat template and its parts."""

    model: Any
    processor: Any
    template: Any  # mmcit.data.templates.Template
    parts: ModelParts = field(default_factory=ModelParts)


class Backend:
    """A model backend: ``config_cls`` and ``build``; registered under its file's name."""

    name: ClassVar[str] = ""
    config_cls: ClassVar[type[ModelConfig]] = ModelConfig

    def build(self, cfg: ModelConfig, ctx: BuildContext) -> Built:
        """The base model, processor and chat template that ``cfg`` describes."""
        raise NotImplementedError


#: ``model.type`` -> backend class; the built-in ones are the modules of ``mmcit.models``.
BACKENDS: Registry[type[Backend]] = Registry("backends", package="mmcit.models", name_is_file=True,
                                             default="tiny_llava")
ModelConfig.__registry__ = BACKENDS


def require_folder(path: str | None, key: str, what: str) -> Path:
    """``path`` as an existing folder, or a one-line ConfigError naming the key."""
    if not path:
        raise ConfigError(f"{key} is required: the local folder of {what}")
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(f"{key}: {folder} is not a folder (it must hold {what}; nothing is downloaded)")
    return folder


def torch_dtype(name: str):
    """The torch dtype of a ``model.dtype`` name."""
    import torch

    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def resolve_device(name: str) -> str:
    """``model.device`` with ``auto`` resolved (cuda when available, else cpu)."""
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return name


def quantization_config(cfg: PretrainedConfig, skip: list[str]):
    """bitsandbytes settings for QLoRA: NF4 with double quantisation and bf16 compute (or int8).

    ``skip`` names modules kept in full precision (the vision tower, the trainable projector, the
    output head).
    """
    if cfg.quantization is None:
        return None
    import torch
    from transformers import BitsAndBytesConfig

    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        raise ConfigError("model.quantization needs bitsandbytes (a dependency of mmcit): "
                          "pip install -c constraints.txt bitsandbytes") from None
    if cfg.quantization == "4bit":
        return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                                  bnb_4bit_compute_dtype=torch.bfloat16, llm_int8_skip_modules=skip)
    return BitsAndBytesConfig(load_in_8bit=True, llm_int8_skip_modules=skip)

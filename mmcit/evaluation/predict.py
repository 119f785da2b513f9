"""Answer an image + prompt with a finished (or partial) run (``mmcit predict RUN_DIR ...``).

``load_predictor(run_dir)`` rebuilds the model exactly as the run did (the run's resolved
``config.yaml``, the same data for the tokenizer and the cached pretrained base), recreates every
adapter of the last checkpoint and loads its weights, and restores the method's state (after the
method's ``setup``, as a run does). A method that routes by instruction (LCIA) picks the adapter
for each prompt from its codebook; any other method answers with the adapter that was active at
the checkpoint (with the adapters it stacks, O-LoRA's and SEFE's).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmcit.config import load_config
from mmcit.data.collate import collate
from mmcit.data.prompts import extract_instruction, strip_image_tag
from mmcit.data.sample import Sample
from mmcit.data.stream import load_data
from mmcit.methods.base import Method, RunContext, build_method
from mmcit.models.factory import build_model
from mmcit.models.wrapper import MMModel
from mmcit.training.checkpoint import last_checkpoint, read_state, restore_adapters, verify_checkpoint

__all__ = ["Predictor", "load_predictor"]


@dataclass
class Predictor:
    """A run's model with its adapters, method state and routing, ready to answer prompts."""

    model: MMModel
    method: Method
    max_new_tokens: int
    default_adapter: str
    checkpoint: Path

    def route(self, instruction: str) -> tuple[str | None, str, float | None]:
        """``(group, adapter, similarity)`` for an instruction; no routing -> the active adapter."""
        route = getattr(self.method, "route_instruction", None)
        if route is None or not getattr(self.method, "group_adapters", None):
            return None, self.default_adapter, None
        group, adapter, sim = route(instruction)
        return group, adapter or self.default_adapter, sim

    def answer(self, image_path: str | Path, prompt: str, task: str = "") -> dict[str, Any]:
        """Greedy answer to ``prompt`` about the image, with the group it was routed to.

        The instruction is extracted by CoIN's rules for ``task`` (for a free prompt: its last
        line), so a prompt laid out like the benchmark's routes like its test samples do.
        """
        text = strip_image_tag(prompt)  # the encoder puts the image tag in itself
        instruction = extract_instruction(task, text)
        group, adapter, sim = self.route(instruction)
        sample = Sample(task=task or "predict", id="predict", image=Path(image_path), turns=[(text, "")],
                        instruction=instruction)
        self.model.set_adapter(adapter)
        self.model.eval()
        batch = collate([self.model.encoder().encode_prompt(sample)], self.model.tokenizer.pad_token_id,
                        "left")
        answer = self.model.generate(batch, self.max_new_tokens)[0]
        return {"answer": answer, "group": group, "adapter": adapter, "similarity": sim,
                "instruction": instruction}


def load_predictor(run_dir: str | Path, checkpoint: str | Path | None = None,
                   log: Callable[[str], None] = print) -> Predictor:
    """Rebuild a run's model from its folder and load the last (or the given) checkpoint."""
    run_dir = Path(run_dir)
    cfg = load_config(run_dir / "config.yaml")  # the resolved config the runner saved
    # Either way the checkpoint is verified against its manifest: an incomplete or corrupt one is
    # refused with an error naming the file.
    if checkpoint is not None:
        folder = Path(checkpoint)
        verify_checkpoint(folder)
    else:
        folder = last_checkpoint(run_dir)
    state = read_state(folder)
    cache_dir = cfg.data.cache_path()
    # The tokenizer and the pretrained base are derived from the data: same data, same cache entry.
    data = load_data(cfg.data, cache_dir, log)
    model = build_model(cfg, data, cache_dir, log, progress=False)
    method = build_method(cfg.method)
    # As in a run: setup first (a method may reshape the adapters, e.g. MoELoRA's experts), then
    # the weights, then the method's state (which may re-activate several adapters, e.g. O-LoRA's).
    method.setup(model, RunContext(run_dir=run_dir, task_names=[t.name for t in data.tasks], seed=cfg.seed))
    active = restore_adapters(model, folder, state)
    method.load_state_dict(state.get("method", {}))
    return Predictor(model, method, cfg.eval.max_new_tokens, active, folder)

"""Answer an image + prompt with a finished (or partial) run (``mmcit predict RUN_DIR ...``).

``load_predictor(run_dir)`` rebuilds the model exactly as the run did (the run's resolved
``config.yaml``, the same data for the tokenizer and the cached pretrained base), recreates every
adapter of the last checkpoint and loads its weights, and restores the method's state (after the
method's ``setup``, as a run does). A method that routes by instruction (LCIA) picks the adapter for
each prompt from its codebook, by the prompt's text alone (no task label: the router scores every
span of the prompt that may be its instruction); any other method answers with the adapter that was
active at the checkpoint (with the adapters it stacks, O-LoRA's and SEFE's).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from mmcit.config import load_config
from mmcit.data.prompts import strip_image_tag
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

    def route(self, prompt: str) -> dict[str, Any]:
        """Group, adapter, similarity and deciding span for a prompt; no routing -> the active adapter."""
        route = getattr(self.method, "route_prompt", None)
        if route is None or not getattr(self.method, "group_adapters", None):
            return {"group": None, "adapter": self.default_adapter, "similarity": None, "instruction": ""}
        routed = route(prompt)
        return {**routed, "adapter": routed["adapter"] or self.default_adapter}

    def answer(self, image_path: str | Path, prompt: str) -> dict[str, Any]:
        """Greedy answer to ``prompt`` about the image, with the group it was routed to.

        Routing reads the prompt alone, so a prompt laid out like the benchmark's (CoIN's ImageNet
        and Grounding layouts included) routes like its test samples do, with no task named.
        """
        text = strip_image_tag(prompt)  # the encoder puts the image tag in itself
        routed = self.route(text)
        sample = Sample(task="predict", id="predict", image=Path(image_path), turns=[(text, "")],
                        instruction=routed["instruction"])
        self.model.set_adapter(routed["adapter"])
        self.model.eval()
        batch = self.model.collate([self.model.encoder().encode_prompt(sample)], "left")
        answer = self.model.generate(batch, self.max_new_tokens)[0]
        return {"answer": answer, "group": routed["group"], "adapter": routed["adapter"],
                "similarity": routed["similarity"], "instruction": routed["instruction"]}


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

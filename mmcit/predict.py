"""Answer one image + prompt with a finished (or partial) run: ``mmcit predict RUN_DIR ...``.

``load_run(run_dir)`` rebuilds the model exactly as the runner did (the run's resolved
``config.yaml``, the same data for the tokenizer and the cached pretrained base), recreates every
adapter of the last checkpoint and loads its weights, and restores the method's state. A method
that routes by instruction (LCIA) picks the adapter for each prompt from its codebook; any other
method answers with the adapter that was active at the checkpoint.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # kept out of import time: `mmcit --help` should not load torch
    from mmcit.methods.base import Method
    from mmcit.model import MMModel

__all__ = ["Predictor", "load_run", "last_checkpoint", "add_arguments", "cmd_predict", "main"]


def last_checkpoint(run_dir: str | Path) -> Path:
    """The newest complete checkpoint folder, verified against its manifest (see mmcit.checkpoint)."""
    from mmcit.checkpoint import last_checkpoint as newest  # lazy: keeps torch out of `mmcit --help`

    return newest(run_dir)


@dataclass
class Predictor:
    """A run's model with its adapters, method state and routing, ready to answer prompts."""

    model: "MMModel"
    method: "Method"
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
        from data_recipes.coin import extract_instruction, strip_image_tag
        from mmcit.data.collate import collate
        from mmcit.data.sample import Sample

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


def load_run(run_dir: str | Path, checkpoint: str | Path | None = None, log=print) -> Predictor:
    """Rebuild a run's model from its folder and load the last (or the given) checkpoint."""
    from mmcit.checkpoint import read_state, restore_adapters, verify_checkpoint
    from mmcit.config import load_config
    from mmcit.data.stream import load_data
    from mmcit.methods import build_method
    from mmcit.pretrain import default_cache_dir
    from mmcit.runner import build_model

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
    cache_dir = Path(cfg.data.cache_dir) if cfg.data.cache_dir else default_cache_dir()
    # The tokenizer and the pretrained base are derived from the data: same data, same cache entry.
    data = load_data(cfg.data, cache_dir, log)
    model = build_model(cfg, data, cache_dir, log, progress=False)
    active = restore_adapters(model, folder, state)
    method = build_method(cfg.method)
    method.load_state_dict(state.get("method", {}))
    return Predictor(model, method, cfg.eval.max_new_tokens, active, folder)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's arguments (for ``mmcit.cli``)."""
    parser.add_argument("run_dir", help="a run folder written by `mmcit run`")
    parser.add_argument("--image", required=True, help="path to the image")
    parser.add_argument("--prompt", required=True, help="question text; its last line is the instruction")
    parser.add_argument("--task", default="", help="CoIN task whose instruction rule applies (ImageNet, Grounding)")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: the last one)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``predict`` for parsed arguments; prints the answer (or JSON) and returns 0."""
    if not Path(args.image).is_file():
        from mmcit.config import ConfigError

        raise ConfigError(f"image not found: {args.image}")
    quiet = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    predictor = load_run(args.run_dir, args.checkpoint, log=quiet)
    result = predictor.answer(args.image, args.prompt, args.task)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:  # the answer alone on stdout, so that scripts can read it; the routing on stderr
        print(result["answer"])
        print(f"(adapter {result['adapter']}, group {result['group']}, similarity {result['similarity']})",
              file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry: ``python -m mmcit.predict RUN_DIR --image PATH --prompt TEXT [--json]``."""
    parser = argparse.ArgumentParser(prog="mmcit predict", description="answer one prompt with a trained run")
    add_arguments(parser)
    args = parser.parse_args(argv)
    from data_recipes.coin import DataError
    from mmcit.config import ConfigError

    try:
        return cmd_predict(args)
    except (ConfigError, DataError) as e:
        print(f"mmcit: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())

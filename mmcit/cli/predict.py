"""``mmcit predict RUN_DIR --image PATH --prompt TEXT``: answer one prompt with a finished run."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mmcit.errors import ConfigError
from mmcit.evaluation.predict import load_predictor


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``predict`` subcommand's arguments."""
    parser.add_argument("run_dir", help="a run folder written by `mmcit run`")
    parser.add_argument("--image", required=True, help="path to the image")
    parser.add_argument("--prompt", required=True,
                        help="prompt text; LCIA routes it by its text alone (docs/routing.md)")
    parser.add_argument("--task", default=None, help="deprecated and ignored: routing reads the prompt alone")
    parser.add_argument("--checkpoint", default=None, help="a checkpoint folder (default: the last one)")
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object")


def cmd_predict(args: argparse.Namespace) -> int:
    """Run ``predict`` for parsed arguments; prints the answer (or JSON) and returns 0."""
    if not Path(args.image).is_file():
        raise ConfigError(f"image not found: {args.image}")
    if args.task is not None:
        print("mmcit: note: --task is deprecated and ignored (routing reads the prompt alone)", file=sys.stderr)
    quiet = (lambda msg: None) if args.json else (lambda msg: print(msg, file=sys.stderr))
    predictor = load_predictor(args.run_dir, args.checkpoint, log=quiet)
    result = predictor.answer(args.image, args.prompt)
    if args.json:
        print(json.dumps(result, ensure_ascii=False))
    else:  # the answer alone on stdout, so that scripts can read it; the routing on stderr
        print(result["answer"])
        print(f"(adapter {result['adapter']}, group {result['group']}, similarity {result['similarity']})",
              file=sys.stderr)
    return 0

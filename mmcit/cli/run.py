"""``mmcit run``: one experiment from a YAML config, or the resume of an interrupted one."""
from __future__ import annotations

import argparse

from mmcit.cli.errors import fail
from mmcit.config import load_config
from mmcit.recipe import run
from mmcit.training.distributed import launched_rank
from mmcit.training.resume import RESUME_OVERRIDABLE, resume_config


def cmd_run(args: argparse.Namespace) -> int:
    """``mmcit run CONFIG [key=value ...]`` or ``mmcit run --resume RUN_DIR [key=value ...]``."""
    if args.resume is not None:
        # The run folder's own resolved config.yaml defines the run. Fixes that leave the finished
        # stages valid may be given as key=value (argparse puts the first one in `config`).
        overrides = ([args.config] if args.config is not None else []) + list(args.overrides)
        if any("=" not in o for o in overrides):
            return fail("--resume RUN_DIR reads RUN_DIR/config.yaml; give no CONFIG, only key=value fixes of "
                         f"{', '.join(RESUME_OVERRIDABLE)}")
        cfg = resume_config(args.resume, overrides)  # ConfigError (exit 2) for a key it may not change
    elif args.config is None:
        return fail("run needs a CONFIG file (or --resume RUN_DIR)")
    else:
        cfg = load_config(args.config, args.overrides)
    results = run(cfg, progress=not args.no_progress, resume=args.resume is not None)
    if launched_rank() == 0:  # under accelerate launch every process gets here; one summary
        print(summary_line(results))
        print(f"run folder: {cfg.output_dir}")
    return 0


def summary_line(results: dict) -> str:
    """One line: the method and its final average, forgetting and new accuracy."""
    m = results["metrics"] or {}
    parts = [f"{k}={m[k]:.1f}" for k in ("average_accuracy", "forgetting", "new_accuracy") if m.get(k) is not None]
    return f"{results['method']}: " + ", ".join(parts)


def add_subcommand(sub: argparse._SubParsersAction) -> None:
    """Adds ``run``."""
    p = sub.add_parser("run", help="run one experiment from a YAML config")
    p.add_argument("config", nargs="?", help="path to a YAML file under configs/ (omitted with --resume)")
    p.add_argument("overrides", nargs="*", help="key=value overrides, e.g. train.lr=1e-4 data.tasks=[GQA,VizWiz]")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--resume", metavar="RUN_DIR", default=None,
                   help="continue an interrupted run from its last complete checkpoint (a stage's, or a step "
                        "checkpoint inside the next task), with the run folder's own config.yaml; the result "
                        "equals an uninterrupted run's. Give no CONFIG; key=value fixes are allowed for "
                        "train.*, eval.batch_size, eval.max_new_tokens and threads (e.g. a smaller train.lr "
                        "after a NaN loss): config.yaml is rewritten and results.json records them")
    p.set_defaults(func=cmd_run)

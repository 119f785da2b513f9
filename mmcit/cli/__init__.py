"""The command line: ``mmcit run | demo | sweep | compare | predict | data check | eval | ls | validate``.

Every command module adds its subcommands; ``main`` parses, runs, and turns an ``MmcitError`` into
one line on stderr with the error's exit code (2: fix the input and retry; 1: a run failed midway,
its earlier results intact).
"""
from __future__ import annotations

import argparse

from mmcit.cli import compare, data, demo, ls, predict, run, sweep
from mmcit.cli import eval as eval_cmd
from mmcit.cli.errors import fail
from mmcit.errors import MmcitError, NonFiniteLoss


def build_parser() -> argparse.ArgumentParser:
    """The ``mmcit`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="mmcit", description="Continual instruction tuning of LLaVA-style models")
    sub = parser.add_subparsers(dest="command", required=True)
    run.add_subcommand(sub)
    demo.add_subcommand(sub)
    p = sub.add_parser("predict", help="answer one image + prompt with a finished run (routes by instruction)")
    predict.add_arguments(p)
    p.set_defaults(func=predict.cmd_predict)
    data.add_subcommands(sub)  # mmcit data check
    eval_cmd.add_subcommands(sub)  # mmcit eval answers | mmcit eval suite
    ls.add_subcommands(sub)  # mmcit ls | mmcit validate
    sweep.add_subcommand(sub)
    compare.add_subcommand(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``mmcit`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except NonFiniteLoss as e:
        return fail(f"{e}; the checkpoints and results of earlier tasks are intact", e.exit_code)
    except MmcitError as e:
        return fail(str(e), e.exit_code)
    except KeyboardInterrupt:
        return fail("interrupted", 130)

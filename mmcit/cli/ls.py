"""``mmcit ls [kind]``: what is registered; ``mmcit validate CONFIG``: check a config and its data
paths without building a model."""
from __future__ import annotations

import argparse

from mmcit.cli.errors import fail
from mmcit.config import load_config
from mmcit.data.readers import READERS
from mmcit.registry import KINDS, registry


def cmd_ls(args: argparse.Namespace) -> int:
    """List one kind of plug-in (or all), one line each: name and description."""
    kinds = [args.kind] if args.kind else list(KINDS)
    for n, kind in enumerate(kinds):
        docs = registry(kind).docs()
        if len(kinds) > 1:
            print(("\n" if n else "") + f"{kind}:")
        width = max((len(name) for name in docs), default=0)
        for name, doc in docs.items():
            print(f"  {name.ljust(width)}  {doc}")
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    """Load the config strictly (errors: one line, exit 2), then check its data paths."""
    cfg = load_config(args.config, args.overrides)
    problems = READERS.get(cfg.data.source, "data.source")().check(cfg.data)
    for p in problems:
        fail(p)
    if problems:
        return 2
    print(f"ok: {cfg.name}: method {cfg.method.type}, model {cfg.model.type}, data {cfg.data.source} "
          f"({len(cfg.data.tasks)} tasks: {', '.join(cfg.data.tasks)}), output {cfg.output_dir}")
    return 0


def add_subcommands(sub: argparse._SubParsersAction) -> None:
    """Adds ``ls`` and ``validate``."""
    p = sub.add_parser("ls", help="list what is registered (methods, backends, scorers, ...)")
    p.add_argument("kind", nargs="?", choices=list(KINDS), help="one kind (default: all)")
    p.set_defaults(func=cmd_ls)
    p = sub.add_parser("validate", help="check a config and its data paths without building a model")
    p.add_argument("config", help="a YAML config")
    p.add_argument("overrides", nargs="*", help="key=value overrides, as for run")
    p.set_defaults(func=cmd_validate)

"""How much of the synthetic benchmark's test and validation data its model has seen in training.

Generates the benchmark with the demo's settings (configs/demo/base.yaml, through the demo's cache:
the tree a demo run reads), or reads an existing tree with --root (e.g. a cached tree of an older
generator version), and prints per task and evaluated split the number of samples whose image is
pixel-identical to a training image (of the same task, of any task) or to a pretraining image, and
whose (image, question, answer) is a training sample (``data_recipes.synthetic.overlap``).

    python benchmarks/synthetic_overlap.py [--root TREE] [--variant Instructions] [--json out.json] [key=value ...]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", default=None, help="a generated tree (default: the demo's, generated if needed)")
    parser.add_argument("--variant", default="Instructions")
    parser.add_argument("--json", default=None, help="also write the counts as JSON here")
    parser.add_argument("overrides", nargs="*", help="key=value overrides of the demo config (data.*)")
    args = parser.parse_args()
    sys.path.insert(0, str(REPO))
    from data_recipes.synthetic import synthetic_root
    from data_recipes.synthetic.overlap import overlap_report, report_json, report_table
    from mmcit.config import load_config

    if args.root:
        root = Path(args.root)
    else:
        cfg = load_config(REPO / "configs" / "demo" / "lora_ft.yaml", args.overrides)
        root = synthetic_root(cfg.data, cfg.data.cache_path())
    start = time.perf_counter()
    report = overlap_report(root, args.variant)
    manifest = json.loads((root / "manifest.json").read_text())
    print(f"tree: {root} (generator version {manifest.get('generator_version', '<= 3')}, "
          f"pretraining records {manifest['pretrain']}); compared in {time.perf_counter() - start:.0f} s\n")
    print(report_table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report_json(report), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Command line: ``mmcit run CONFIG [key=value ...]`` and ``mmcit demo``."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEMO_CONFIGS = REPO_ROOT / "configs" / "demo"
DEMO_METHODS = ["lcia", "lora_ft"]  # --methods adds multitask, ema, adaptive_ema


def _fail(message: str, code: int = 2) -> int:
    print(f"mmcit: error: {message}", file=sys.stderr)
    return code


def cmd_run(args) -> int:
    from mmcit.config import load_config
    from mmcit.runner import RESUME_OVERRIDABLE, resume_config, run

    if args.resume is not None:
        # The run folder's own resolved config.yaml defines the run. Fixes that leave the finished
        # stages valid may be given as key=value (argparse puts the first one in `config`).
        overrides = ([args.config] if args.config is not None else []) + list(args.overrides)
        if any("=" not in o for o in overrides):
            return _fail("--resume RUN_DIR reads RUN_DIR/config.yaml; give no CONFIG, only key=value fixes of "
                         f"{', '.join(RESUME_OVERRIDABLE)}")
        cfg = resume_config(args.resume, overrides)  # ConfigError (exit 2) for a key it may not change
    elif args.config is None:
        return _fail("run needs a CONFIG file (or --resume RUN_DIR)")
    else:
        cfg = load_config(args.config, args.overrides)
    results = run(cfg, progress=not args.no_progress, resume=args.resume is not None)
    from mmcit.distributed import launched_rank

    if launched_rank() == 0:  # under accelerate launch every process gets here; one summary
        print(summary_line(results))
        print(f"run folder: {cfg.output_dir}")
    return 0


def summary_line(results: dict) -> str:
    m = results["metrics"] or {}
    parts = [f"{k}={m[k]:.1f}" for k in ("average_accuracy", "forgetting", "new_accuracy") if m.get(k) is not None]
    return f"{results['method']}: " + ", ".join(parts)


def _demo_worker(config_path: str, overrides: list[str], queue) -> dict:
    """One method of the demo, in its own single-threaded process; reports progress on ``queue``."""
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from mmcit.config import load_config
    from mmcit.runner import run

    cfg = load_config(config_path, overrides)
    return run(cfg, progress=False, log=lambda msg: queue.put(msg))


def cmd_demo(args) -> int:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    from tqdm.auto import tqdm

    from mmcit.config import load_config
    from mmcit.data.stream import load_data
    from mmcit.pretrain import default_cache_dir
    from mmcit.report import write_combined_report
    from mmcit.runner import build_model

    methods = args.methods.split(",") if args.methods else DEMO_METHODS
    out = Path(args.output)
    # Up to 1.5 single-threaded processes per core: with one per core, the demo's three methods on
    # 2 cores ran two at a time and then the third alone, leaving a core idle for a third of the time.
    jobs = args.jobs or min(len(methods), max(1, (os.cpu_count() or 1) * 3 // 2))
    start = time.perf_counter()
    per_method = []
    for m in methods:
        path = DEMO_CONFIGS / f"{m}.yaml"
        if not path.exists():
            available = sorted(p.stem for p in DEMO_CONFIGS.glob("*.yaml") if p.stem != "base")
            return _fail(f"no demo config for method {m!r} ({path}); available: {', '.join(available)}")
        overrides = [f"output_dir={out / m}", f"threads={1 if jobs > 1 else 0}", *args.overrides]
        if args.scale is not None:
            overrides.append(f"data.scale={args.scale}")
        per_method.append((str(path), overrides, load_config(path, overrides)))

    # Data and the pretrained base are shared by every method: build them once, here, first.
    cfg0 = per_method[0][2]
    cache = Path(cfg0.data.cache_dir) if cfg0.data.cache_dir else default_cache_dir()
    data = load_data(cfg0.data, cache, log=tqdm.write)
    build_model(cfg0, data, cache, log=tqdm.write)
    n_stages = sum(1 if m == "multitask" else len(cfg0.data.tasks) for m in methods)

    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        queue = manager.Queue()
        bar = tqdm(total=n_stages, desc=f"demo ({', '.join(methods)})", dynamic_ncols=True)
        with ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
            futures = [pool.submit(_demo_worker, p, o, queue) for p, o, _ in per_method]
            while not all(f.done() for f in futures) or not queue.empty():
                try:
                    msg = queue.get(timeout=0.5)
                except Exception:  # queue.Empty from the manager proxy
                    continue
                tqdm.write(msg)
                if "] after " in msg:
                    bar.update(1)
            results = [f.result() for f in futures]
        bar.close()
    table = write_combined_report(out, results)
    print()
    print(table)
    print(f"demo finished in {time.perf_counter() - start:.0f} s; report: {out / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mmcit", description="Continual instruction tuning of LLaVA-style models")
    sub = parser.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("demo", help="run the built-in synthetic benchmark with several methods and compare them")
    p.add_argument("--output", default="runs/demo", help="folder for the method run folders and the combined report")
    p.add_argument("--methods", default=None, help=f"comma-separated methods (default: {','.join(DEMO_METHODS)})")
    p.add_argument("--scale", type=float, default=None, help="multiply the benchmark's sample counts")
    p.add_argument("--jobs", type=int, default=0, help="methods run in parallel (default: up to 1.5 per CPU core)")
    p.add_argument("overrides", nargs="*", help="key=value overrides applied to every method's config")
    p.set_defaults(func=cmd_demo)

    from mmcit.predict import add_arguments as predict_arguments, cmd_predict

    p = sub.add_parser("predict", help="answer one image + prompt with a finished run (routes by instruction)")
    predict_arguments(p)
    p.set_defaults(func=cmd_predict)

    from mmcit import data_cli, eval_cli

    data_cli.add_subcommands(sub)  # mmcit data check
    eval_cli.add_subcommands(sub)  # mmcit eval answers | mmcit eval suite

    args = parser.parse_args(argv)
    from mmcit.config import ConfigError

    try:
        from data_recipes.coin import DataError
    except ImportError:  # pragma: no cover
        DataError = ConfigError
    try:
        return args.func(args)
    except (ConfigError, DataError) as e:
        return _fail(str(e))
    except RuntimeError as e:
        from mmcit.train import NonFiniteLoss

        if not isinstance(e, NonFiniteLoss):
            raise
        return _fail(f"{e}; the checkpoints and results of earlier tasks are intact", 1)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)


if __name__ == "__main__":
    sys.exit(main())

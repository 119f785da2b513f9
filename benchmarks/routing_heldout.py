"""Held-out routing accuracy: how many hand-written paraphrases of each group's instructions, and
how many of the synthetic benchmark's test prompts, LCIA's per-instance routing sends to the right
group, by the prompt alone (no task label).

    python benchmarks/routing_heldout.py                 # every shipped config, every embedder and rule
    python benchmarks/routing_heldout.py --sweep         # also accuracy against the routing floor
    python benchmarks/routing_heldout.py --no-prompts    # skip the synthetic benchmark's test prompts
    python benchmarks/routing_heldout.py --embedder-path DIR   # also a local sentence-transformers model

Paraphrases: data_recipes/routing/paraphrases.yaml (easy: reworded; hard: little word overlap),
routed alone (as a user would send them) and inside their task's CoIN layout with a question.
The codebook is grouped as an LCIA run groups it (data_recipes.routing.grouped_router) from the
instructions of the config's variant; the synthetic benchmark's original variant is CoIN's own
wording, its diverse variant stands in for CoIN's diverse and 10-type ones (not available here).

Rules: ``mean`` + fallback (the reference: mean similarity to a group's entries, below the bar the
latest group) and ``nearest`` (the best single entry); bars: the grouping tau (reference) or a floor.
Run with OMP_NUM_THREADS=1; prints figures only (no assertions).
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # this checkout's code, installed or not

from data_recipes import coin, synthetic
from data_recipes.routing import LEVELS, config_variant, grouped_router, load_paraphrases, route_paraphrases
from mmcit.config import load_config
from mmcit.routing import RouterSettings

REPO = Path(__file__).resolve().parents[1]
CONFIGS = ["configs/demo/lcia.yaml", "configs/coin/lcia_original.yaml", "configs/coin/lcia_diverse.yaml",
           "configs/coin/lcia_10type.yaml"]
TAU = {"original": 0.9, "diverse": 0.3}  # the reference grouping thresholds


def shipped() -> list[tuple[str, RouterSettings, str]]:
    """(config path, its routing settings, its instruction variant) for every shipped LCIA config."""
    out = []
    for path in CONFIGS:
        cfg = load_config(REPO / path, [f"data.image_root={REPO}", f"data.instruction_root={REPO}"])
        out.append((path, cfg.method.routing, config_variant(cfg.data.variant)))
    return out


def table(settings: RouterSettings, variant: str, layout: bool = False) -> tuple[dict, dict]:
    """Paraphrase results per set and level, and the total per level (right, n)."""
    res = route_paraphrases(grouped_router(settings, variant), variant, layout=layout)
    total = {lv: (sum(r[lv]["right"] for r in res.values()), sum(r[lv]["n"] for r in res.values())) for lv in LEVELS}
    return res, total


def pct(right: int, n: int) -> str:
    return f"{100 * right / n:5.1f}"


def print_row(label: str, res: dict, total: dict) -> None:
    sets = "  ".join(f"{name} {pct(r['easy']['right'], r['easy']['n'])}/{pct(r['hard']['right'], r['hard']['n'])}"
                     for name, r in res.items())
    print(f"  {label:<46} easy {pct(*total['easy'])}  hard {pct(*total['hard'])}   per set (easy/hard): {sets}")


def settings_grid(variant: str, embedder_paths: list[str] = ()) -> list[tuple[str, RouterSettings]]:
    """Every embedder x rule on top of the reference grouping (TF-IDF at the variant's tau); each of
    ``embedder_paths`` (a local sentence-transformers folder) as one more sentence embedder."""
    embedders = [(emb, emb, None) for emb in ("tfidf", "hashing", "sentence")]
    embedders += [(f"sentence {Path(path).name}", "sentence", path) for path in embedder_paths]
    grid = []
    for label, emb, path in embedders:
        common = {"tau": TAU[variant], "route_embedder": emb, "embedder_path": path}
        grid.append((f"{label} mean, bar tau {TAU[variant]}", RouterSettings(**common)))
        grid.append((f"{label} mean, no floor", RouterSettings(**common, route_floor=-1.0)))
        grid.append((f"{label} nearest, no floor", RouterSettings(**common, route_rule="nearest", route_floor=-1.0)))
    return grid


def paraphrase_figures(sweep: bool, embedder_paths: list[str] = ()) -> None:
    sets = load_paraphrases()
    for variant in ("original", "diverse"):
        n = {lv: sum(len(getattr(s, lv)) for s in sets.values() if variant in s.variants) for lv in LEVELS}
        print(f"\n== paraphrases, {variant} grouping ({n['easy']} easy, {n['hard']} hard), routed alone ==")
        for label, settings in settings_grid(variant, embedder_paths):
            print_row(label, *table(settings, variant))
    print("\n== shipped configs ==")
    for path, settings, variant in shipped():
        print(f"{path}: grouping {settings.embedder} tau {settings.tau}; routing {settings.routing_embedder} "
              f"{settings.route_rule}, floor {settings.bar} ({variant} instructions)")
        res, total = table(settings, variant)
        print_row("alone", res, total)
        print_row("in the task's CoIN layout", *table(settings, variant, layout=True))
        for name, r in res.items():
            for lv in LEVELS:
                for text, group in r[lv]["wrong"]:
                    print(f"    wrong ({name}, {lv}): {text!r} -> {group} (not {r[lv]['group']})")
        if sweep:
            for floor in [x / 20 for x in range(-2, 13)]:
                _, t = table(dataclasses.replace(settings, route_floor=floor), variant)
                print(f"    floor {floor:5.2f}: easy {pct(*t['easy'])}  hard {pct(*t['hard'])}")


def prompt_figures(scale: float) -> None:
    """Label-free routing of the synthetic benchmark's test prompts against label-based routing."""
    with tempfile.TemporaryDirectory(prefix="mmcit-routing-") as tmp:
        root = Path(tmp) / "synthetic"
        synthetic.generate(root, seed=0, scale=scale)
        instr, images = root / "instructions", root / "images"
        print(f"\n== the synthetic benchmark's test prompts (scale {scale}), routed by the prompt alone ==")
        for path, settings, variant in shipped():
            for test_variant in (variant, "heldout"):
                router = grouped_router(settings, variant)
                tests = [s for t in synthetic.TASKS for s in
                         coin.load_task(instr, images, test_variant, t, splits=("test",)).test]
                t0 = time.perf_counter()
                routed = router.route(tests)
                seconds = time.perf_counter() - t0
                want = [router.router.task_groups[s.task] for s in tests]
                labelled = [router.router.decide([s.instruction]).group for s in tests]
                free = sum(g == w for g, w in zip(routed, want))
                ref = sum(g == w for g, w in zip(labelled, want))
                print(f"  {path} on {test_variant} prompts: {pct(free, len(tests))}% right without the label "
                      f"(instruction extracted with the label: {pct(ref, len(tests))}%), "
                      f"{1e3 * seconds / len(tests):.2f} ms/sample with the embeddings")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sweep", action="store_true", help="accuracy against route_floor for the shipped configs")
    parser.add_argument("--no-prompts", action="store_true", help="skip the synthetic benchmark's test prompts")
    parser.add_argument("--scale", type=float, default=0.2, help="synthetic benchmark scale for the test prompts")
    parser.add_argument("--embedder-path", action="append", default=[], metavar="DIR",
                        help="a local sentence-transformers folder to measure as one more sentence embedder "
                             "(repeatable)")
    args = parser.parse_args(argv)
    paraphrase_figures(args.sweep, args.embedder_path)
    if not args.no_prompts:
        prompt_figures(args.scale)
    return 0


if __name__ == "__main__":
    sys.exit(main())

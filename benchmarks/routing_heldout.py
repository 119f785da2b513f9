"""Held-out routing accuracy of LCIA's instruction grouping on the synthetic benchmark, and its cost.

    python benchmarks/routing_heldout.py                       # sentence + tfidf, scale 1, timing
    python benchmarks/routing_heldout.py --no-generation       # routing figures only
    python benchmarks/routing_heldout.py --sweep               # also held-out % and groups per tau

The codebook is built task by task (CoIN order) from the ``Instructions_Diverse`` training
instructions with LCIA's rule (re-train the best group at similarity >= tau, else open a new one);
then every ``Instructions_Heldout`` test sample (wordings never seen in training) is routed per
instance. A sample is routed right when it lands in the group its task was trained into.

Thresholds: tfidf 0.30 (the paper's for the diverse instructions). sentence (all-MiniLM-L6-v2)
0.50: MiniLM gives unrelated English instructions cosines of 0.1-0.5, far above TF-IDF's, so 0.30
would merge tasks; the largest similarity between two different tasks' training instruction sets
is 0.48 (ImageNet vs GQA), and 0.50 is the smallest round value above it, so training keeps the
eight tasks apart while unseen wordings get the most room before they fall back. The choice uses
training instructions only; ``--sweep`` shows how held-out accuracy moves with tau.

Timing: a run routes after every task the test samples of all tasks so far (8 evaluations, 36
task evaluations in all); the benchmark replays exactly that with the held-out samples and sums the
routing time, the embedding model's one-off load reported apart. It is compared with batched
generation of the same number of samples by the tiny demo model (random weights, no pretraining:
the cost of generation does not depend on the weights), at the demo's max_new_tokens and at 4 new
tokens, about the length of a trained model's short answers (the cheaper evaluation is the
stricter comparison). Run with OMP_NUM_THREADS=1 to compare with the test settings.
Prints figures only (no assertions).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

try:
    from mmcit.routing import Codebook
except ModuleNotFoundError:  # run as a script from a checkout without installing the package
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from mmcit.routing import Codebook

from data_recipes import coin, synthetic
from mmcit.data.sample import Sample
from mmcit.routing.embedders import build_embedder
from mmcit.routing import Router

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TAU = {"tfidf": 0.30, "sentence": 0.50, "hashing": 0.30}  # hashing: untuned, tests only


def route_heldout(embedder_name: str, tau: float, train_sets: dict[str, list[str]],
                  heldout: list[Sample], embedder=None) -> dict:
    """Replay a run's routing: after training task j, route the held-out samples of tasks 1..j.

    Accuracy is that of the last evaluation (every task, the final codebook); the time is the sum
    over all evaluations of the run, as a run pays it. Grouping (training time) is not timed.
    """
    load = 0.0
    if embedder is None:
        # A run has the model's modules (and through them scikit-learn) loaded before it routes:
        # their import is not routing's cost.
        from transformers import LlavaForConditionalGeneration  # noqa: F401

        embedder = build_embedder(embedder_name)
        if embedder_name == "sentence":
            t = time.perf_counter()
            _ = embedder.model  # the one-off load, reported apart from the per-sample figures
            load = time.perf_counter() - t
    codebook = Codebook(embedder)
    router = Router(codebook, tau, "per_instance")
    by_task: dict[str, list[Sample]] = {}
    for s in heldout:
        by_task.setdefault(s.task, []).append(s)
    seconds, routed_n = 0.0, 0
    for j, (task, instructions) in enumerate(train_sets.items()):
        group, _, _ = codebook.match(instructions, tau)
        group = group or f"group_{len(codebook.groups) + 1}"
        codebook.add(group, instructions)
        router.fallback, router.task_groups[task] = group, group
        router.label = task
        samples = [s for t in list(train_sets)[: j + 1] for s in by_task.get(t, [])]
        t0 = time.perf_counter()
        routed = router.route(samples)
        seconds += time.perf_counter() - t0
        routed_n += len(samples)
    router.label = "cached"  # keep the last evaluation's counts apart
    t0 = time.perf_counter()
    router.route(heldout)  # again with cached decisions: the steady per-sample cost
    warm = time.perf_counter() - t0
    right = [g == router.task_groups[s.task] for s, g in zip(samples, routed)]
    per_task = {t: (len(v), sum(right[i] for i, s in enumerate(samples) if s.task == t)) for t, v in by_task.items()}
    groups = {g: [t for t, gg in router.task_groups.items() if gg == g] for g in codebook.groups}
    return {"embedder": embedder_name, "tau": tau, "accuracy": 100.0 * sum(right) / len(right), "groups": groups,
            "fallbacks": router.counts[list(train_sets)[-1]]["fallbacks"], "per_task": per_task, "load_s": load,
            "run_s": seconds, "run_n": routed_n, "warm_s": warm, "n": len(heldout), "embedder_obj": embedder}


def generation_seconds(heldout: list[Sample], cache_dir: Path, max_new_tokens: int, batch_size: int) -> float:
    """Wall time of the runner's batched generation of ``heldout`` with the tiny demo model."""
    import torch

    from mmcit.config import load_config
    from mmcit.data.stream import load_data
    from mmcit.evaluation.generate import generate_answers
    from mmcit.models.factory import build_model

    cfg = load_config(REPO / "configs" / "demo" / "lcia.yaml",
                      [f"data.cache_dir={cache_dir}", "model.pretrain.enabled=false", "data.sample_factor=0.05"])
    data = load_data(cfg.data, cache_dir, log=lambda m: None)
    model = build_model(cfg, data, cache_dir, log=lambda m: None, progress=False)
    generate_answers(model, heldout[:batch_size], [None] * batch_size, batch_size, 2, progress=False)  # warm-up
    torch.manual_seed(0)
    t = time.perf_counter()
    generate_answers(model, heldout, [None] * len(heldout), batch_size, max_new_tokens, progress=False)
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=1.0, help="synthetic benchmark scale (1: 60 tests per task)")
    parser.add_argument("--embedders", default="sentence,tfidf")
    parser.add_argument("--tau", action="append", default=[], help="EMBEDDER=TAU, e.g. sentence=0.55")
    parser.add_argument("--sweep", action="store_true", help="held-out accuracy and groups for a range of tau")
    parser.add_argument("--no-generation", action="store_true", help="skip timing generation")
    parser.add_argument("--batch-size", type=int, default=64, help="generation batch (the demo's eval.batch_size)")
    args = parser.parse_args(argv)
    taus = dict(DEFAULT_TAU)
    for item in args.tau:
        name, value = item.split("=", 1)
        taus[name] = float(value)

    with tempfile.TemporaryDirectory(prefix="mmcit-routing-") as tmp:
        root = Path(tmp) / "synthetic"
        synthetic.generate(root, seed=0, scale=args.scale)
        instr, images = root / "instructions", root / "images"
        tasks = synthetic.TASKS
        train_sets = {t: coin.load_task(instr, images, "diverse", t, splits=("train",)).instructions for t in tasks}
        heldout = [s for t in tasks for s in coin.load_task(instr, images, "heldout", t, splits=("test",)).test]
        print(f"synthetic benchmark, scale {args.scale}: {len(heldout)} held-out test samples, "
              f"{sum(len(v) for v in train_sets.values())} training instructions in {len(tasks)} tasks")

        results = []
        for name in args.embedders.split(","):
            r = route_heldout(name, taus[name], train_sets, heldout)
            results.append(r)
            print(f"\n[{name}] tau {r['tau']:.2f}: {r['accuracy']:.1f}% of held-out samples routed to their "
                  f"task's group ({r['fallbacks']} fell back to the latest group)")
            print("  groups: " + "; ".join(f"{g}={{{', '.join(ts)}}}" for g, ts in r["groups"].items()))
            print("  per task: " + ", ".join(f"{t} {100 * k / n:.0f}%" for t, (n, k) in r["per_task"].items()))
            print(f"  routing over the run's {len(tasks)} evaluations ({r['run_n']} samples): {r['run_s']:.3f} s, "
                  f"{1e6 * r['run_s'] / r['run_n']:.1f} us/sample; cached decisions {1e6 * r['warm_s'] / r['n']:.2f} "
                  f"us/sample" + (f"; model load {r['load_s']:.2f} s once per run" if r["load_s"] else ""))
            if args.sweep:
                for tau in [x / 100 for x in range(10, 100, 5)]:
                    s = route_heldout(name, tau, train_sets, heldout, embedder=r["embedder_obj"])
                    print(f"    tau {tau:.2f}: {len(s['groups'])} groups, held-out {s['accuracy']:.1f}%")

        if not args.no_generation:
            cache = Path(tmp) / "cache"
            print(f"\ngeneration of the {len(heldout)} samples with the tiny demo model (batch {args.batch_size}):")
            for new_tokens in (24, 4):
                gen = generation_seconds(heldout, cache, new_tokens, args.batch_size) / len(heldout)
                print(f"  max_new_tokens {new_tokens}: {1e3 * gen:.2f} ms/sample")
                for r in results:
                    run_gen = gen * r["run_n"]  # the run's evaluations generate run_n answers
                    print(f"    {r['embedder']}: routing = {100 * r['run_s'] / run_gen:.2f}% of the run's "
                          f"generation time ({run_gen:.1f} s), {100 * (r['run_s'] + r['load_s']) / run_gen:.2f}% "
                          f"with the embedding model's load")
    return 0


if __name__ == "__main__":
    sys.exit(main())

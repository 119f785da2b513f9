"""``mmcit sweep``: grid parsing, mean ± std over seeds, selection, and a tiny sweep end to end."""
from __future__ import annotations

import json
import math

import pytest

from mmcit.cli import main
from mmcit.errors import ConfigError
from mmcit.results.sweep import grid, label, mean_std, select, split_overrides, summarise
from tests.test_integration import TINY


def test_grid_axes_are_comma_lists_and_yaml_lists_stay_fixed():
    fixed, axes = split_overrides(["method.ema.scale=0.05,0.1", "data.tasks=[GQA, VizWiz]", "train.lr=1e-3",
                                   "seed=1,2"])
    assert fixed == ["data.tasks=[GQA, VizWiz]", "train.lr=1e-3"]
    assert axes == {"method.ema.scale": ["0.05", "0.1"], "seed": ["1", "2"]}
    assert grid(axes) == [{"method.ema.scale": "0.05", "seed": "1"}, {"method.ema.scale": "0.05", "seed": "2"},
                          {"method.ema.scale": "0.1", "seed": "1"}, {"method.ema.scale": "0.1", "seed": "2"}]
    assert grid({}) == [{}]
    assert label({"method.ema.scale": "0.1", "data.order": "reverse"}) == "scale-0.1_order-reverse"
    with pytest.raises(ConfigError, match="empty value"):
        split_overrides(["a=1,,2"])


def test_mean_and_sample_std_over_seeds_by_hand():
    mean, std = mean_std([10.0, 20.0, 30.0])
    assert mean == 20.0 and std == pytest.approx(10.0)  # sqrt((100 + 0 + 100) / 2)
    assert mean_std([5.0]) == (5.0, 0.0) and mean_std([]) == (None, None)
    runs = [{"metrics": {"average_accuracy": 50.0, "forgetting": 10.0}},
            {"metrics": {"average_accuracy": 60.0, "forgetting": 30.0}}]
    s = summarise({"x": "1"}, [0, 1], runs)
    assert s.mean["average_accuracy"] == 55.0 and s.std["average_accuracy"] == pytest.approx(math.sqrt(50))
    assert s.mean["forgetting"] == 20.0 and s.per_seed["forgetting"] == [10.0, 30.0]
    assert s.mean["maa"] is None  # absent from these results


def test_selection_maximises_accuracy_and_minimises_forgetting():
    a = summarise({"k": "a"}, [0], [{"metrics": {"average_accuracy": 50.0, "forgetting": 5.0}}])
    b = summarise({"k": "b"}, [0], [{"metrics": {"average_accuracy": 70.0, "forgetting": 9.0}}])
    assert select([a, b], "average_accuracy") is b and select([a, b], "forgetting") is a
    with pytest.raises(ConfigError, match="--metric"):
        select([a, b], "speed")


def test_tiny_sweep_end_to_end(tmp_path, cache_dir, capsys):
    """The grid runs on the validation split only; the setting it selects then runs on test."""
    out = tmp_path / "sweep"
    code = main(["sweep", "configs/demo/lcia.yaml", *TINY, f"data.cache_dir={cache_dir}", "method.ema.scale=0.1,2",
                 "--seeds", "0", "--jobs", "1", "--output", str(out), "--select-on", "val"])
    assert code == 0
    record = json.loads((out / "sweep.json").read_text())
    assert record["axes"] == {"method.ema.scale": ["0.1", "2"]} and len(record["grid"]) == 2
    for summary, scale in zip(record["grid"], ("0.1", "2")):
        run = json.loads((out / "val" / f"scale-{scale}" / "seed0" / "results.json").read_text())
        assert run["eval_split"] == "val"
        assert summary["mean"]["average_accuracy"] == run["metrics"]["average_accuracy"]
        assert summary["std"]["average_accuracy"] == 0.0
    vals = {s["combination"]["method.ema.scale"]: s["mean"]["average_accuracy"] for s in record["grid"]}
    chosen = record["selected"]["method.ema.scale"]
    assert vals[chosen] == max(vals.values())  # ties: the first of the grid
    tested = json.loads((out / "test" / f"scale-{chosen}" / "seed0" / "results.json").read_text())
    assert tested["eval_split"] == "test" and record["test"][0]["combination"] == {"method.ema.scale": chosen}
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    assert "| method.ema.scale=0.1 | 1 |" in (out / "sweep.md").read_text()


def test_warmed_worker_pool_runs_jobs_as_this_process_would(tmp_path, cache_dir):
    """The demo starts its workers early (``WorkerPool.warm``: each imports what runs need while this
    process still builds the data and base); runs on those workers give the results of a run here."""
    from mmcit.cli.pool import WorkerPool
    from mmcit.config import load_config
    from mmcit.recipe import run

    import os

    jobs = [("configs/demo/lora_ft.yaml", [*TINY, f"data.cache_dir={cache_dir}", f"output_dir={tmp_path / m}"])
            for m in ("here", "pool")]
    here = run(load_config(*jobs[0]), progress=False, log=lambda msg: None)  # data and base cached here
    lines: list[str] = []
    with WorkerPool(1) as pool:
        pool.warm()
        warmed = {f.result(timeout=120) for f in pool._warming}
        assert warmed and os.getpid() not in warmed  # a worker process started and imported
        results = pool.run(jobs[1:], lines.append)
    assert results[0]["accuracy_matrix"] == here["accuracy_matrix"]
    assert any("after GQA" in line for line in lines)

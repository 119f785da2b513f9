"""The Python API on one tiny finished run (a module fixture): Run's tables and pictures, the HTML
report's structure, the TensorBoard tracker's events, the comparison over seeds, and that reading a
run folder needs no torch."""
from __future__ import annotations

import contextlib
import io
import json
import math
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import yaml

import mmcit
from mmcit.cli import main
from mmcit.errors import ConfigError
from tests.test_integration import TINY

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, cache_dir):
    """An LCIA run with its EMA on in both stages, a TensorBoard tracker, progress shown on a
    captured (non-terminal) stderr; returns the Run and what was written to stderr."""
    out = tmp_path_factory.mktemp("api") / "run"
    overrides = {k: yaml.safe_load(v) for k, v in (o.split("=", 1) for o in TINY)}
    captured = io.StringIO()
    with contextlib.redirect_stderr(captured):
        run = mmcit.run(None, **overrides, output_dir=str(out), **{"data.cache_dir": str(cache_dir)},
                        method={"type": "lcia", "ema_when": "always"}, logging={"tracker": "tensorboard"},
                        log=lambda m: None)
    return run, captured.getvalue()


def test_run_tables(tiny):
    run, _ = tiny
    saved = json.loads((run.path / "results.json").read_text())
    assert run.tasks == ["TextVQA", "GQA"] and run.stages == ["TextVQA", "GQA"] and run.complete
    assert run.metrics == saved["metrics"] and run.config["method"]["type"] == "lcia"
    assert list(run.matrix.columns) == run.tasks and list(run.matrix.index) == run.stages
    assert math.isnan(run.matrix.loc["TextVQA", "GQA"])
    answers = run.answers()
    assert len(answers) == 3 + 6  # 3 test samples per task: one task after stage 1, two after stage 2
    assert answers["score"].between(0, 1).all() and answers["gold"].str.len().gt(0).all()
    assert answers["adapter"].notna().all() and all(Path(p).is_file() for p in answers["image"])
    for (stage, task), rows in answers.groupby(["stage", "task"]):  # the scores make up the matrix
        assert 100 * rows["score"].mean() == pytest.approx(run.matrix.loc[stage, task], abs=1e-3)
    assert len(run.answers(stage=-1)) == 6 and len(run.answers(stage="TextVQA", task="TextVQA")) == 3
    routing = run.routing()
    assert routing.index.names == ["stage", "task"] and routing.columns.name == "group"
    assert routing.loc[("GQA", "GQA")].sum() == 3 and int(routing.to_numpy().sum()) == len(answers)
    assert set(run.codebook()["groups"]) == set(routing.columns)


def test_alpha_trace_matches_the_ema_counters(tiny):
    run, _ = tiny
    trace = run.alpha_trace()
    per_stage = run.results["method_summary"]["ema"]["per_task"]
    groups = trace["group"].nunique()
    for record in per_stage:
        stage = trace[trace["stage"] == record["stage"]]
        assert stage["step"].max() == record["updates"] == 3 and len(stage) == 3 * groups
        assert stage[stage["step"] == 1]["alpha"].isna().all()  # the first update copies
        blended = stage["alpha"].dropna()
        assert len(blended) == 2 * groups and blended.mean() == pytest.approx(record["mean_alpha"], rel=1e-5)
        assert int(((blended - 0.01).abs() < 1e-7).sum()) == record["fallbacks"]


def _labels(ax) -> list[str]:
    """The labels of an axes' data lines (not its separators, whose labels start with _)."""
    return [line.get_label() for line in ax.get_lines() if not line.get_label().startswith("_")]


def test_plots_have_the_right_axes(tiny):
    run, _ = tiny
    fig = run.plot_matrix()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == run.tasks
    assert [t.get_text() for t in ax.get_yticklabels()] == run.stages
    assert len(ax.texts) == 3  # the measured cells are annotated
    ax = run.plot_curves().axes[0]
    assert _labels(ax) == run.tasks
    assert [t.get_text() for t in ax.get_xticklabels()] == run.stages
    groups = run.alpha_trace()["group"].nunique()
    ax = run.plot_alpha().axes[0]
    assert ax.get_yscale() == "log" and groups > 8  # many groups: a median and a 10-90% band
    assert _labels(ax) == ["median"] and len(ax.collections) == 1
    picked = sorted(run.alpha_trace()["group"].unique())[:3]
    assert _labels(run.plot_alpha(groups=picked).axes[0]) == picked
    fig = run.plot_routing()
    heatmaps = [a for a in fig.axes if a.images and a.get_title().startswith("after")]
    assert [a.get_title() for a in heatmaps] == ["after TextVQA", "after GQA"]
    assert len(run.plot_routing(stage="GQA").axes[0].get_yticklabels()) == 2  # two tasks evaluated
    dark = run.plot_curves(theme="dark")
    assert dark.get_facecolor()[:3] == pytest.approx((30 / 255, 30 / 255, 30 / 255))
    with pytest.raises(ConfigError, match="theme"):
        run.plot_matrix(theme="blue")


@pytest.fixture()
def flipped(tiny, tmp_path):
    """A copy of the run whose TextVQA scores are rewritten: question 0 right after its task and
    wrong at the end (forgotten), question 1 right both times, question 2 the reverse (gained)."""
    run, _ = tiny
    copy = tmp_path / "flipped"
    shutil.copytree(run.path, copy, ignore=shutil.ignore_patterns("checkpoints", "logs"))
    for folder, scores in (("01_TextVQA", [1.0, 1.0, 0.0]), ("02_GQA", [0.0, 1.0, 1.0])):
        file = copy / "answers" / folder / "TextVQA.jsonl"
        rows = [json.loads(line) for line in file.read_text().splitlines()]
        for row, score in zip(rows, scores):
            row["metadata"]["score"] = score
        file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return mmcit.load_run(copy)


def test_flips_and_their_picture(flipped):
    flips = flipped.flips()
    assert sorted(flips["kind"]) == ["forgotten", "gained"] and set(flips["task"]) == {"TextVQA"}
    forgotten = flips[flips["kind"] == "forgotten"].iloc[0]
    first = flipped.answers(stage="TextVQA").iloc[0]
    assert forgotten["question_id"] == first["question_id"] and forgotten["before"] == first["prediction"]
    fig = flipped.show_flips(n=5)
    assert len(fig.axes) == 1 and fig.axes[0].images  # one forgotten sample, its image shown
    assert "gold:" in fig.axes[0].get_xlabel()
    assert len(flipped.show_flips(kind="gained").axes) == 1


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def _parse(path: Path) -> _Page:
    page = _Page()
    page.feed(path.read_text(encoding="utf-8"))
    return page


def test_html_report_is_complete_and_self_contained(tiny, flipped, tmp_path):
    run, _ = tiny
    page = _parse(run.path / "report.html")
    sections = [a["id"] for t, a in page.tags if t == "section"]
    assert sections == ["metrics", "matrix", "curves", "routing", "alpha", "forgotten", "costs", "environment"]
    assert sum(t == "svg" for t, _ in page.tags) == 2  # the curves and the alpha trace
    assert sum(t == "h3" for t, _ in page.tags) == 2  # routing tables, one per stage
    assert not [t for t, a in page.tags if t in ("link", "script", "iframe")]
    assert all(a["src"].startswith("data:image/") for t, a in page.tags if "src" in a)
    text = (run.path / "report.html").read_text()
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", text)
    out = flipped.write_html(tmp_path / "flipped.html")
    images = [a["src"] for t, a in _parse(out).tags if t == "img"]
    assert len(images) == 1 and images[0].startswith("data:image/png;base64,")


def test_progress_off_a_terminal_is_plain_lines(tiny):
    _, err = tiny
    assert "\r" not in err
    assert "train TextVQA: 3/3 (100%), loss" in err and "eval GQA: 3/3 (100%)" in err


def test_tensorboard_events_have_the_tags(tiny):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, _ = tiny
    events = EventAccumulator(str(run.path / "logs" / run.name))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "eval/TextVQA", "eval/GQA", "eval/average", "ema/alpha_mean"} <= tags
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3, 4, 5, 6]  # across both stages
    assert [e.step for e in events.Scalars("eval/TextVQA")] == [3, 6]
    assert [e.step for e in events.Scalars("ema/alpha_mean")] == [2, 3, 5, 6]  # step 1 of a stage copies
    losses = [t["last_loss"] for t in run.results["timing"]["stages"]]
    assert [events.Scalars("train/loss")[k].value for k in (2, 5)] == pytest.approx(losses, rel=1e-6)


def _seed_copy(run, folder: Path, seed: int, average: float, costs: dict | None) -> Path:
    shutil.copytree(run.path, folder, ignore=shutil.ignore_patterns("checkpoints", "logs", "answers"))
    config = yaml.safe_load((folder / "config.yaml").read_text())
    config["seed"] = seed
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    results = json.loads((folder / "results.json").read_text())
    results["metrics"]["average_accuracy"] = average
    if costs is not None:
        results["costs"] = costs
    else:  # a run written before costs were recorded
        results.pop("costs", None)
    (folder / "results.json").write_text(json.dumps(results))
    return folder


def test_compare_over_seeds(tiny, tmp_path, capsys):
    run, _ = tiny
    _seed_copy(run, tmp_path / "runs" / "a", 1, 50.0, {"trainable_parameters": 1000, "peak_memory_bytes": 2**30})
    _seed_copy(run, tmp_path / "runs" / "b", 2, 70.0, None)
    table = mmcit.compare(tmp_path / "runs")  # a folder holding run folders
    assert list(table.index) == ["lcia"] and table.loc["lcia", ("runs", "n")] == 2
    assert table.loc["lcia", ("average_accuracy", "mean")] == 60.0
    assert table.loc["lcia", ("average_accuracy", "std")] == pytest.approx(math.sqrt(200))  # sample std
    assert table.loc["lcia", ("trainable_parameters", "mean")] == 1000  # recorded by one run only
    assert math.isnan(table.loc["lcia", ("stored_parameters", "mean")])
    text = table.formatted().loc["lcia"]
    assert text["average accuracy"] == "60.0 ± 14.1" and text["stored params"] == "n/a"
    assert text["peak memory MiB"] == "1024.0 ± 0.0"
    assert len(table.plot().axes) == 4
    out = tmp_path / "cmp"
    assert main(["compare", str(tmp_path / "runs" / "a"), str(tmp_path / "runs" / "b"), "--output", str(out)]) == 0
    assert "| lcia | 2 | 60.0 ± 14.1 |" in capsys.readouterr().out
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["methods"]["lcia"]["seeds"] == [1, 2]
    assert summary["methods"]["lcia"]["average_accuracy"]["values"] == [50.0, 70.0]
    assert (out / "comparison.png").read_bytes()[:4] == b"\x89PNG" and "n/a" in (out / "report.md").read_text()
    assert [a["id"] for t, a in _parse(out / "report.html").tags if t == "section"] == ["table", "plot", "runs"]
    assert main(["compare", str(tmp_path / "nothing")]) == 2


def test_reading_a_run_needs_no_torch(tiny):
    run, _ = tiny
    code = ("import sys, mmcit\n"
            "assert 'torch' not in sys.modules and 'pandas' not in sys.modules\n"
            f"r = mmcit.load_run({str(run.path)!r})\n"
            "r.answers(); r.flips(); r.routing(); r.alpha_trace()\n"
            "mmcit.compare([r])\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]


def test_build_config_from_a_dict_and_overrides(tmp_path):
    from mmcit.api import build_config

    cfg = build_config({"base": str(REPO / "configs" / "demo" / "lcia.yaml"), "seed": 3},
                       {"train__lr": 1e-4, "method": {"ema": {"scale": 0.5}}, "data.tasks": ["GQA"]})
    assert cfg.seed == 3 and cfg.train.lr == 1e-4 and cfg.data.tasks == ["GQA"]
    assert cfg.method.type == "lcia" and cfg.method.ema.scale == 0.5 and cfg.method.routing.tau == 0.9
    with pytest.raises(ConfigError, match="logging.tracker"):
        build_config(None, {"logging": {"tracker": "mlflow"}})
    with pytest.raises(ConfigError, match="unknown key"):
        build_config(None, {"train.learning_rate": 1})


def test_demo_seeds_lay_out_one_folder_per_seed_and_method(tmp_path):
    from mmcit.cli.demo import _jobs

    jobs = _jobs(["lcia", "lora_ft"], [0, 1], tmp_path, ["train.max_steps=2"], 0.5, 1)
    folders = [dict(o.split("=", 1) for o in extra)["output_dir"] for _, extra in jobs]
    assert folders == [str(tmp_path / s / m) for s in ("seed0", "seed1") for m in ("lcia", "lora_ft")]
    assert "seed=1" in jobs[3][1] and "data.sample_factor=0.5" in jobs[0][1] and "train.max_steps=2" in jobs[0][1]
    assert all("seed=" not in o for o in _jobs(["lcia"], [None], tmp_path, [], None, 0)[0][1])
    with pytest.raises(ConfigError, match="no demo config for method 'nope'"):
        _jobs(["nope"], [0], tmp_path, [], None, 1)


@pytest.mark.slow
def test_demo_over_two_seeds_end_to_end(tmp_path, cache_dir, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--methods", "lora_ft,lcia", "--seeds", "0,1", "--jobs", "1", "--output", str(out),
                 *TINY, f"data.cache_dir={cache_dir}"]) == 0
    table = mmcit.compare(out)  # folders in name order: seed0/lcia first
    assert list(table.index) == ["lcia", "lora_ft"] and (table[("runs", "n")] == 2).all()
    for seed in (0, 1):
        assert (out / f"seed{seed}" / "report.md").is_file() and (out / f"seed{seed}" / "lcia" / "report.html").is_file()
    summary = json.loads((out / "comparison.json").read_text())
    assert summary["methods"]["lcia"]["seeds"] == [0, 1]
    assert "| lora_ft | 2 |" in (out / "report.md").read_text() and "| lora_ft | 2 |" in capsys.readouterr().out


@pytest.mark.slow
def test_wandb_tracker_writes_an_offline_run(tmp_path):
    pytest.importorskip("wandb")
    from mmcit.results.tracking import LoggingConfig, open_tracker

    tracker = open_tracker(LoggingConfig("wandb"), "tiny", tmp_path, {"seed": 0, "train": {"lr": 1e-3}})
    tracker.on_step(1, 2.5, 1e-3)
    tracker.close()
    runs = list((tmp_path / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    assert len(runs) == 1 and runs[0].stat().st_size > 0

"""Up-front validation: every bad input is a one-line error with exit code 2, before any model is
built (no pretrained base appears in the cache)."""
import pytest

from mmcit.cli import main

CFG = "configs/demo/lora_ft.yaml"


@pytest.mark.parametrize(
    "args, words",
    [
        ([CFG, "train.learning_rate=1"], "unknown key learning_rate"),
        ([CFG, "train.batch_size=abc"], "train.batch_size: expected int"),
        ([CFG, "train.lr=0"], "train.lr must be > 0"),
        ([CFG, "method={type: lcia, routing: {tau: 1.5}}"], "method.routing.tau must be a cosine similarity"),
        ([CFG, "data.tasks=[]"], "data.tasks is empty"),
        ([CFG, "method={type: replay, per_task_count: 5}"], "exactly one of method.per_task_count"),
        ([CFG, "method={type: replay, ratio: 1}"], "method.ratio must be in (0, 1)"),
        ([CFG, "method={type: replay}", "train.batch_size=1"], "train.batch_size (and every"),
        ([CFG, "method={type: ewc, gamma: 0}"], "method.gamma must be in (0, 1]"),
        ([CFG, "method={type: ewc, lam: -1}"], "method.lam must be >= 0"),
        ([CFG, "method={type: ewc, fisher_samples: 0}"], "method.fisher_samples must be >= 1"),
        ([CFG, "method={type: lwf, temperature: 0}"], "method.temperature must be > 0"),
        ([CFG, "method={type: lwf, weight: -0.5}"], "method.weight must be >= 0"),
        ([CFG, "data.tasks=[GQA, GQA]"], "duplicates"),
        ([CFG, "eval.split=train"], "eval.split must be one of test, val"),
        (["configs/nope.yaml"], "config file not found"),
        ([CFG, "data.source=coin", "data.instruction_root=/nonexistent/instr", "data.image_root=/nonexistent/img"],
         "/nonexistent/instr"),
    ],
)
def test_bad_input_is_one_line_exit_2(args, words, tmp_path, capsys):
    code = main(["run", *args, f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and err[0].startswith("mmcit: error:") and words in err[0], err
    assert not (tmp_path / "cache" / "bases").exists() and not (tmp_path / "run").exists()


def test_output_folder_of_a_different_run_is_refused(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.yaml").write_text("name: someone-else\n")
    tiny = ["data.tasks=[GQA]", "data.sample_factor=0.05"]
    code = main(["run", CFG, *tiny, f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={run_dir}"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "holds a different run" in err[0]
    assert not (tmp_path / "cache" / "bases").exists()  # refused before any model was built
    assert (run_dir / "config.yaml").read_text() == "name: someone-else\n"  # untouched


def test_val_split_without_val_files_is_refused_before_training(tmp_path, capsys):
    """eval.split=val on a tree without val.json (real CoIN has none): one line, no model built."""
    from data_recipes.synthetic import generate

    generate(tmp_path / "tree", seed=0, scale=0.05, tasks=["GQA"])
    (tmp_path / "tree" / "instructions" / "Instructions" / "GQA" / "val.json").unlink()
    args = ["data.source=coin", f"data.instruction_root={tmp_path / 'tree' / 'instructions'}",
            f"data.image_root={tmp_path / 'tree' / 'images'}", "data.tasks=[GQA]",
            f"data.cache_dir={tmp_path / 'cache'}", f"output_dir={tmp_path / 'run'}"]
    code = main(["run", CFG, *args, "eval.split=val"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("mmcit: error:"), err
    assert "eval.split=val" in err[0] and "GQA" in err[0] and "no val samples" in err[0]
    assert not (tmp_path / "cache" / "bases").exists() and not (tmp_path / "run").exists()

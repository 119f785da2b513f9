import json

from mmcit.results.report import build_results, write_combined_report, write_run_report


def _results(method, matrix, joint=False):
    r = build_results(method, ["A", "B"], ["A", "B"] if not joint else ["all_tasks"], matrix, joint,
                      {"name": method, "timing": {"stages": [], "total_seconds": 3.0}, "environment": {"torch": "x"}})
    return r


def test_run_report_and_combined_report(tmp_path):
    seq = _results("lora_ft", [[80.0], [20.0, 90.0]])
    joint = _results("multitask", [[70.0, 60.0]], joint=True)
    assert seq["metrics"]["forgetting"] == 60.0 and seq["metrics"]["average_accuracy"] == 55.0
    assert joint["metrics"]["average_accuracy"] == 65.0 and joint["metrics"]["forgetting"] is None
    (tmp_path / "lora_ft").mkdir()
    write_run_report(tmp_path / "lora_ft", seq)
    text = (tmp_path / "lora_ft" / "report.md").read_text()
    assert "| B | 20.0 | 90.0 |" in text and "| Forgetting | 60.0 |" in text
    assert (tmp_path / "lora_ft" / "accuracy_matrix.png").read_bytes()[:4] == b"\x89PNG"
    table = write_combined_report(tmp_path, [seq, joint])
    assert "| lora_ft | 55.0 | 60.0 | 85.0 |" in table and "| multitask | 65.0 | n/a |" in table
    combined = (tmp_path / "report.md").read_text()
    assert combined.startswith("# mmcit comparison\n\n") and "\n\n| method |" in combined
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert [s["method"] for s in summary] == ["lora_ft", "multitask"]

"""One registry idiom for every kind of plug-in; ``mmcit ls`` and ``mmcit validate``."""
from __future__ import annotations

from dataclasses import dataclass

import pytest

from mmcit.cli import main
from mmcit.errors import ConfigError
from mmcit.methods.base import METHODS, Method, MethodConfig
from mmcit.registry import KINDS, Registry, registry


def test_every_kind_lists_its_builtin_entries_with_a_description():
    expected = {
        "methods": {"lora_ft", "multitask", "ema", "adaptive_ema", "lcia", "zero_shot"},
        "backends": {"tiny_llava", "hf_llava", "composed"},
        "scorers": {"scienceqa", "textvqa", "imagenet", "gqa", "vizwiz", "vqav2", "ocrvqa", "grounding"},
        "embedders": {"tfidf", "sentence", "hashing"},
        "templates": {"vicuna_v1", "vicuna_plain", "tokenizer", "processor"},
        "routing": {"per_instance", "per_task", "per_file"},
        "readers": {"coin", "synthetic"},  # registered by data_recipes through the entry point
        "suites": {"coin"},
    }
    assert set(KINDS) == set(expected)
    for kind, names in expected.items():
        docs = registry(kind).docs()
        assert names <= set(docs), kind
        assert all(docs[n] and "\n" not in docs[n] for n in names), kind


def test_names_are_lower_case_unique_and_equal_to_the_file_name():
    @dataclass
    class Cfg(MethodConfig):
        type: str = "Bad"

    class Upper(Method):
        name = "Bad"
        config_cls = Cfg

    with pytest.raises(ValueError, match="must be lower case"):
        METHODS.register(Upper)

    class Elsewhere(Method):  # defined in tests/test_registry.py, not methods/elsewhere.py
        name = "elsewhere"

    with pytest.raises(ValueError, match="must be the name of its file"):
        METHODS.register(Elsewhere)

    class Twin(Method):
        name = "lcia"

    with pytest.raises(ValueError, match="registered already"):
        with METHODS.temporarily(Twin):
            pass
    with METHODS.temporarily(Elsewhere):  # tests may register inline, for the block only
        assert "elsewhere" in METHODS
    assert "elsewhere" not in METHODS


def test_unknown_names_are_config_errors_listing_the_registered_ones():
    reg = Registry("widgets")
    reg.register(lambda: 1, name="one", doc="the first")
    with pytest.raises(ConfigError, match=r"thing\.type: unknown widget 'two'; registered: one"):
        reg.get("two", "thing.type")
    assert reg.docs() == {"one": "the first"}


def test_ls_prints_every_kind(capsys):
    assert main(["ls"]) == 0
    out = capsys.readouterr().out
    for kind in KINDS:
        assert f"{kind}:" in out
    assert main(["ls", "methods"]) == 0
    lines = capsys.readouterr().out.splitlines()
    lcia = next(line for line in lines if line.split()[0] == "lcia")
    assert "Instruction-grouped parameter allocation" in lcia
    assert all(line.startswith("  ") for line in lines)


def test_validate_checks_config_and_data_paths_without_building_a_model(tmp_path, capsys):
    assert main(["validate", "configs/demo/lcia.yaml", f"data.cache_dir={tmp_path}"]) == 0
    assert capsys.readouterr().out.startswith("ok: demo-lcia: method lcia, model tiny_llava, data synthetic")
    assert not any(tmp_path.iterdir())  # nothing generated, nothing built

    assert main(["validate", "configs/demo/lcia.yaml", "method.routing.tau=2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mmcit: error: method.routing.tau must be")

    assert main(["validate", "configs/coin/lcia_original.yaml", f"data.image_root={tmp_path}",
                 f"data.instruction_root={tmp_path / 'nowhere'}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"mmcit: error: data.instruction_root: no variant folder {tmp_path / 'nowhere' / 'Instructions'}"]

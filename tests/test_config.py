from pathlib import Path

import pytest

from mmcit.config import ConfigError, RunConfig, apply_overrides, from_dict, load_config

REPO = Path(__file__).resolve().parent.parent


def test_defaults_and_nested_types():
    cfg = from_dict(RunConfig, {"train": {"lr": 1, "max_steps": 5}, "method": {"type": "multitask"}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)  # an int is accepted for a float
    assert cfg.train.max_steps == 5
    assert cfg.method.type == "multitask" and type(cfg.method).__name__ == "MultitaskConfig"


def test_unknown_key_names_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        from_dict(RunConfig, {"train": {"learning_rate": 1e-4}})
    msg = str(e.value)
    assert "train: unknown key learning_rate" in msg and "lr" in msg and "batch_size" in msg


def test_wrong_type_is_an_error_naming_the_key():
    with pytest.raises(ConfigError, match=r"train\.batch_size: expected int"):
        from_dict(RunConfig, {"train": {"batch_size": "16"}})
    with pytest.raises(ConfigError, match=r"data\.tasks: expected a list"):
        from_dict(RunConfig, {"data": {"tasks": "GQA"}})
    with pytest.raises(ConfigError, match="expected int"):
        from_dict(RunConfig, {"seed": True})  # bool is not an int here


def test_unknown_method_lists_registered():
    with pytest.raises(ConfigError, match="unknown method 'foo'.*lora_ft"):
        from_dict(RunConfig, {"method": {"type": "foo"}})


def test_overrides_parse_as_yaml():
    data = apply_overrides({"train": {"lr": 1.0}}, ["train.lr=1e-4", "data.tasks=[GQA, VizWiz]", "name=x"])
    assert data == {"train": {"lr": 1e-4}, "data": {"tasks": ["GQA", "VizWiz"]}, "name": "x"}
    with pytest.raises(ConfigError, match="not key=value"):
        apply_overrides({}, ["train.lr"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("train.lr=0", "train.lr must be > 0"),
        ("data.tasks=[]", "data.tasks is empty"),
        ("data.tasks=[GQA, GQA]", "duplicates"),
        ("data.tasks=[Nope]", "unknown synthetic task"),
        ("eval.scoring_mode=strict", "scoring_mode"),
    ],
)
def test_impossible_values(override, message):
    with pytest.raises(ConfigError, match=message):
        load_config(None, [override])


def test_base_include_and_method_switch(tmp_path):
    (tmp_path / "base.yaml").write_text("train:\n  lr: 0.5\n  batch_size: 4\nmethod:\n  type: lora_ft\n")
    (tmp_path / "exp.yaml").write_text("base: base.yaml\ntrain:\n  batch_size: 8\nmethod:\n  type: multitask\n")
    cfg = load_config(tmp_path / "exp.yaml")
    assert (cfg.train.lr, cfg.train.batch_size, cfg.method.type) == (0.5, 8, "multitask")


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize("path", sorted(p for p in (REPO / "configs").rglob("*.yaml") if p.name != "base.yaml"),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_every_shipped_config_loads(path):
    cfg = load_config(path)
    assert cfg.name and cfg.output_dir


@pytest.mark.parametrize("variant,tau", [("original", 0.9), ("diverse", 0.3), ("10type", 0.3)])
def test_coin_configs_carry_the_published_setting(variant, tau):
    lcia = load_config(REPO / "configs" / "coin" / f"lcia_{variant}.yaml")
    base = load_config(REPO / "configs" / "coin" / f"lora_ft_{variant}.yaml")
    for cfg in (lcia, base):
        m, t = cfg.model, cfg.train
        assert (m.type, m.feature_layer, m.projector, m.chat_template, m.image_aspect) == \
            ("composed", -2, "mlp2x_gelu", "vicuna_v1", "pad")
        assert (m.lora_r, m.lora_alpha, m.lora_dropout, m.dtype, m.gradient_checkpointing) == \
            (128, 256, 0.05, "bfloat16", True)
        assert (t.lr, t.projector_lr, t.weight_decay, t.schedule, t.warmup_ratio, t.epochs, t.max_length) == \
            (2e-4, 2e-5, 0.0, "cosine", 0.03, 1.0, 2048)
        assert t.task_batch_size == {"ScienceQA": 128, "TextVQA": 128, "ImageNet": 160, "GQA": 64, "VizWiz": 128,
                                     "Grounding": 64, "VQAv2": 80, "OCRVQA": 96}
        assert cfg.data.tasks == ["ScienceQA", "TextVQA", "ImageNet", "GQA", "VizWiz", "Grounding", "VQAv2", "OCRVQA"]
    assert lcia.data.variant == base.data.variant
    assert (lcia.method.type, lcia.method.routing.tau, lcia.method.routing.embedder) == ("lcia", tau, "tfidf")
    # The reference EMA constants (the demo sets another scale for its tiny tensors, not CoIN).
    e = lcia.method.ema
    assert (e.scale, e.fallback, e.granularity, e.fixed_alpha) == (2.0, 0.01, "tensor", None)


@pytest.mark.parametrize("name, scale", [("lcia", 0.1), ("adaptive_ema", 0.03)])
def test_demo_emas_use_the_tiny_model_scale(name, scale):
    """The demo's adaptive EMAs run at the scales selected on the validation split for the tiny
    model's tensors (the figures are in each config's comment); the rest of the update stays the
    reference's."""
    m = load_config(REPO / "configs" / "demo" / f"{name}.yaml").method
    assert (m.type, m.ema.scale, m.ema.fallback, m.ema.granularity, m.ema.alpha_norm) == (
        name, scale, 0.01, "tensor", "sum")

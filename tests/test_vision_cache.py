"""The frozen tower's output tokens, computed once, give what the model's own forward computes; the
EfficientNet tower survives the save / load round trip of the cached base."""
import os
import time

import pytest
import torch
from PIL import Image

from mmcit.models.tiny_llava.build import TinyModelSpec, build_tiny_llava, truncate_tower
from mmcit.models.tiny_llava.tokenizer import train_tokenizer
from mmcit.models.tower_cache import cacheable, tower_tokens, with_image_tokens


def _model(vision: str):
    tok = train_tokenizer(["USER: ASSISTANT: a red circle top left, 1 object"], vocab_size=300)
    spec = TinyModelSpec(vision=vision, image_size=32, patch_size=16, vision_hidden=32, vision_layers=1,
                         vision_heads=2, text_hidden=32, text_layers=1, text_heads=2, text_intermediate=64)
    model, processor = build_tiny_llava(spec, tok)
    images = [Image.new("RGB", (32, 32), c) for c in ((200, 30, 30), (30, 30, 200))]
    batch = processor(images=images, text=["USER: <image>\nwhat? ASSISTANT: red circle"] * 2, return_tensors="pt")
    batch["labels"] = batch["input_ids"].clone()
    model.model.vision_tower.requires_grad_(False)  # as in every stage that caches its outputs
    return model.eval(), dict(batch)


@pytest.mark.parametrize("vision", ["efficientnet_lite0", "clip"])
def test_tokens_computed_once_give_the_models_own_loss(vision):
    model, batch = _model(vision)
    assert cacheable(model)
    own = model(**batch).loss
    tokens = tower_tokens(model, batch["pixel_values"])
    via = model(**with_image_tokens(model, batch, tokens)).loss
    assert via.item() == pytest.approx(own.item(), rel=1e-5)


def test_efficientnet_tower_is_pretrained_and_survives_a_reload(tmp_path):
    from transformers import AutoModelForImageTextToText

    model, batch = _model("efficientnet_lite0")
    stem = model.model.vision_tower.timm_model.conv_stem.weight
    assert stem.abs().sum() > 0 and len(model.model.vision_tower.timm_model.blocks) == 5  # cut after stage 3
    model.save_pretrained(tmp_path)
    loaded = AutoModelForImageTextToText.from_pretrained(tmp_path).eval()
    truncate_tower(loaded)
    with torch.no_grad():
        assert torch.equal(loaded(**batch).logits, model(**batch).logits)


def test_training_leaves_the_frozen_towers_batchnorm_statistics_alone():
    from mmcit.models.wrapper import LoraSettings, MMModel

    model, batch = _model("efficientnet_lite0")
    tower = model.model.vision_tower
    before = {k: v.clone() for k, v in tower.state_dict().items()}
    mm = MMModel.from_base(model, _processor_stub(), LoraSettings(r=2, alpha=4))
    mm.train()
    assert not tower.training
    mm(**batch).loss.backward()
    assert all(torch.equal(before[k], v) for k, v in tower.state_dict().items())


def _processor_stub():
    class Stub:  # MMModel only reads the tokenizer from its processor here
        tokenizer = None
    return Stub()


# -- tokens kept on disk between runs (train.tower_token_cache) --------------------------------------
def _stream_run(out, cache_dir, store: bool):
    from mmcit.config import load_config
    from mmcit.recipe import run

    cfg = load_config(None, [
        "name=token-store", f"output_dir={out}", f"data.cache_dir={cache_dir}", "data.tasks=[TextVQA,GQA]",
        "data.sample_factor=0.05", "data.test_limit=3", "train.max_steps=3", "train.batch_size=4",
        "model.pretrain.steps=5", "model.text_layers=1", "model.vision_layers=1", "eval.max_new_tokens=4",
        "threads=1", "method={type: lora_ft}", f"train.tower_token_cache={str(store).lower()}",
    ])
    return run(cfg, progress=False, log=lambda msg: None)


def test_stored_tower_tokens_are_read_back_by_the_next_run_and_train_the_same(tmp_path, cache_dir, monkeypatch):
    import shutil

    from safetensors.torch import load_file

    from mmcit.models.tower_cache import TokenStore

    shutil.rmtree(cache_dir / "tower_tokens", ignore_errors=True)  # this worker's earlier tests may have filled it
    stores = []
    init = TokenStore.__init__
    monkeypatch.setattr(TokenStore, "__init__", lambda self, root: init(self, root) or stores.append(self))

    def counts():  # the run's store, made after its model (a base pretrained on a miss has its own before)
        out = (stores[-1].read, stores[-1].computed, stores[-1].waited)
        stores.clear()
        return out

    first = _stream_run(tmp_path / "a", cache_dir, store=True)
    assert counts() == (0, 2, 0)  # one chunk of images per stage, computed and stored
    assert not list((cache_dir / "tower_tokens").rglob("*.claim"))  # claims released
    second = _stream_run(tmp_path / "b", cache_dir, store=True)
    assert counts() == (2, 0, 0)
    plain = _stream_run(tmp_path / "c", cache_dir, store=False)
    assert counts() == (0, 0, 0)  # the store is not consulted at all

    assert first["accuracy_matrix"] == second["accuracy_matrix"] == plain["accuracy_matrix"]
    adapters = [load_file(tmp_path / d / "checkpoints" / "02_GQA" / "adapters.safetensors") for d in "abc"]
    assert adapters[0].keys() == adapters[1].keys() == adapters[2].keys() and len(adapters[0]) > 0
    for name in adapters[0]:
        assert torch.equal(adapters[0][name], adapters[1][name]) and torch.equal(adapters[0][name], adapters[2][name])


def test_token_store_keys_follow_everything_the_bits_depend_on(tmp_path):
    from mmcit.models.tower_cache import TokenStore, tower_tokens

    model, batch = _model("efficientnet_lite0")
    store = TokenStore(tmp_path)
    pixels = list(batch["pixel_values"])

    def key(batch_size=1, images=pixels):
        return store.chunk_key(store.head(model, batch_size), images)

    first = key()
    assert key() == first
    assert key(images=pixels[::-1]) != first  # the images, in order
    assert key(batch_size=64) != first  # the batch size the tower runs at
    threads = torch.get_num_threads()
    torch.set_num_threads(threads + 1)
    try:
        assert key() != first  # the thread count
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        model.model.vision_tower.timm_model.conv_stem.weight[0, 0, 0, 0] += 1e-3
    assert key() != first  # the tower's weights

    tokens = tower_tokens(model, batch["pixel_values"], batch_size=1)
    store.save(first, tokens)
    assert torch.equal(store.load(first, len(pixels)), tokens)
    assert store.load(first, len(pixels) + 1) is None  # another number of images: not these tokens
    store.path(first).write_bytes(b"not a safetensors file")
    assert store.load(first, len(pixels)) is None


def _claim(store, key, pid):
    import socket

    path = store._claim_path(key)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{socket.gethostname()} {pid}")
    return path


def test_concurrent_runs_share_the_chunks_and_never_wait_on_a_dead_claim(tmp_path):
    import subprocess
    import sys
    import threading

    from mmcit.models.tower_cache import TokenStore, tower_tokens

    model, batch = _model("efficientnet_lite0")
    pixels = list(batch["pixel_values"])
    want = tower_tokens(model, batch["pixel_values"], batch_size=1)

    # Chunk 0 is claimed by a live process (this one stands in): the store computes chunk 1 only,
    # then reads chunk 0 once the other process writes it and drops its claim.
    store = TokenStore(tmp_path / "live")
    store.CHUNK, store.POLL_S = 1, 0.01
    keys = [store.chunk_key(store.head(model, 1), [px]) for px in pixels]
    claim = _claim(store, keys[0], os.getpid())

    def other():
        time.sleep(0.3)
        store.save(keys[0], want[:1])
        claim.unlink()

    thread = threading.Thread(target=other)
    thread.start()
    got = store.tokens(model, pixels, 1)
    thread.join()
    assert torch.equal(got, want) and (store.read, store.computed, store.waited) == (0, 1, 1)

    # A claim left by a process that has died is taken over at once.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    store = TokenStore(tmp_path / "dead")
    keys = [store.chunk_key(store.head(model, 1), pixels)]
    claim = _claim(store, keys[0], int(dead.stdout))
    start = time.monotonic()
    assert torch.equal(store.tokens(model, pixels, 1), want)
    assert (store.read, store.computed, store.waited) == (0, 1, 0) and time.monotonic() - start < 5
    assert not claim.exists() and store.path(keys[0]).exists()

    # A live claim dropped without a file (its process gave up): computed here after all.
    store = TokenStore(tmp_path / "gave-up")
    store.POLL_S = 0.01
    claim = _claim(store, store.chunk_key(store.head(model, 1), pixels), os.getpid())
    threading.Timer(0.2, claim.unlink).start()
    assert torch.equal(store.tokens(model, pixels, 1), want) and (store.computed, store.waited) == (1, 0)


def test_a_base_pretrained_again_reads_its_tower_tokens_and_is_byte_identical(tmp_path, cache_dir, monkeypatch):
    import shutil

    from mmcit.config import load_config
    from mmcit.data.stream import load_data
    from mmcit.models.factory import build_model
    from mmcit.models.tiny_llava.pretrain import base_key
    from mmcit.models.tower_cache import TokenStore

    stores = []
    init = TokenStore.__init__
    monkeypatch.setattr(TokenStore, "__init__", lambda self, root: init(self, root) or stores.append(self))
    shutil.rmtree(cache_dir / "tower_tokens", ignore_errors=True)

    def build(store: bool) -> bytes:
        cfg = load_config(None, [f"data.cache_dir={cache_dir}", "data.tasks=[TextVQA,GQA]", "data.sample_factor=0.05",
                                 "model.pretrain.steps=3", "model.text_layers=1", "seed=913", "threads=1",
                                 f"train.tower_token_cache={str(store).lower()}"])
        data = load_data(cfg.data, cfg.data.cache_path(), log=lambda msg: None)
        folder = cache_dir / "bases" / base_key(cfg.model, data.key, cfg.seed)
        shutil.rmtree(folder, ignore_errors=True)  # pretrained now, not loaded
        stores.clear()
        build_model(cfg, data, cfg.data.cache_path(), log=lambda msg: None, progress=False)
        return (folder / "model.safetensors").read_bytes()

    filled = build(store=True)
    assert len(stores) == 1 and stores[0].read == 0 and stores[0].computed > 0
    again = build(store=True)
    assert len(stores) == 1 and stores[0].computed == 0 and stores[0].read > 0
    plain = build(store=False)
    assert stores == [] and filled == again == plain


def test_a_store_that_cannot_be_written_still_gives_the_tokens_and_warns_once(tmp_path):
    from mmcit.models.tower_cache import TokenStore, tower_tokens

    model, batch = _model("efficientnet_lite0")
    blocker = tmp_path / "file"
    blocker.write_text("a file where the store's folder would be")
    store = TokenStore(blocker / "tower_tokens")
    store.CHUNK = 1  # two chunks, two failed writes
    with pytest.warns(UserWarning, match="tower tokens not stored") as caught:
        got = store.tokens(model, list(batch["pixel_values"]), 1)
    assert torch.equal(got, tower_tokens(model, batch["pixel_values"], batch_size=1))
    assert len([w for w in caught if "tower tokens not stored" in str(w.message)]) == 1 and store.computed == 2

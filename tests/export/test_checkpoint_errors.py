"""Bad checkpoint directories fail early, with the right exception type and a message naming the file/key.

Each test damages a private copy of a real tiny checkpoint (real safetensors and JSON files, edited with
safetensors/torch) and loads it through both entry points that read checkpoints: the export toolchain's
``export.checkpoint.load_model`` and the runtime's ``rlrc_runtime.load_policy``. The last section checks
what loading must preserve: old key spellings, sharding, overwrite protection and dtype conversion.
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from export.checkpoint import load_model, save_checkpoint
from rlrc_runtime import load_policy
from rlrc_runtime.checkpoint import INDEX_FILE, SINGLE_FILE
from rlrc_runtime.config import VISION_BACKBONES
from rlrc_runtime.errors import (
    CheckpointError,
    ConfigError,
    KeyMismatchError,
    MissingFileError,
    NormStatsError,
    ShapeMismatchError,
    TokenizerNotFoundError,
    UnknownBackboneError,
    UnnormKeyError,
)

DATASET = "tiny_demo"  # the one dataset in the tiny presets' norm_stats
SHARD_BYTES = 2_000_000  # splits the ~17.6 MB tiny checkpoint into 4 shards


# --------------------------------------------------------------------------- helpers


def _load_model(path: Path) -> Any:
    return load_model(path)


def _load_policy(path: Path) -> Any:
    policy = load_policy(path)
    policy.close()
    return policy


LOADERS = [pytest.param(_load_model, id="load_model"), pytest.param(_load_policy, id="load_policy")]


def edit_json(path: Path, edit: Callable[[Any], Any]) -> None:
    """Apply ``edit`` to the parsed file in place (its return value is ignored)."""
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data, indent=2))


def rewrite_tensors(path: Path, edit: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]]) -> None:
    """Rewrite a safetensors file with ``edit(tensors)``."""
    tensors = edit(load_file(str(path)))
    save_file(tensors, str(path), metadata={"format": "pt"})


def set_norm_stats(ckpt: Path, edit: Callable[[dict], Any]) -> None:
    """Edit config.json's norm_stats (config.json wins over dataset_statistics.json)."""
    edit_json(ckpt / "config.json", lambda cfg: edit(cfg["norm_stats"]))


def snapshot(path: Path) -> dict[str, str]:
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def example_inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    pixel_values = torch.randn(1, 6, 224, 224, generator=gen)  # [B, 6, S, S]
    input_ids = torch.tensor([[1, 512, 1033, 2077, 13, 666, 29871]])  # [B, T]
    return pixel_values, input_ids


@torch.inference_mode()
def logits_of(model: torch.nn.Module) -> torch.Tensor:
    return model(*example_inputs())


@pytest.fixture
def sharded_copy(ckpt_factory, ckpt_copy) -> Path:
    return ckpt_copy(ckpt_factory("tiny", max_shard_bytes=SHARD_BYTES))


@pytest.fixture(scope="module")
def reference_logits(tiny_ckpt: Path) -> torch.Tensor:
    model, _ = load_model(tiny_ckpt)
    return logits_of(model)


# --------------------------------------------------------------------------- config.json


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_config_json(loader, ckpt_copy):
    ckpt = ckpt_copy()
    (ckpt / "config.json").unlink()
    with pytest.raises(MissingFileError) as exc:
        loader(ckpt)
    assert str(ckpt) in str(exc.value) and "config.json" in str(exc.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_checkpoint_directory(loader, tmp_path):
    with pytest.raises(MissingFileError, match="does not exist") as exc:
        loader(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere") in str(exc.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_config_json_not_valid_json(loader, ckpt_copy):
    ckpt = ckpt_copy()
    text = (ckpt / "config.json").read_text()
    (ckpt / "config.json").write_text(text[: len(text) // 2])  # a truncated copy
    with pytest.raises(CheckpointError, match="not valid JSON") as exc:
        loader(ckpt)
    assert not isinstance(exc.value, MissingFileError)
    assert str(ckpt / "config.json") in str(exc.value)


@pytest.mark.parametrize("content", ["[1, 2]", '"openvla"'])
def test_config_json_not_an_object(ckpt_copy, content):
    ckpt = ckpt_copy()
    (ckpt / "config.json").write_text(content)
    with pytest.raises((CheckpointError, ConfigError)) as exc:
        load_model(ckpt)
    assert str(ckpt / "config.json") in str(exc.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_model_type_not_openvla(loader, ckpt_copy):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", lambda cfg: cfg.update(model_type="llava"))
    with pytest.raises(ConfigError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert str(ckpt / "config.json") in msg and "'llava'" in msg and "'openvla'" in msg


@pytest.mark.parametrize("loader", LOADERS)
def test_unknown_backbone_near_miss_gets_did_you_mean(loader, ckpt_copy):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", lambda cfg: cfg.update(vision_backbone_id="dinosiglip-vit-so-224"))
    with pytest.raises(UnknownBackboneError) as exc:
        loader(ckpt)
    assert isinstance(exc.value, ConfigError)  # callers catching config errors see it too
    msg = str(exc.value)
    assert str(ckpt / "config.json") in msg
    assert "'dinosiglip-vit-so-224'" in msg
    assert "Did you mean 'dinosiglip-vit-so-224px'?" in msg
    for backbone in VISION_BACKBONES:
        assert repr(backbone) in msg


def test_unknown_backbone_far_off_lists_supported_without_hint(ckpt_copy):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", lambda cfg: cfg.update(vision_backbone_id="resnet50"))
    with pytest.raises(UnknownBackboneError) as exc:
        load_model(ckpt)
    msg = str(exc.value)
    assert "Did you mean" not in msg
    assert all(repr(b) in msg for b in VISION_BACKBONES)


# --------------------------------------------------------------------------- weight files


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_shard(loader, sharded_copy):
    ckpt = sharded_copy
    weight_map = json.loads((ckpt / INDEX_FILE).read_text())["weight_map"]
    shards = sorted(set(weight_map.values()))
    assert len(shards) > 1 and not (ckpt / SINGLE_FILE).exists()
    (ckpt / shards[1]).unlink()
    with pytest.raises(MissingFileError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert str(ckpt / shards[1]) in msg and "missing" in msg and INDEX_FILE in msg


@pytest.mark.parametrize("loader", LOADERS)
def test_index_maps_key_to_wrong_shard(loader, sharded_copy):
    ckpt = sharded_copy
    index = json.loads((ckpt / INDEX_FILE).read_text())
    shards = sorted(set(index["weight_map"].values()))
    key = next(k for k, f in index["weight_map"].items() if f == shards[0])
    index["weight_map"][key] = shards[1]
    (ckpt / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert repr(key) in msg and shards[0] in msg and shards[1] in msg


def test_index_maps_key_no_shard_holds(sharded_copy):
    ckpt = sharded_copy
    index = json.loads((ckpt / INDEX_FILE).read_text())
    shard = sorted(set(index["weight_map"].values()))[0]
    index["weight_map"]["projector.fc9.weight"] = shard
    (ckpt / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as exc:
        load_model(ckpt)
    assert "'projector.fc9.weight'" in str(exc.value) and shard in str(exc.value)


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    "keep, expected",
    [
        (-1000, "truncated"),  # data cut off the end
        (100, "not valid JSON"),  # cut inside the JSON header
        (4, "truncated"),  # cut inside the 8-byte header length
    ],
    ids=["data", "header", "length"],
)
def test_truncated_safetensors(loader, ckpt_copy, keep, expected):
    ckpt = ckpt_copy()
    file = ckpt / SINGLE_FILE
    file.write_bytes(file.read_bytes()[:keep])
    with pytest.raises(CheckpointError, match=expected) as exc:
        loader(ckpt)
    assert str(file) in str(exc.value)


@pytest.mark.parametrize("loader", LOADERS)
def test_pytorch_model_bin_only(loader, ckpt_copy):
    ckpt = ckpt_copy()
    torch.save(load_file(str(ckpt / SINGLE_FILE)), ckpt / "pytorch_model.bin")
    (ckpt / SINGLE_FILE).unlink()
    with pytest.raises(MissingFileError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert "pytorch_model.bin" in msg and "only safetensors" in msg and str(ckpt) in msg


# --------------------------------------------------------------------------- keys and shapes


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_key(loader, ckpt_copy):
    ckpt = ckpt_copy()
    key = "language_model.model.layers.2.self_attn.o_proj.weight"
    rewrite_tensors(ckpt / SINGLE_FILE, lambda t: {k: v for k, v in t.items() if k != key})
    with pytest.raises(KeyMismatchError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert repr(key) in msg and "1 missing" in msg and str(ckpt) in msg


@pytest.mark.parametrize("loader", LOADERS)
def test_unexpected_key(loader, ckpt_copy):
    ckpt = ckpt_copy()
    rewrite_tensors(ckpt / SINGLE_FILE, lambda t: {**t, "projector.fc9.weight": torch.zeros(4, 4)})
    with pytest.raises(KeyMismatchError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert "'projector.fc9.weight'" in msg and "1 unexpected" in msg and SINGLE_FILE in msg


@pytest.mark.parametrize("loader", LOADERS)
def test_shape_mismatch_in_file(loader, ckpt_copy):
    ckpt = ckpt_copy()
    key = "projector.fc1.weight"
    with safe_open(str(ckpt / SINGLE_FILE), framework="pt") as f:
        shape = list(f.get_slice(key).get_shape())
    rewrite_tensors(ckpt / SINGLE_FILE, lambda t: {**t, key: t[key][:-1].clone()})
    with pytest.raises(ShapeMismatchError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert str(ckpt / SINGLE_FILE) in msg and repr(key) in msg
    assert str([shape[0] - 1, shape[1]]) in msg and str(shape) in msg


@pytest.mark.parametrize("loader", LOADERS)
@pytest.mark.parametrize(
    "field, value, key, stored, implied",
    [
        ("hidden_size", 32, "projector.fc2.weight", [64, 256], [32, 256]),
        ("intermediate_size", 96, "language_model.model.layers.0.mlp.gate_proj.weight", [128, 64], [96, 64]),
    ],
)
def test_shape_mismatch_from_config(loader, ckpt_copy, field, value, key, stored, implied):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", lambda cfg: cfg["text_config"].update({field: value}))
    with pytest.raises(ShapeMismatchError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert str(ckpt / SINGLE_FILE) in msg and repr(key) in msg
    assert f"has shape {stored}" in msg and f"implies {implied}" in msg


# --------------------------------------------------------------------------- tokenizer


@pytest.mark.parametrize("loader", LOADERS)
def test_no_tokenizer(loader, ckpt_copy):
    ckpt = ckpt_copy()
    (ckpt / "tokenizer.json").unlink()
    with pytest.raises(TokenizerNotFoundError) as exc:
        loader(ckpt)
    assert isinstance(exc.value, FileNotFoundError)
    assert str(ckpt) in str(exc.value) and "tokenizer.json" in str(exc.value)
    # (tokenizer.model alone is enough: tests/runtime/test_tokenizer.py loads such a checkpoint)


# --------------------------------------------------------------------------- norm_stats


@pytest.mark.parametrize("loader", LOADERS)
def test_missing_norm_stats(loader, ckpt_copy):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", lambda cfg: cfg.pop("norm_stats"))
    (ckpt / "dataset_statistics.json").unlink()
    with pytest.raises(NormStatsError) as exc:
        loader(ckpt)
    msg = str(exc.value)
    assert str(ckpt / "config.json") in msg and "norm_stats" in msg and "dataset_statistics.json" in msg


def test_missing_norm_stats_allowed_when_not_required(ckpt_copy):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", lambda cfg: cfg.update(norm_stats=None))
    (ckpt / "dataset_statistics.json").unlink()
    _, info = load_model(ckpt, require_norm_stats=False)
    assert not info.config.norm_stats


def test_norm_stats_only_in_dataset_statistics(ckpt_copy, tiny_ckpt):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", lambda cfg: cfg.pop("norm_stats"))
    expected = json.loads((tiny_ckpt / "dataset_statistics.json").read_text())
    _, info = load_model(ckpt)
    assert info.config.norm_stats == expected
    with load_policy(ckpt) as policy:
        assert policy.norm_stats == expected
        action = policy.predict_action(np.zeros((224, 224, 3), np.uint8), "pick up the block")
    assert action.shape == (7,) and action.dtype == np.float32


def _two_datasets(stats: dict) -> None:
    stats["bridge_orig"] = json.loads(json.dumps(stats[DATASET]))
    stats["fractal20220817_data"] = stats.pop(DATASET)


def test_ambiguous_unnorm_key_lists_both(ckpt_copy):
    ckpt = ckpt_copy()
    set_norm_stats(ckpt, _two_datasets)
    image = np.zeros((224, 224, 3), np.uint8)
    with load_policy(ckpt) as policy:
        with pytest.raises(UnnormKeyError) as exc:
            policy.predict_action(image, "pick up the block")
        assert isinstance(exc.value, KeyError)
        msg = str(exc.value)
        assert "unnorm_key" in msg and "'bridge_orig'" in msg and "'fractal20220817_data'" in msg
        assert policy.predict_action(image, "pick up the block", unnorm_key="bridge_orig").shape == (7,)


def test_unknown_unnorm_key_lists_valid_keys(ckpt_copy):
    ckpt = ckpt_copy()
    set_norm_stats(ckpt, _two_datasets)
    with load_policy(ckpt) as policy:
        with pytest.raises(UnnormKeyError) as exc:
            policy.predict_action(np.zeros((64, 64, 3), np.uint8), "open the drawer", unnorm_key="bridge")
    msg = str(exc.value)
    assert "'bridge'" in msg and "'bridge_orig'" in msg and "'fractal20220817_data'" in msg


def _action(stats: dict, key: str = DATASET) -> dict:
    return stats[key]["action"]


MALFORMED_STATS = {
    "q99_below_q01": (lambda s: _action(s)["q99"].__setitem__(2, _action(s)["q01"][2] - 1.0), "q99 < q01 on dimensions [2]"),
    "nan_q01": (lambda s: _action(s)["q01"].__setitem__(0, math.nan), "NaN"),
    "inf_q99": (lambda s: _action(s)["q99"].__setitem__(6, math.inf), "Inf"),
    "short_q99": (lambda s: _action(s)["q99"].pop(), "equal-length"),
    "long_mask": (lambda s: _action(s)["mask"].append(True), "equal-length"),
    "empty": (lambda s: _action(s).update(q01=[], q99=[], mask=[]), "non-empty"),
    "no_q99": (lambda s: _action(s).pop("q99"), "'q99'"),
    "no_action": (lambda s: s[DATASET].pop("action"), "'action'"),
}


@pytest.mark.parametrize("name", sorted(MALFORMED_STATS))
def test_malformed_norm_stats_rejected_at_load(ckpt_copy, name):
    edit, expected = MALFORMED_STATS[name]
    ckpt = ckpt_copy()
    set_norm_stats(ckpt, edit)
    with pytest.raises(NormStatsError) as exc:
        load_policy(ckpt)
    assert f"norm_stats[{DATASET!r}]" in str(exc.value) and expected in str(exc.value)


def test_malformed_second_dataset_rejected_at_load(ckpt_copy):
    """Every dataset is validated at load, not only the one the first control step uses."""
    ckpt = ckpt_copy()

    def edit(stats: dict) -> None:
        stats["other"] = json.loads(json.dumps(stats[DATASET]))
        stats["other"]["action"]["q99"][0] = -5.0

    set_norm_stats(ckpt, edit)
    with pytest.raises(NormStatsError, match=r"norm_stats\['other'\].*q99 < q01 on dimensions \[0\]"):
        load_policy(ckpt)


@pytest.mark.parametrize(
    "edit",
    [
        lambda cfg: _action(cfg["norm_stats"])["q01"].__setitem__(0, "low"),
        lambda cfg: cfg.update(norm_stats="tiny_demo"),
    ],
    ids=["string_q01", "norm_stats_str"],
)
def test_malformed_norm_stats_types_rejected_at_load(ckpt_copy, edit):
    ckpt = ckpt_copy()
    edit_json(ckpt / "config.json", edit)
    with pytest.raises(NormStatsError, match="norm_stats"):
        load_policy(ckpt)


# --------------------------------------------------------------------------- what loading preserves


def test_old_timm_layerscale_spelling_loads_identically(ckpt_copy, reference_logits):
    ckpt = ckpt_copy()

    def rename(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return {k.replace(".ls1.scale_factor", ".ls1.gamma").replace(".ls2.scale_factor", ".ls2.gamma"): v
                for k, v in tensors.items()}

    rewrite_tensors(ckpt / SINGLE_FILE, rename)
    model, info = load_model(ckpt)
    stored = set(info.tensors)
    assert any(k.endswith(".ls1.gamma") for k in stored) and any(k.endswith(".ls2.gamma") for k in stored)
    assert not any("scale_factor" in k for k in stored)
    assert torch.equal(logits_of(model), reference_logits)


def test_sharded_round_trip(tiny_ckpt, tmp_path, reference_logits):
    model, _ = load_model(tiny_ckpt)
    out = save_checkpoint(model, tmp_path / "sharded", tiny_ckpt, max_shard_bytes=SHARD_BYTES)
    shards = sorted(p.name for p in out.glob("model-*.safetensors"))
    assert len(shards) > 1 and not (out / SINGLE_FILE).exists()
    assert shards == [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)]

    index = json.loads((out / INDEX_FILE).read_text())
    assert set(index) == {"metadata", "weight_map"}
    assert set(index["weight_map"]) == set(model.state_dict())
    assert sorted(set(index["weight_map"].values())) == shards
    total = 0
    for shard in shards:
        tensors = load_file(str(out / shard))
        assert {k for k, f in index["weight_map"].items() if f == shard} == set(tensors)
        size = sum(t.numel() * t.element_size() for t in tensors.values())
        assert size <= SHARD_BYTES or len(tensors) == 1  # only a single oversized tensor may exceed the limit
        total += size
    assert index["metadata"]["total_size"] == total

    reloaded, info = load_model(out)
    assert info.files == shards
    assert torch.equal(logits_of(reloaded), reference_logits)
    for key, value in model.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json", "preprocessor_config.json"):
        assert (out / name).is_file()


def test_save_refuses_to_overwrite_non_empty_dir(ckpt_factory, ckpt_copy, tiny_ckpt):
    existing = ckpt_copy()
    before = snapshot(existing)
    other, _ = load_model(ckpt_factory("tiny", seed=1))
    with pytest.raises(CheckpointError) as exc:
        save_checkpoint(other, existing, tiny_ckpt)
    assert str(existing) in str(exc.value) and "overwrite" in str(exc.value)
    assert snapshot(existing) == before
    assert sorted(p.name for p in existing.parent.iterdir()) == [existing.name]  # no temp dir left behind

    save_checkpoint(other, existing, tiny_ckpt, overwrite=True)
    assert snapshot(existing) != before
    reloaded, _ = load_model(existing)
    for key, value in other.state_dict().items():
        assert torch.equal(reloaded.state_dict()[key], value), key
    assert sorted(p.name for p in existing.parent.iterdir()) == [existing.name]


def test_save_into_empty_existing_dir(tiny_ckpt, tmp_path):
    model, _ = load_model(tiny_ckpt)
    (tmp_path / "empty").mkdir()
    out = save_checkpoint(model, tmp_path / "empty", tiny_ckpt)
    assert (out / SINGLE_FILE).is_file()


@pytest.mark.parametrize(
    "stored, requested, torch_dtype, stored_tag",
    [
        ("bfloat16", "float32", torch.float32, "BF16"),
        ("float32", "bfloat16", torch.bfloat16, "F32"),
    ],
)
def test_dtype_conversion_on_load(ckpt_factory, stored, requested, torch_dtype, stored_tag):
    ckpt = ckpt_factory("tiny", dtype=stored)
    assert json.loads((ckpt / "config.json").read_text())["torch_dtype"] == stored
    model, info = load_model(ckpt, dtype=requested)
    assert {t.dtype for t in info.tensors.values()} == {stored_tag}
    assert model.dtype == torch_dtype
    raw = load_file(str(ckpt / SINGLE_FILE))
    state = model.state_dict()
    for key, value in state.items():
        if value.is_floating_point():
            assert value.dtype == torch_dtype, key
            assert torch.equal(value, raw[key].to(torch_dtype)), key
    logits = logits_of(model)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_load_policy_dtype(tiny_ckpt):
    with load_policy(tiny_ckpt, dtype="bfloat16") as policy:
        assert policy.backend.model.dtype == torch.bfloat16
        assert policy.predict_action(np.zeros((224, 224, 3), np.uint8), "pick up the block").dtype == np.float32

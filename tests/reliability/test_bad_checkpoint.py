"""Malformed weight files give a CheckpointError naming the file; NaN/Inf weights never reach an action.

Forged safetensors headers are generated from the real header of the tiny checkpoint: each case
changes one thing the format promises (header length, JSON, entry layout, dtype, shape against byte
length, offsets in range, no overlap, no gap, nothing left over). Reading is torch-free
(``read_checkpoint``, what `rlrc-export inspect` and every loader call first); one case per class
also goes through the CLIs (exit 2, no traceback). Truncated single files, missing shards and
``pytorch_model.bin`` are covered in tests/export/test_checkpoint_errors.py.
"""
from __future__ import annotations

import json
import pickle
import struct
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from export.cli import main as export_main
from export.checkpoint import load_model
from rlrc_runtime import load_policy
from rlrc_runtime.checkpoint import INDEX_FILE, SINGLE_FILE, read_checkpoint
from rlrc_runtime.cli import main as predict_main
from rlrc_runtime.errors import CheckpointError, NonFiniteOutputError

IMAGE = np.zeros((64, 64, 3), np.uint8)


def split(path: Path) -> tuple[dict[str, Any], bytes]:
    """(header with __metadata__, data bytes) of a safetensors file."""
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def write(path: Path, header: Any, data: bytes, length: int | None = None) -> None:
    """A safetensors file from a header (JSON-able, or raw bytes) and data; ``length`` forges the length field."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)


def by_offset(header: dict[str, Any]) -> list[str]:
    return sorted((k for k in header if k != "__metadata__"), key=lambda k: header[k]["data_offsets"][0])


def _edit(fn: Callable[[dict[str, Any], list[str]], None]) -> Callable[[dict, bytes], tuple[Any, bytes]]:
    def forge(header: dict[str, Any], data: bytes) -> tuple[Any, bytes]:
        fn(header, by_offset(header))
        return header, data
    return forge


def _dtype(h, keys):
    h[keys[0]]["dtype"] = "F33"


def _shape(h, keys):
    h[keys[0]]["shape"] = [*h[keys[0]]["shape"][:-1], h[keys[0]]["shape"][-1] + 1]


def _overlap(h, keys):  # the second tensor starts 4 bytes inside the first, same length
    b, e = h[keys[1]]["data_offsets"]
    h[keys[1]]["data_offsets"] = [b - 4, e - 4]


def _gap(h, keys):  # the last tensor moves 4 bytes later: a hole before it, its end past the data
    b, e = h[keys[-1]]["data_offsets"]
    h[keys[-1]]["data_offsets"] = [b + 4, e + 4]


def _past_end(h, keys):
    b, e = h[keys[-1]]["data_offsets"]
    h[keys[-1]]["data_offsets"] = [b, e + 10**12]
    h[keys[-1]]["shape"] = [(e + 10**12 - b) // 4]


FORGED: dict[str, tuple[Callable[[dict, bytes], tuple[Any, bytes]], dict[str, Any], str]] = {
    # name: (forge(header, data) -> (header, data), write() keyword args, text the message must hold)
    "length_past_end": (lambda h, d: (h, d), {"length": 10**6 * 50}, "only"),
    "length_implausible": (lambda h, d: (h, d), {"length": 2**63}, "implausible"),
    "invalid_json": (lambda h, d: (b"{" + json.dumps(h).encode()[2:], d), {}, "not valid JSON"),
    "not_utf8": (lambda h, d: (b"\xff" * 64, d), {}, "not valid JSON"),
    "header_is_a_list": (lambda h, d: ([h], d), {}, "not an object"),
    "entry_not_an_object": (_edit(lambda h, k: h.__setitem__(k[0], [1, 2])), {}, "must be an object"),
    "entry_without_offsets": (_edit(lambda h, k: h[k[0]].pop("data_offsets")), {}, "data_offsets"),
    "unknown_dtype": (_edit(_dtype), {}, "'F33'"),
    "shape_not_byte_length": (_edit(_shape), {}, "needs"),
    "negative_dim": (_edit(lambda h, k: h[k[0]].__setitem__("shape", [-1])), {}, "integers >= 0"),
    "string_dim": (_edit(lambda h, k: h[k[0]].__setitem__("shape", ["4"])), {}, "integers >= 0"),
    "offsets_reversed": (_edit(lambda h, k: h[k[0]].__setitem__("data_offsets", h[k[0]]["data_offsets"][::-1])),
                         {}, "begin <= end"),
    "offsets_overlap": (_edit(_overlap), {}, "overlaps"),
    "offsets_gap": (_edit(_gap), {}, "belong to no tensor"),
    "offsets_past_end": (_edit(_past_end), {}, "truncated"),
    "trailing_bytes": (lambda h, d: (h, d + b"\0" * 16), {}, "after the last tensor"),
    "repeated_key": (lambda h, d: (json.dumps(h).encode()[:-1] + b', "' + by_offset(h)[0].encode() + b'": '
                                   + json.dumps(h[by_offset(h)[0]]).encode() + b"}", d), {}, "twice"),
    "metadata_not_strings": (_edit(lambda h, k: h.__setitem__("__metadata__", {"format": 1})), {}, "__metadata__"),
}


@pytest.fixture
def forged(ckpt_copy) -> Callable[[str], Path]:
    """forged(name) -> a checkpoint copy whose model.safetensors carries the FORGED[name] header."""
    def make(name: str) -> Path:
        ckpt = ckpt_copy()
        forge, kwargs, _ = FORGED[name]
        header, data = forge(*split(ckpt / SINGLE_FILE))
        write(ckpt / SINGLE_FILE, header, data, **kwargs)
        return ckpt
    return make


def test_the_unforged_round_trip_is_readable(ckpt_copy):
    ckpt = ckpt_copy()
    write(ckpt / SINGLE_FILE, *split(ckpt / SINGLE_FILE))
    read_checkpoint(ckpt)


@pytest.mark.parametrize("name", sorted(FORGED))
def test_forged_header_is_named(forged, name):
    ckpt = forged(name)
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(ckpt)
    msg = str(exc.value)
    assert str(ckpt / SINGLE_FILE) in msg and FORGED[name][2] in msg, msg


@pytest.mark.parametrize("name", ["offsets_overlap", "unknown_dtype", "header_is_a_list"])
def test_forged_header_exits_2(forged, capsys, name):
    ckpt = forged(name)
    assert export_main(["inspect", str(ckpt)]) == 2
    assert predict_main(["--policy", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count(str(ckpt / SINGLE_FILE)) == 2, err


# --------------------------------------------------------------------------- shards and index


@pytest.fixture
def sharded(ckpt_factory, ckpt_copy) -> Path:
    return ckpt_copy(ckpt_factory("tiny", max_shard_bytes=2_000_000))


def test_truncated_shard_of_many(sharded):
    shards = sorted(set(json.loads((sharded / INDEX_FILE).read_text())["weight_map"].values()))
    shard = sharded / shards[1]
    shard.write_bytes(shard.read_bytes()[:-100])
    with pytest.raises(CheckpointError, match="truncated") as exc:
        read_checkpoint(sharded)
    assert str(shard) in str(exc.value)


@pytest.mark.parametrize("target", ["../outside.safetensors", "/etc/passwd", 7])
def test_index_pointing_outside_the_checkpoint(sharded, target):
    index = json.loads((sharded / INDEX_FILE).read_text())
    key = next(iter(index["weight_map"]))
    index["weight_map"][key] = target
    (sharded / INDEX_FILE).write_text(json.dumps(index))
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(sharded)
    assert str(sharded / INDEX_FILE) in str(exc.value) and repr(key) in str(exc.value)


def test_index_that_is_a_list(sharded):
    (sharded / INDEX_FILE).write_text("[]")
    with pytest.raises(CheckpointError, match="weight_map"):
        read_checkpoint(sharded)


# --------------------------------------------------------------------------- pickles


class _Trap:
    """Unpickling this creates ``marker``: proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.mark.parametrize("form", ["torch_zip", "torch_legacy", "plain_pickle"])
def test_pickle_named_safetensors_is_refused_unopened(ckpt_copy, tmp_path, form):
    ckpt = ckpt_copy()
    marker = tmp_path / "code-ran"
    payload = {"projector.fc1.bias": torch.zeros(256), "trap": _Trap(marker)}
    if form == "plain_pickle":
        (ckpt / SINGLE_FILE).write_bytes(pickle.dumps(payload, protocol=4))
    else:
        torch.save(payload, ckpt / SINGLE_FILE, _use_new_zipfile_serialization=form == "torch_zip")
    for load in (read_checkpoint, load_model, load_policy):
        with pytest.raises(CheckpointError) as exc:
            load(ckpt)
        assert str(ckpt / SINGLE_FILE) in str(exc.value) and "is a PyTorch pickle" in str(exc.value)
    assert not marker.exists()


# --------------------------------------------------------------------------- NaN / Inf weights


def poison(ckpt: Path, key: str, value: float, whole: bool = False) -> None:
    """Overwrite one element (or all) of stored tensor ``key`` with ``value``, in the real safetensors file."""
    tensors = load_file(str(ckpt / SINGLE_FILE))
    t = tensors[key].clone()
    if whole:
        t.fill_(value)
    else:
        t.view(-1)[0] = value
    tensors[key] = t
    tmp = ckpt / "poisoned.tmp"  # the loaded tensors map the old file: write beside it, then replace it
    save_file(tensors, str(tmp), metadata={"format": "pt"})
    tmp.replace(ckpt / SINGLE_FILE)


POISONS = {
    "nan_lm_head_element": ("language_model.lm_head.weight", float("nan"), False),
    "inf_lm_head_element": ("language_model.lm_head.weight", float("inf"), False),
    "nan_decoder_mlp": ("language_model.model.layers.1.mlp.down_proj.weight", float("nan"), True),
    "nan_vision_tower": ("vision_backbone.featurizer.blocks.0.mlp.fc1.weight", float("nan"), True),
}


@pytest.mark.parametrize("decoding", ["autoregressive", "parallel"])
@pytest.mark.parametrize("name", sorted(POISONS))
def test_non_finite_logits_raise_instead_of_an_action(ckpt_copy, name, decoding):
    """Before: argmax over NaN logits picked token 0 and the policy returned a full-scale action."""
    ckpt = ckpt_copy()
    poison(ckpt, *POISONS[name])
    if decoding == "parallel":
        cfg = json.loads((ckpt / "config.json").read_text())
        cfg["rlrc_decoding"] = "parallel"
        (ckpt / "config.json").write_text(json.dumps(cfg))
    with load_policy(ckpt) as policy:
        with pytest.raises(NonFiniteOutputError, match="NaN or Inf") as exc:
            policy.predict_action(IMAGE, "pick up the red block")
    assert ("greedy decoding" if decoding == "autoregressive" else "parallel decoding") in str(exc.value)


def test_a_late_nan_token_is_caught(tiny_ckpt):
    """A non-finite logit at the last generated token only (earlier tokens finite) still raises."""
    model, _ = load_model(tiny_ckpt)
    head = model.language_model.lm_head
    calls = {"n": 0}

    def nan_on_seventh(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 7:
            output = output.clone()
            output[..., 5] = float("nan")
        return output

    head.register_forward_hook(nan_on_seventh)
    ids = torch.tensor([[1, 512, 1033, 2077, 13, 666, 29871]])
    with torch.inference_mode(), pytest.raises(NonFiniteOutputError, match="token 7 of 7"):
        model.generate(model.embed_image(torch.zeros(1, 6, 224, 224)), ids, 7)


def test_finite_weights_still_decode(tiny_ckpt):
    with load_policy(tiny_ckpt) as policy:
        assert np.isfinite(policy.predict_action(IMAGE, "pick up the red block")).all()


def test_nan_checkpoint_exits_2(ckpt_copy, capsys):
    ckpt = ckpt_copy()
    poison(ckpt, *POISONS["nan_lm_head_element"])
    assert predict_main(["--policy", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlrc-predict: error: ") and "NaN or Inf" in err and "Traceback" not in err



# --------------------------------------------------------------------------- the other JSON files


def test_dataset_statistics_that_is_not_an_object(ckpt_copy):
    ckpt = ckpt_copy()
    cfg = json.loads((ckpt / "config.json").read_text())
    del cfg["norm_stats"]
    (ckpt / "config.json").write_text(json.dumps(cfg))
    (ckpt / "dataset_statistics.json").write_text("[1, 2]")
    with pytest.raises(CheckpointError) as exc:
        read_checkpoint(ckpt)
    assert str(ckpt / "dataset_statistics.json") in str(exc.value)


@pytest.mark.parametrize("edit", [
    lambda p: p.update(tvf_normalize_params=["mean", "std"]),
    lambda p: p["tvf_normalize_params"][0].update(mean=["a", 0.5, 0.5]),
    lambda p: p["tvf_normalize_params"][1].update(std=[0.5, 0.0, 0.5]),
    lambda p: p.update(tvf_normalize_params={"mean": [0.5] * 3}),
], ids=["entries_not_objects", "mean_not_numbers", "std_zero", "object_for_list"])
def test_malformed_preprocessor_config(ckpt_copy, edit):
    ckpt = ckpt_copy()
    pp = json.loads((ckpt / "preprocessor_config.json").read_text())
    edit(pp)
    (ckpt / "preprocessor_config.json").write_text(json.dumps(pp))
    with pytest.raises(CheckpointError) as exc:
        load_policy(ckpt)
    assert str(ckpt / "preprocessor_config.json") in str(exc.value) and "tvf_normalize_params" in str(exc.value)

"""manifest.json: schema round trip, checksum tamper detection, engine compatibility checks."""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import rlrc_runtime as r
from rlrc_runtime.errors import MissingFileError
from rlrc_runtime.manifest import (
    MANIFEST_FILE, MANIFEST_HASH_FILE, BundleError, ChecksumError, EngineMismatchError, EngineSpec, Manifest, check_engine,
    read_manifest, sha256_file,
)


def test_every_file_is_hashed_and_the_schema_round_trips(tiny_bundle):
    m = read_manifest(tiny_bundle)
    files = {p.relative_to(tiny_bundle).as_posix() for p in tiny_bundle.rglob("*") if p.is_file()} - {MANIFEST_FILE, MANIFEST_HASH_FILE}
    assert set(m.files) == files
    assert {"tokenizer.json", "vision.onnx", "prefill.onnx", "decode.onnx", "llm.onnx.data", "embed_tokens.npy"} <= files
    assert all(m.files[f] == sha256_file(tiny_bundle / f) for f in files)
    raw = json.loads((tiny_bundle / MANIFEST_FILE).read_text())
    assert Manifest.from_dict(raw) == m
    assert raw["format_version"] == 1 and raw["norm_stats"]["tiny_demo"]["action"]["q01"][0] == -0.03
    assert raw["prompt"]["append_token_id"] == 29871 and raw["action"]["first_token"] == 31744
    assert raw["model_config"]["text_config"]["num_key_value_heads"] == 2
    assert {"torch", "onnx", "onnxruntime"} <= set(raw["versions"])
    assert raw["graphs"]["decode"]["inputs"][1] == {"name": "position", "shape": [1], "dtype": "int64"}


def test_tampered_file_is_detected_and_named(bundle_copy):
    data = bundle_copy / "llm.onnx.data"
    blob = bytearray(data.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    data.write_bytes(bytes(blob))
    with pytest.raises(ChecksumError, match=r"llm\.onnx\.data.*sha256.*rebuild it with: rlrc-export onnx"):
        r.load_policy(bundle_copy)
    with pytest.raises(ChecksumError):
        read_manifest(bundle_copy)
    read_manifest(bundle_copy, verify=False)  # the schema itself is fine


def test_missing_file_and_malformed_manifest(bundle_copy):
    (bundle_copy / "embed_tokens.npy").unlink()
    with pytest.raises(MissingFileError, match="embed_tokens.npy is missing"):
        read_manifest(bundle_copy)
    raw = json.loads((bundle_copy / MANIFEST_FILE).read_text())
    del raw["llm"]
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="malformed"):
        read_manifest(bundle_copy, verify=False)
    raw["format_version"] = 99
    (bundle_copy / MANIFEST_FILE).write_text(json.dumps(raw))
    with pytest.raises(BundleError, match="format_version=99"):
        read_manifest(bundle_copy, verify=False)


def test_bundle_policy_reads_every_fact_from_the_manifest(tiny_bundle, tiny_ckpt):
    with r.load_policy(tiny_bundle) as p:  # backend 'auto' -> onnxruntime for a bundle without engines
        assert p.backend.name == "onnxruntime"
        ref = r.load_policy(tiny_ckpt)
        assert p.image_transform == ref.image_transform and p.norm_stats == ref.norm_stats
        img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
        assert p.infer(img, "pick up the cup").action_tokens.tolist() == ref.infer(img, "pick up the cup").action_tokens.tolist()


ENGINE = EngineSpec(file="engines/decode.plan", graph="decode", tensorrt_version="10.3.0", compute_capability="8.7",
                    device_name="Orin", precision="fp16")


def test_wrong_tensorrt_version_or_gpu_is_rejected():
    check_engine(ENGINE, "10.3.0", "8.7")
    with pytest.raises(EngineMismatchError, match=r"TensorRT 10\.3\.0.*TensorRT 10\.9\.0.*rlrc-export engine --bundle B"):
        check_engine(ENGINE, "10.9.0", "8.7", bundle="B")
    with pytest.raises(EngineMismatchError, match=r"compute capability 8\.7 \(Orin\).*has 9\.0"):
        check_engine(ENGINE, "10.3.0", "9.0")


def test_engine_metadata_round_trips_and_mismatch_fails_at_load(bundle_copy):
    """A manifest claiming engines built elsewhere: the TensorRT backend refuses before touching a GPU."""
    m = read_manifest(bundle_copy)
    engines = {g: dataclasses.replace(ENGINE, file=f"engines/{g}.plan", graph=g) for g in ("vision", "prefill", "decode")}
    engines["decode"] = dataclasses.replace(engines["decode"], tensorrt_version="0.0-not-here")
    m2 = dataclasses.replace(m, engines=engines)
    raw = m2.to_dict()
    assert Manifest.from_dict(raw).engines["decode"] == m2.engines["decode"]
    from rlrc_runtime.backends.tensorrt import check_engines

    with pytest.raises(EngineMismatchError, match="0.0-not-here"):
        check_engines(bundle_copy, m2, tensorrt_version="10.3.0", compute_capability="8.7")
    check_engines(bundle_copy, dataclasses.replace(m2, engines={**engines, "decode": ENGINE}), "10.3.0", "8.7")
    with pytest.raises(r.BackendError, match="no TensorRT engine for"):
        check_engines(bundle_copy, m, "10.3.0", "8.7")

"""Shared fixtures: tiny OpenVLA-format checkpoints built once per test session."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("MUJOCO_GL", "egl")


@pytest.fixture(scope="session")
def ckpt_factory(tmp_path_factory: pytest.TempPathFactory):
    """make(preset='tiny', seed=0, dtype='float32') -> path of a checkpoint, cached per arguments."""
    from export.tiny import make_tiny

    cache: dict[tuple, Path] = {}

    def make(preset: str = "tiny", seed: int = 0, dtype: str = "float32", **kwargs) -> Path:
        key = (preset, seed, dtype, tuple(sorted(kwargs.items())))
        if key not in cache:
            out = tmp_path_factory.mktemp(f"ckpt-{preset}") / "ckpt"
            cache[key] = make_tiny(out, preset=preset, seed=seed, dtype=dtype, **kwargs)
        return cache[key]

    return make


@pytest.fixture(scope="session")
def tiny_ckpt(ckpt_factory) -> Path:
    """The default 'tiny' preset (fused towers, 224 px, GQA Llama)."""
    return ckpt_factory("tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tiny_ckpt, tmp_path_factory) -> Path:
    """The tiny checkpoint as an fp32 ONNX bundle, exported once per session. Read-only: a test that
    changes a bundle takes ``bundle_copy``."""
    from export.onnx_export import OnnxExportConfig, export_onnx

    return export_onnx(tiny_ckpt, tmp_path_factory.mktemp("tiny-bundle") / "b",
                       OnnxExportConfig(exporter="torchscript", check=False))


@pytest.fixture
def bundle_copy(tiny_bundle: Path, tmp_path: Path) -> Path:
    """A private copy of ``tiny_bundle`` that a test may change."""
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(tiny_bundle, dst)
    return dst


@pytest.fixture
def ckpt_copy(tmp_path: Path, tiny_ckpt: Path):
    """A private copy of the tiny checkpoint that a test may damage."""
    import shutil

    def copy(src: Path | None = None) -> Path:
        dst = tmp_path / "copy"
        shutil.copytree(src or tiny_ckpt, dst)
        return dst

    return copy


@pytest.fixture(scope="session")
def transforms(tmp_path_factory):
    """Transforms of the tiny-128 preset with a generated tokenizer (the trainers' and recipes' tests)."""
    from export.tiny import PRESETS, preset_config
    from export.tokenizer_gen import write_tokenizer
    from rlrc_runtime.transforms import Transforms

    d = tmp_path_factory.mktemp("tok")
    write_tokenizer(d)
    return Transforms.for_new_model(preset_config(PRESETS["tiny-128"], norm_stats={}), d)

"""Small OpenVLA-format checkpoints built here: real file format, small dims, random weights.

No pretrained weights can be downloaded on these machines, so tests, the demo and the benchmarks
run on checkpoints this module writes. Each preset is the real layout (config.json in the HF
OpenVLA form, safetensors, a tokenizer with the 32000-id Llama layout, norm_stats for one dataset)
and differs from OpenVLA-7B only in its dimensions.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from export.checkpoint import resolve_dtype, save_checkpoint
from export.model import OpenVLA, init_weights
from export.tokenizer_gen import write_tokenizer
from rlrc_runtime.config import VISION_BACKBONES, LLMConfig, VLAConfig, did_you_mean, tower_from_timm_id
from rlrc_runtime.errors import ConfigError

DEMO_DATASET = "tiny_demo"


@dataclass(frozen=True)
class TinyPreset:
    """Dimensions of a generated checkpoint."""

    description: str
    """One line for --help and `rlrc-export make-tiny --list`."""
    vision_backbone_id: str = "dinosiglip-vit-so-224px"
    """Prismatic backbone id (fused DINOv2 + SigLIP by default)."""
    image_size: int = 224
    """Square input size."""
    tower: dict[str, Any] | None = None
    """Tower dim overrides (embed_dim, depth, num_heads, mlp_dim, patch_size, num_registers); None = real size."""
    hidden_size: int = 64
    """LLM width."""
    head_dim: int = 16
    """Attention head width."""
    num_attention_heads: tuple[int, ...] = (4, 4, 4, 4)
    """Query heads per layer (the tuple length is the layer count)."""
    num_key_value_heads: tuple[int, ...] = (2, 2, 2, 2)
    """Key/value heads per layer."""
    intermediate_size: tuple[int, ...] = (128, 128, 128, 128)
    """MLP width per layer."""


SMALL_TOWER = {"embed_dim": 32, "depth": 3, "num_heads": 2, "mlp_dim": 64}

# The base policy's model, apart from its image size.
BASE_DIMS: dict[str, Any] = dict(
    tower={"embed_dim": 64, "depth": 4, "num_heads": 4, "mlp_dim": 128, "patch_size": 16},
    hidden_size=128, head_dim=32, num_attention_heads=(4, 4, 4, 4), num_key_value_heads=(2, 2, 2, 2),
    intermediate_size=(344, 344, 344, 344),
)

PRESETS: dict[str, TinyPreset] = {
    "tiny": TinyPreset("fused DINOv2+SigLIP at 224 px / patch 14 (256 patches), 4-layer GQA Llama, ~4.4 M params",
                       tower=SMALL_TOWER),
    "tiny-hetero": TinyPreset(
        "as 'tiny' with different head counts and MLP widths per layer (a pruned model's shape)",
        tower=SMALL_TOWER,
        num_attention_heads=(4, 2, 2, 4),
        num_key_value_heads=(2, 1, 2, 2),
        intermediate_size=(128, 48, 96, 128),
    ),
    "tiny-128": TinyPreset("fused towers at 128 px / patch 16 (64 patches per tower), for CPU training",
                           image_size=128, tower={**SMALL_TOWER, "patch_size": 16}),
    "tiny-dinov2": TinyPreset("single DINOv2 tower ('dinov2-vit-l'), 2-layer projector",
                              vision_backbone_id="dinov2-vit-l", tower=SMALL_TOWER),
    "tiny-siglip": TinyPreset("single SigLIP tower ('siglip-vit-so400m'), 2-layer projector",
                              vision_backbone_id="siglip-vit-so400m", tower=SMALL_TOWER),
    "base-128": TinyPreset(
        "the built-in benchmark's base policy: fused towers (d=64, depth 4) at 128 px / patch 16, "
        "4-layer Llama (hidden 128, GQA), ~9 M params (8 M of them the 32064-row embeddings)",
        image_size=128, **BASE_DIMS,
    ),
    "base-96": TinyPreset(
        "as 'base-128' at 96 px / patch 16 (36 patches per tower instead of 64): fewer FLOPs per training "
        "sample on a CPU",
        image_size=96, **BASE_DIMS,
    ),
    "mid": TinyPreset(
        "~250 M params, OpenVLA proportions (LLM ~88 %: 12-layer Llama, hidden 1024, MLP 2816; small fused "
        "towers at 224 px / patch 14): CPU speed targets",
        tower={"embed_dim": 384, "depth": 6, "num_heads": 6, "mlp_dim": 1536},
        hidden_size=1024, head_dim=64, num_attention_heads=(16,) * 12, num_key_value_heads=(16,) * 12,
        intermediate_size=(2816,) * 12,
    ),
    "real-vision": TinyPreset(
        "real-size DINOv2 ViT-L + SigLIP so400m towers (~730 M params), 2-layer Llama: parity checks",
        hidden_size=256, head_dim=64, num_attention_heads=(4, 4), num_key_value_heads=(4, 4),
        intermediate_size=(512, 512),
    ),
}


def get_preset(name: str) -> TinyPreset:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}.{did_you_mean(name, sorted(PRESETS))}")
    return PRESETS[name]


def demo_norm_stats(action_dim: int = 7) -> dict[str, Any]:
    """Plausible end-effector-delta statistics for one dataset, OpenVLA's schema."""
    if action_dim != 7:
        raise ConfigError(f"demo norm_stats are for 7-D actions, got action_dim={action_dim}")
    q01 = [-0.03, -0.03, -0.03, -0.1, -0.1, -0.1, 0.0]
    q99 = [0.03, 0.03, 0.03, 0.1, 0.1, 0.1, 1.0]
    stats = {
        "mean": [0.0] * 6 + [0.5],
        "std": [0.01] * 3 + [0.03] * 3 + [0.5],
        "max": [0.05] * 3 + [0.2] * 3 + [1.0],
        "min": [-0.05] * 3 + [-0.2] * 3 + [0.0],
        "q01": q01,
        "q99": q99,
        "mask": [True] * 6 + [False],
    }
    proprio = {k: [0.0] * 7 for k in ("mean", "std", "max", "min", "q01", "q99")}
    return {DEMO_DATASET: {"action": stats, "proprio": proprio, "num_transitions": 0, "num_trajectories": 0}}


def preset_config(preset: TinyPreset, norm_stats: dict[str, Any] | None = None) -> VLAConfig:
    timm_ids = VISION_BACKBONES[preset.vision_backbone_id]
    towers = tuple(tower_from_timm_id(t, preset.image_size, preset.tower) for t in timm_ids)
    llm = LLMConfig(
        vocab_size=32064,
        hidden_size=preset.hidden_size,
        head_dim=preset.head_dim,
        num_attention_heads=preset.num_attention_heads,
        num_key_value_heads=preset.num_key_value_heads,
        intermediate_size=preset.intermediate_size,
        rms_norm_eps=1e-5,  # Llama-2's value, which OpenVLA's text_config lists explicitly
        max_position_embeddings=2048,
    )
    return VLAConfig(
        vision_backbone_id=preset.vision_backbone_id,
        towers=towers,
        llm=llm,
        arch_specifier="no-align+fused-gelu-mlp" if len(towers) == 2 else "no-align+gelu-mlp",
        norm_stats=norm_stats if norm_stats is not None else demo_norm_stats(),
    )


def make_tiny(
    out: str | Path,
    preset: str = "tiny",
    seed: int = 0,
    dtype: str = "float32",
    overwrite: bool = False,
    max_shard_bytes: int = 2 * 1024**3,
    action_chunk: int = 1,
    slot_embeddings: str = "zero",
) -> Path:
    """Build, randomly initialise and save a preset checkpoint; returns its directory.

    ``action_chunk`` K > 1 makes a parallel-decoding model (K actions per pass, OpenVLA-OFT style),
    with empty action slots or, ``slot_embeddings='learned'``, random learned ones.
    """
    config = preset_config(get_preset(preset))
    if action_chunk > 1:
        config = config.replace(action_chunk=action_chunk, decoding="parallel")
    model = OpenVLA(config)
    init_weights(model, seed=seed)
    if slot_embeddings == "learned":
        model.learn_slot_embeddings(seed=seed)
    model.to(resolve_dtype(dtype))
    with tempfile.TemporaryDirectory() as tok_dir:
        write_tokenizer(tok_dir, model_max_length=config.llm.max_position_embeddings)
        return save_checkpoint(model, out, tok_dir, overwrite=overwrite, max_shard_bytes=max_shard_bytes)


def parameter_summary(config: VLAConfig) -> dict[str, int]:
    """Parameter counts per part, computed on the meta device (no memory)."""
    with torch.device("meta"):
        model = OpenVLA(config)
    parts = {
        "vision": sum(p.numel() for p in model.vision_backbone.parameters()),
        "projector": sum(p.numel() for p in model.projector.parameters()),
        "llm": sum(p.numel() for p in model.language_model.parameters()),
    }
    parts["total"] = sum(parts.values())
    return parts

import json

import pytest

from export.tiny import PRESETS, parameter_summary, preset_config
from rlrc_runtime.config import LLMConfig, VLAConfig
from rlrc_runtime.errors import ConfigError, UnknownBackboneError

# openvla/openvla-7b's config.json as published (norm_stats shortened to one dataset): text_config
# lists only what differs from transformers 4.40's LlamaConfig defaults.
OPENVLA_7B = {
    "arch_specifier": "no-align+fused-gelu-mlp",
    "architectures": ["OpenVLAForActionPrediction"],
    "hf_llm_id": "meta-llama/Llama-2-7b-hf",
    "image_resize_strategy": "resize-naive",
    "image_sizes": [224, 224],
    "llm_backbone_id": "llama2-7b-pure",
    "llm_max_length": 2048,
    "model_type": "openvla",
    "n_action_bins": 256,
    "norm_stats": {"bridge_orig": {"action": {"q01": [0.0] * 7, "q99": [1.0] * 7, "mask": [True] * 6 + [False]}}},
    "output_projector_states": False,
    "pad_to_multiple_of": 64,
    "pad_token_id": 32000,
    "text_config": {"model_type": "llama", "pad_token_id": 32000, "torch_dtype": "bfloat16", "vocab_size": 32064},
    "timm_model_ids": ["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_224"],
    "timm_override_act_layers": [None, None],
    "torch_dtype": "bfloat16",
    "transformers_version": "4.40.1",
    "use_fused_vision_backbone": True,
    "vision_backbone_id": "dinosiglip-vit-so-224px",
}


def test_openvla_7b_config_dimensions():
    cfg = VLAConfig.from_hf_dict(OPENVLA_7B)
    dino, siglip = cfg.towers
    assert (dino.embed_dim, dino.depth, dino.num_heads, dino.mlp_dim, dino.num_prefix_tokens) == (1024, 24, 16, 4096, 5)
    assert (siglip.embed_dim, siglip.depth, siglip.mlp_dim, siglip.num_prefix_tokens) == (1152, 27, 4304, 0)
    assert dino.feature_block == 22 and siglip.feature_block == 25
    assert cfg.num_patches == 256 and cfg.vision_dim == 2176
    assert cfg.projector_dims == (2176, 8704, 4096, 4096)
    llm = cfg.llm
    # Missing text_config keys take LlamaConfig defaults (design.md §3), e.g. rms_norm_eps 1e-6.
    assert (llm.hidden_size, llm.num_layers, llm.head_dim, llm.rms_norm_eps, llm.rope_theta) == (4096, 32, 128, 1e-6, 10000.0)
    assert llm.num_key_value_heads == (32,) * 32 and llm.intermediate_size == (11008,) * 32
    assert llm.max_position_embeddings == 2048 and llm.vocab_size == 32064
    assert cfg.token_vocab_size == 32000
    counts = parameter_summary(cfg)
    assert counts["llm"] == llm.param_count() == 6_738_939_904
    assert 7.5e9 < counts["total"] < 7.6e9  # OpenVLA-7B: 7.54 B parameters


def test_round_trip_keeps_unknown_keys_and_dims():
    cfg = VLAConfig.from_hf_dict(OPENVLA_7B)
    again = VLAConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict())))
    assert again == cfg
    out = cfg.to_hf_dict()
    assert out["hf_llm_id"] == "meta-llama/Llama-2-7b-hf" and "rlrc_vision_towers" not in out
    assert "layer_num_attention_heads" not in out["text_config"]


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip(name):
    cfg = preset_config(PRESETS[name])
    assert VLAConfig.from_hf_dict(json.loads(json.dumps(cfg.to_hf_dict()))) == cfg


def test_heterogeneous_widths_are_recorded():
    cfg = preset_config(PRESETS["tiny-hetero"])
    tc = cfg.to_hf_dict()["text_config"]
    assert tc["layer_num_attention_heads"] == [4, 2, 2, 4]
    assert tc["layer_num_key_value_heads"] == [2, 1, 2, 2]
    assert tc["layer_intermediate_size"] == [128, 48, 96, 128]
    assert tc["head_dim"] == 16


def test_single_tower_projector():
    cfg = preset_config(PRESETS["tiny-dinov2"])
    assert not cfg.use_fused_vision_backbone and cfg.projector_dims == (32, 64, 64)


def test_other_image_and_patch_sizes():
    cfg = preset_config(PRESETS["tiny-128"])
    assert cfg.image_size == 128 and cfg.towers[0].patch_size == 16 and cfg.num_patches == 64
    assert cfg.to_hf_dict()["rlrc_vision_towers"][0]["patch_size"] == 16


@pytest.mark.parametrize(
    "change, error, match",
    [
        ({"vision_backbone_id": "dinosiglip-vit-so-224"}, UnknownBackboneError, "Did you mean 'dinosiglip-vit-so-224px'"),
        ({"vision_backbone_id": "clip-vit-l"}, UnknownBackboneError, "supported: \\["),
        ({"model_type": "llava"}, ConfigError, "model_type='llava'"),
        ({"use_fused_vision_backbone": False}, ConfigError, "contradicts"),
        ({"image_resize_strategy": "letterbox"}, ConfigError, "image_resize_strategy"),
        ({"text_config": {"rope_scaling": {"type": "linear", "factor": 2.0}}}, ConfigError, "rope_scaling"),
        ({"text_config": {"num_hidden_layers": 2, "layer_intermediate_size": [1, 2, 3]}}, ConfigError, "list of 2 ints"),
        ({"text_config": {"num_attention_heads": 32, "num_key_value_heads": 5}}, ConfigError, "multiple of kv heads"),
        ({"image_sizes": [224, 224, 224]}, ConfigError, "one entry per tower"),
        ({"rlrc_vision_towers": [{"depth": 1}, {}]}, ConfigError, "depth must be >= 2"),
        ({"rlrc_vision_towers": [{"bogus": 1}, {}]}, ConfigError, "unknown keys \\['bogus'\\]"),
    ],
)
def test_invalid_configs_name_the_field(change, error, match):
    with pytest.raises(error, match=match):
        VLAConfig.from_hf_dict({**OPENVLA_7B, **change})


def test_llm_per_layer_validation():
    with pytest.raises(ConfigError, match="differ in length"):
        LLMConfig(vocab_size=10, hidden_size=8, head_dim=4, num_attention_heads=(2, 2), num_key_value_heads=(2,), intermediate_size=(8, 8))
    # Both zero = attention removed from that layer (depth-wise pruning of one sub-block).
    LLMConfig(vocab_size=10, hidden_size=8, head_dim=4, num_attention_heads=(2, 0), num_key_value_heads=(1, 0), intermediate_size=(8, 0))

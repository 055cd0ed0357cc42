"""The model configuration: OpenVLA's ``config.json`` as frozen dataclasses.

Torch-free on purpose: the runtime, the bundle manifest and the export toolchain all read the same
facts from here. ``VLAConfig.from_hf_dict`` reads the exact HF OpenVLA layout (design.md §3);
``to_hf_dict`` writes it back, adding our extension keys only where a model departs from what the
timm ids and a uniform Llama imply (pruned layers, tiny towers, other image or patch sizes):

- ``text_config.layer_num_attention_heads`` / ``layer_num_key_value_heads`` /
  ``layer_intermediate_size``: per-layer widths after structured pruning;
- ``text_config.head_dim``: kept fixed by head pruning, so no longer ``hidden_size / heads``;
- ``rlrc_vision_towers``: per-tower dims when they differ from the timm model the id names.
- ``rlrc_action_chunk`` / ``rlrc_decoding``: actions per inference (K) and how their tokens are decoded:
  ``autoregressive`` (OpenVLA: one token per pass, K = 1) or ``parallel`` (OpenVLA-OFT: K x action_dim
  empty slots after the prompt, attending bidirectionally among themselves, decoded in one pass).
- ``rlrc_slot_embeddings``: what the parallel slots hold: ``zero`` (OFT's empty action embeddings) or
  ``learned`` (one trained vector per slot, the ``action_slots`` tensor [K x action_dim, hidden]).
"""
from __future__ import annotations

import copy
import dataclasses
import difflib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from rlrc_runtime.errors import ConfigError, NormStatsError, UnknownBackboneError

# Values actually applied by OpenVLA's image processor: the ImageNet statistics after a round trip
# through bf16 (they are stored that way in openvla-7b's preprocessor_config.json).
DINOV2_MEAN = (0.484375, 0.455078125, 0.40625)
DINOV2_STD = (0.228515625, 0.2236328125, 0.224609375)
SIGLIP_MEAN = (0.5, 0.5, 0.5)
SIGLIP_STD = (0.5, 0.5, 0.5)

DINOV2_TIMM_ID = "vit_large_patch14_reg4_dinov2.lvd142m"
SIGLIP_224_TIMM_ID = "vit_so400m_patch14_siglip_224"
SIGLIP_384_TIMM_ID = "vit_so400m_patch14_siglip_384"

# vision_backbone_id -> timm model ids of its towers, in the order of the 6 input channels.
VISION_BACKBONES: dict[str, tuple[str, ...]] = {
    "dinosiglip-vit-so-224px": (DINOV2_TIMM_ID, SIGLIP_224_TIMM_ID),
    "dinosiglip-vit-so-384px": (DINOV2_TIMM_ID, SIGLIP_384_TIMM_ID),
    "dinov2-vit-l": (DINOV2_TIMM_ID,),
    "siglip-vit-so400m": (SIGLIP_224_TIMM_ID,),
    "siglip-vit-so400m-384px": (SIGLIP_384_TIMM_ID,),
}

# Input resolution of each backbone's towers: what HF's PrismaticConfig sets image_sizes to.
BACKBONE_IMAGE_SIZES: dict[str, tuple[int, ...]] = {
    "dinosiglip-vit-so-224px": (224, 224),
    "dinosiglip-vit-so-384px": (384, 384),
    "dinov2-vit-l": (224,),
    "siglip-vit-so400m": (224,),
    "siglip-vit-so400m-384px": (384,),
}

DECODINGS = ("autoregressive", "parallel")
SLOT_EMBEDDINGS = ("zero", "learned")


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()
"""``FieldSpec.default`` of a key that config.json must give."""

_JSON_KINDS: dict[str, tuple[type, ...]] = {
    "int": (int,), "number": (int, float), "bool": (bool,), "str": (str,), "list": (list,), "object": (dict,),
}
_KIND_WORDS = {"int": "an integer", "number": "a number", "bool": "true or false", "str": "a string",
               "list": "a list", "object": "an object"}


@dataclass(frozen=True)
class FieldSpec:
    """How ``VLAConfig.from_hf_dict`` reads one key of config.json: JSON type, default, allowed values."""

    kinds: tuple[str, ...]
    """Accepted JSON types: 'int', 'number', 'bool', 'str', 'list', 'object'."""
    default: Any = REQUIRED
    """Value of an absent key: the default HF's OpenVLAConfig or transformers 4.40's LlamaConfig gives it
    (None: derived from other fields), or REQUIRED where there is none we accept."""
    doc: str = ""
    """What the field is, for error messages."""
    minimum: float | None = None
    """Smallest allowed number (of each item, for a list)."""
    maximum: float | None = None
    """Largest allowed number."""
    above: float | None = None
    """Numbers must be strictly greater than this."""
    choices: tuple[Any, ...] = ()
    """The only values supported, when not empty."""
    item: str | None = None
    """JSON type of each item of a list."""
    nullable: bool = False
    """Whether JSON null is accepted; it means the same as an absent key."""

    def expected(self) -> str:
        """The accepted values in words, e.g. 'an integer >= 1'."""
        if self.choices:
            words = " or ".join(_show(c) for c in self.choices)
        else:
            words = " or ".join(_KIND_WORDS[k] if k != "list" or not self.item else f"a list of {_plural(self.item)}"
                                for k in self.kinds)
            if self.minimum is not None and self.maximum is not None:
                words += f" in [{_num(self.minimum)}, {_num(self.maximum)}]"
            elif self.minimum is not None:
                words += f" >= {_num(self.minimum)}"
            elif self.above is not None:
                words += f" > {_num(self.above)}"
        if self.nullable and None not in self.choices:
            words += " or null"
        return f"{words} ({self.doc})" if self.doc else words


def _plural(kind: str) -> str:
    return {"int": "integers", "number": "numbers", "str": "strings", "object": "objects"}.get(kind, kind)


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _show(value: Any) -> str:
    """A config value as the message shows it: strings quoted, others in JSON spelling."""
    if isinstance(value, str):
        return repr(value)
    try:
        text = json.dumps(value)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _json_kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    for kind in ("int", "number", "str", "list", "object"):
        if isinstance(value, _JSON_KINDS[kind]):
            return _KIND_WORDS[kind]
    return type(value).__name__


def _is_kind(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind != "bool":  # JSON true is not the integer 1
        return False
    if kind == "number" and isinstance(value, float) and not math.isfinite(value):
        return False
    return isinstance(value, _JSON_KINDS[kind])


def _in_range(value: Any, spec: FieldSpec) -> bool:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return True
    return ((spec.minimum is None or value >= spec.minimum) and (spec.maximum is None or value <= spec.maximum)
            and (spec.above is None or value > spec.above))


def read_field(obj: Mapping[str, Any], key: str, spec: FieldSpec, source: str, prefix: str = "") -> Any:
    """``obj[key]`` checked against ``spec`` (its default when absent); a ConfigError names ``source``,
    the field, the value found, the value expected and the fix."""
    name = prefix + key
    fix = f"Set {name} in {source} to the value the model was trained with"
    unsupported = (f"Set {name} in {source} to a supported value if the model was trained with it; a model "
                   "that needs another cannot run here")
    if key not in obj or (obj[key] is None and spec.nullable):
        if spec.default is REQUIRED:
            raise ConfigError(f"{source}: {name} is missing; it must be {spec.expected()}. "
                              f"Add {name} to {source} (the value the model was trained with)")
        if spec.choices and spec.default not in spec.choices:
            raise ConfigError(f"{source}: {name} is missing, which OpenVLA reads as {_show(spec.default)}; that is "
                              f"not supported: it must be {spec.expected()}. {unsupported}")
        return copy.deepcopy(spec.default)
    value = obj[key]
    if not any(_is_kind(value, k) for k in spec.kinds):
        raise ConfigError(f"{source}: {name}={_show(value)} must be {spec.expected()}, not {_json_kind(value)}. {fix}")
    if spec.choices:
        if value not in spec.choices:
            raise ConfigError(f"{source}: {name}={_show(value)} is not supported: it must be {spec.expected()}. "
                              f"{unsupported}")
        return value
    items = value if isinstance(value, list) else [value]
    for i, v in enumerate(items):
        at = f"{name}[{i}]" if isinstance(value, list) else name
        if isinstance(value, list) and spec.item and not _is_kind(v, spec.item):
            raise ConfigError(f"{source}: {at}={_show(v)} must be {_KIND_WORDS[spec.item]} (in {name}, "
                              f"{spec.expected()}), not {_json_kind(v)}. {fix}")
        if not _in_range(v, spec):
            raise ConfigError(f"{source}: {at}={_show(v)} is out of range: {name} must be {spec.expected()}. {fix}")
    return value


# config.json at the top level, as HF's OpenVLAConfig reads it (keys starting rlrc_ are ours). HF's own
# save always writes every one of them; defaults apply to files written by other tools.
# Stricter than HF on purpose: vision_backbone_id and text_config have no default (HF would build
# Prismatic's SigLIP / Llama-2-7B defaults), so a damaged file is refused instead of guessed.
OPENVLA_FIELDS: dict[str, FieldSpec] = {
    "model_type": FieldSpec(("str",), REQUIRED, "the HF model class", choices=("openvla", "prismatic")),
    "vision_backbone_id": FieldSpec(("str",), REQUIRED, f"one of {sorted(VISION_BACKBONES)}"),
    "timm_model_ids": FieldSpec(("list",), None, "the towers' timm ids; null = those of vision_backbone_id",
                                item="str", nullable=True),
    "use_fused_vision_backbone": FieldSpec(("bool",), None, "two towers; null = as vision_backbone_id implies",
                                           nullable=True),
    "image_sizes": FieldSpec(("list",), None, "input pixels per tower; null = the backbone's resolution",
                             item="int", minimum=1, nullable=True),
    "rlrc_vision_towers": FieldSpec(("list",), None, "per-tower dimension overrides, one object per tower",
                                    item="object", nullable=True),
    "text_config": FieldSpec(("object",), REQUIRED, "the Llama decoder's config"),
    "n_action_bins": FieldSpec(("int",), 256, "discretisation bins per action dimension", minimum=2),
    "pad_to_multiple_of": FieldSpec(("int",), 64, "embedding rows padded past the tokenizer", minimum=0),
    "image_resize_strategy": FieldSpec(("str",), "letterbox", "how frames are resized",
                                       choices=("resize-naive",)),
    "arch_specifier": FieldSpec(("str",), None, "the projector spec, e.g. 'no-align+fused-gelu-mlp'"),
    "norm_stats": FieldSpec(("object",), None, "per-dataset action statistics", nullable=True),
    "rlrc_action_chunk": FieldSpec(("int",), 1, "actions per inference", minimum=1, maximum=64),
    "rlrc_decoding": FieldSpec(("str",), "autoregressive", "how action tokens are decoded", choices=DECODINGS),
    "rlrc_slot_embeddings": FieldSpec(("str",), "zero", "what parallel decoding's action slots hold",
                                      choices=SLOT_EMBEDDINGS),
}

# text_config as transformers 4.40's LlamaConfig reads it: OpenVLA's file lists only the values that
# differ from LlamaConfig's defaults (Llama-2-7B's sizes), so every default below is LlamaConfig's.
# head_dim and layer_* are our extensions (pruned models); absent means hidden_size / heads and
# the same widths in every layer.
TEXT_CONFIG_FIELDS: dict[str, FieldSpec] = {
    "model_type": FieldSpec(("str",), "llama", "the decoder family", choices=("llama",)),
    "vocab_size": FieldSpec(("int",), 32000, "embedding rows", minimum=1),
    "hidden_size": FieldSpec(("int",), 4096, "residual stream width", minimum=1),
    "intermediate_size": FieldSpec(("int",), 11008, "MLP width", minimum=1),
    "num_hidden_layers": FieldSpec(("int",), 32, "decoder layers", minimum=1),
    "num_attention_heads": FieldSpec(("int",), 32, "query heads", minimum=1),
    "num_key_value_heads": FieldSpec(("int",), None, "key/value heads; null = num_attention_heads",
                                     minimum=1, nullable=True),
    "head_dim": FieldSpec(("int",), None, "width of one head; null = hidden_size / num_attention_heads",
                          minimum=2, nullable=True),
    "hidden_act": FieldSpec(("str",), "silu", "the MLP activation", choices=("silu",)),
    "max_position_embeddings": FieldSpec(("int",), 2048, "longest sequence", minimum=1),
    "rms_norm_eps": FieldSpec(("number",), 1e-6, "RMSNorm epsilon", above=0),
    "rope_theta": FieldSpec(("number",), 10000.0, "RoPE base", above=0),
    "rope_scaling": FieldSpec(("object",), None, "RoPE scaling; Llama-2 has none", choices=(None,), nullable=True),
    "attention_bias": FieldSpec(("bool",), False, "Llama-2 has no attention bias", choices=(False,)),
    "tie_word_embeddings": FieldSpec(("bool",), False, "OpenVLA unties lm_head", choices=(False,)),
    "bos_token_id": FieldSpec(("int",), 1, "beginning-of-sequence id", minimum=0),
    "eos_token_id": FieldSpec(("int", "list"), 2, "end-of-sequence id(s)", minimum=0, item="int"),
    "pad_token_id": FieldSpec(("int",), None, "padding id", minimum=0, nullable=True),
    "layer_num_attention_heads": FieldSpec(("list",), None, "query heads of each layer", item="int", minimum=0,
                                           nullable=True),
    "layer_num_key_value_heads": FieldSpec(("list",), None, "key/value heads of each layer", item="int",
                                           minimum=0, nullable=True),
    "layer_intermediate_size": FieldSpec(("list",), None, "MLP width of each layer", item="int", minimum=0,
                                         nullable=True),
}

# One rlrc_vision_towers entry: a key it leaves out keeps the size of the timm model the id names.
TOWER_FIELDS: dict[str, FieldSpec] = {
    "embed_dim": FieldSpec(("int",), None, "token width", minimum=1),
    "depth": FieldSpec(("int",), None, "transformer blocks", minimum=1),
    "num_heads": FieldSpec(("int",), None, "attention heads", minimum=1),
    "mlp_dim": FieldSpec(("int",), None, "MLP width", minimum=1),
    "patch_size": FieldSpec(("int",), None, "patch size in pixels", minimum=1),
    "num_registers": FieldSpec(("int",), None, "register tokens", minimum=0),
}
TOWER_OVERRIDE_FIELDS = tuple(TOWER_FIELDS)


def did_you_mean(value: str, choices: Sequence[str]) -> str:
    """A ' Did you mean X?' hint for a misspelt name, or '' when nothing is close."""
    close = difflib.get_close_matches(value, list(choices), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


@dataclass(frozen=True)
class TowerConfig:
    """One ViT vision tower (a timm DINOv2-with-registers or SigLIP model, re-implemented)."""

    timm_id: str
    """timm model id this tower follows (key names, token layout)."""
    family: str
    """'dinov2' (class token, registers, LayerScale) or 'siglip' (no prefix tokens)."""
    image_size: int
    """Square input size in pixels."""
    patch_size: int
    """Patch (and conv stride) size in pixels."""
    embed_dim: int
    """Token width."""
    depth: int
    """Number of transformer blocks; features come from block ``depth - 2``."""
    num_heads: int
    """Attention heads per block."""
    mlp_dim: int
    """Hidden width of each block's GELU MLP."""
    num_registers: int = 0
    """Register tokens (DINOv2-reg: 4)."""
    class_token: bool = False
    """Whether a class token precedes the registers."""
    layer_scale: bool = False
    """Whether blocks scale their residual branches (``ls1``/``ls2.scale_factor``)."""
    attn_pool: bool = False
    """Whether the checkpoint carries SigLIP's (unused) attention-pooling head."""
    image_mean: tuple[float, float, float] = SIGLIP_MEAN
    """Per-channel mean applied after scaling pixels to [0, 1]."""
    image_std: tuple[float, float, float] = SIGLIP_STD
    """Per-channel std applied after the mean."""
    norm_eps: float = 1e-6
    """LayerNorm epsilon."""

    def __post_init__(self) -> None:
        if self.family not in ("dinov2", "siglip"):
            raise ConfigError(f"tower family {self.family!r} is not one of 'dinov2', 'siglip'")
        for name in ("image_size", "patch_size", "embed_dim", "depth", "num_heads", "mlp_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"tower {self.timm_id}: {name}={getattr(self, name)} must be > 0")
        if self.depth < 2:
            raise ConfigError(
                f"tower {self.timm_id}: depth={self.depth}, but OpenVLA takes features from the "
                "second-to-last block, so depth must be >= 2"
            )
        if self.image_size % self.patch_size:
            raise ConfigError(
                f"tower {self.timm_id}: image_size={self.image_size} is not a multiple of "
                f"patch_size={self.patch_size}"
            )
        if self.embed_dim % self.num_heads:
            raise ConfigError(
                f"tower {self.timm_id}: embed_dim={self.embed_dim} is not divisible by "
                f"num_heads={self.num_heads}"
            )

    @property
    def grid(self) -> int:
        """Patches per side."""
        return self.image_size // self.patch_size

    @property
    def num_patches(self) -> int:
        return self.grid * self.grid

    @property
    def num_prefix_tokens(self) -> int:
        """Tokens before the patches (class + registers); dropped from the features."""
        return int(self.class_token) + self.num_registers

    @property
    def feature_block(self) -> int:
        """Index of the block whose output OpenVLA uses (the second-to-last)."""
        return self.depth - 2


def timm_defaults(timm_id: str) -> dict[str, Any]:
    """The tower fields the timm model id implies (real sizes), image size aside."""
    if timm_id == DINOV2_TIMM_ID:
        return dict(
            family="dinov2", embed_dim=1024, depth=24, num_heads=16, mlp_dim=4096, patch_size=14,
            num_registers=4, class_token=True, layer_scale=True, attn_pool=False,
            image_mean=DINOV2_MEAN, image_std=DINOV2_STD,
        )
    if timm_id in (SIGLIP_224_TIMM_ID, SIGLIP_384_TIMM_ID):
        return dict(
            family="siglip", embed_dim=1152, depth=27, num_heads=16, mlp_dim=4304, patch_size=14,
            num_registers=0, class_token=False, layer_scale=False, attn_pool=True,
            image_mean=SIGLIP_MEAN, image_std=SIGLIP_STD,
        )
    known = sorted({t for ids in VISION_BACKBONES.values() for t in ids})
    raise UnknownBackboneError(
        f"timm model id {timm_id!r} is not implemented; supported: {known}.{did_you_mean(timm_id, known)}"
    )


def tower_from_timm_id(timm_id: str, image_size: int, overrides: Mapping[str, Any] | None = None) -> TowerConfig:
    """The tower a timm id names, at ``image_size``, with optional dimension overrides."""
    over = dict(overrides or {})
    unknown = set(over) - set(TOWER_OVERRIDE_FIELDS)
    if unknown:
        raise ConfigError(
            f"rlrc_vision_towers entry for {timm_id} has unknown keys {sorted(unknown)}; "
            f"allowed: {list(TOWER_OVERRIDE_FIELDS)}"
        )
    return TowerConfig(timm_id=timm_id, image_size=int(image_size), **{**timm_defaults(timm_id), **over})


@dataclass(frozen=True)
class LLMConfig:
    """The Llama decoder, with per-layer widths so that pruned layers may differ."""

    vocab_size: int
    """Rows of the embedding and lm_head (32064 for OpenVLA: 32000 tokens padded to 64)."""
    hidden_size: int
    """Residual stream width."""
    head_dim: int
    """Width of one attention head (unchanged by head pruning)."""
    num_attention_heads: tuple[int, ...]
    """Query heads of each layer."""
    num_key_value_heads: tuple[int, ...]
    """Key/value heads of each layer (grouped-query attention when fewer than query heads)."""
    intermediate_size: tuple[int, ...]
    """SwiGLU hidden width of each layer."""
    rms_norm_eps: float = 1e-6
    """RMSNorm epsilon."""
    rope_theta: float = 10000.0
    """RoPE base."""
    max_position_embeddings: int = 2048
    """Longest sequence the model was configured for."""
    bos_token_id: int = 1
    """Beginning-of-sequence id."""
    eos_token_id: int = 2
    """End-of-sequence id."""
    pad_token_id: int | None = 32000
    """Padding id (OpenVLA: 32000, the added <PAD> token)."""

    def __post_init__(self) -> None:
        n = len(self.num_attention_heads)
        if n == 0:
            raise ConfigError("text_config: num_hidden_layers must be >= 1")
        if len(self.num_key_value_heads) != n or len(self.intermediate_size) != n:
            raise ConfigError(
                "text_config: per-layer lists differ in length: "
                f"{n} attention-head counts, {len(self.num_key_value_heads)} kv-head counts, "
                f"{len(self.intermediate_size)} intermediate sizes; give one value per layer"
            )
        for i, (h, kv, m) in enumerate(zip(self.num_attention_heads, self.num_key_value_heads, self.intermediate_size)):
            if h < 0 or kv < 0 or m < 0:
                raise ConfigError(f"text_config layer {i}: widths must be >= 0, got heads={h} kv={kv} mlp={m}")
            if (h == 0) != (kv == 0) or (kv and h % kv):
                raise ConfigError(
                    f"text_config layer {i}: {h} query heads cannot be grouped over {kv} key/value heads; "
                    "query heads must be a multiple of kv heads (both 0 removes the attention block)"
                )
        for name in ("vocab_size", "hidden_size", "head_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"text_config: {name}={getattr(self, name)} must be > 0")
        if self.head_dim % 2:
            raise ConfigError(f"text_config: head_dim={self.head_dim} must be even for rotary embeddings")

    @property
    def num_layers(self) -> int:
        return len(self.num_attention_heads)

    @property
    def is_uniform(self) -> bool:
        """True when every layer has the same widths and head_dim = hidden / heads (plain Llama)."""
        return (
            len(set(self.num_attention_heads)) == 1
            and len(set(self.num_key_value_heads)) == 1
            and len(set(self.intermediate_size)) == 1
            and self.num_attention_heads[0] * self.head_dim == self.hidden_size
        )

    def param_count(self) -> int:
        """Parameters of the decoder, embeddings and lm_head included."""
        h, d = self.hidden_size, self.head_dim
        total = 2 * self.vocab_size * h + h  # embed_tokens, lm_head, final norm
        for q, kv, m in zip(self.num_attention_heads, self.num_key_value_heads, self.intermediate_size):
            total += 2 * h  # two RMSNorms
            total += (q + 2 * kv) * d * h + q * d * h  # q/k/v and o projections
            total += 3 * m * h  # gate, up, down
        return total

    @classmethod
    def from_text_config(cls, text_config: Mapping[str, Any], source: str = "config.json") -> "LLMConfig":
        """Parse HF ``text_config`` (absent keys take transformers 4.40 LlamaConfig's defaults, as in HF)."""
        tc = {key: read_field(text_config, key, spec, source, "text_config.")
              for key, spec in TEXT_CONFIG_FIELDS.items()}
        n_layers, heads, hidden = tc["num_hidden_layers"], tc["num_attention_heads"], tc["hidden_size"]
        kv = heads if tc["num_key_value_heads"] is None else tc["num_key_value_heads"]
        if tc["head_dim"] is None and hidden % heads:
            raise ConfigError(
                f"{source}: text_config.hidden_size={hidden} is not divisible by text_config.num_attention_heads="
                f"{heads}, so a head has no whole width; give text_config.head_dim, or fix these two fields to the "
                "model's real sizes"
            )
        head_dim = tc["head_dim"] or hidden // heads

        def per_layer(key: str, uniform: int) -> tuple[int, ...]:
            values = tc[key]
            if values is None:
                return (uniform,) * n_layers
            if len(values) != n_layers:
                raise ConfigError(
                    f"{source}: text_config.{key} must be a list of {n_layers} ints (num_hidden_layers), got "
                    f"{_show(values)}; give one value per layer"
                )
            return tuple(values)

        eos = tc["eos_token_id"]
        if isinstance(eos, list) and not eos:
            raise ConfigError(f"{source}: text_config.eos_token_id=[] must name at least one token id "
                              "(Llama-2: 2)")
        eos = eos[0] if isinstance(eos, list) else eos
        vocab = tc["vocab_size"]
        tokens = {"bos_token_id": tc["bos_token_id"], "eos_token_id": eos, "pad_token_id": tc["pad_token_id"]}
        for key, token in tokens.items():
            if token is not None and token >= vocab:
                origin = "" if "vocab_size" in text_config else " (absent from the file, so LlamaConfig's default)"
                raise ConfigError(
                    f"{source}: text_config.{key}={token} is out of range: token ids must be < "
                    f"text_config.vocab_size={vocab}{origin}. Set both to the values the model was trained with"
                )
        return cls(
            vocab_size=vocab,
            hidden_size=hidden,
            head_dim=head_dim,
            num_attention_heads=per_layer("layer_num_attention_heads", heads),
            num_key_value_heads=per_layer("layer_num_key_value_heads", kv),
            intermediate_size=per_layer("layer_intermediate_size", tc["intermediate_size"]),
            rms_norm_eps=float(tc["rms_norm_eps"]),
            rope_theta=float(tc["rope_theta"]),
            max_position_embeddings=tc["max_position_embeddings"],
            bos_token_id=tc["bos_token_id"],
            eos_token_id=eos,
            pad_token_id=tc["pad_token_id"],
        )

    def to_text_config(self) -> dict[str, Any]:
        """HF ``text_config``: the full key set (explicit beats relying on defaults)."""
        out: dict[str, Any] = {
            "model_type": "llama",
            "architectures": ["LlamaForCausalLM"],
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": max(self.intermediate_size),
            "num_hidden_layers": self.num_layers,
            "num_attention_heads": max(self.num_attention_heads),
            "num_key_value_heads": max(self.num_key_value_heads),
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "attention_bias": False,
            "tie_word_embeddings": False,
            "bos_token_id": self.bos_token_id,
            "eos_token_id": self.eos_token_id,
            "pad_token_id": self.pad_token_id,
        }
        if not self.is_uniform:
            out["head_dim"] = self.head_dim
            out["layer_num_attention_heads"] = list(self.num_attention_heads)
            out["layer_num_key_value_heads"] = list(self.num_key_value_heads)
            out["layer_intermediate_size"] = list(self.intermediate_size)
        return out


@dataclass(frozen=True)
class VLAConfig:
    """An OpenVLA-architecture model: vision towers, projector, Llama decoder, action format."""

    vision_backbone_id: str
    """Prismatic backbone id, e.g. 'dinosiglip-vit-so-224px'."""
    towers: tuple[TowerConfig, ...]
    """One tower (single backbone) or two (fused: channels 0-2 DINOv2, 3-5 SigLIP)."""
    llm: LLMConfig
    """The language model."""
    n_action_bins: int = 256
    """Discretisation bins per action dimension."""
    pad_to_multiple_of: int = 64
    """Embedding padding; the tokenizer's vocabulary is ``llm.vocab_size - pad_to_multiple_of``."""
    image_resize_strategy: str = "resize-naive"
    """How frames become ``image_size`` squares (OpenVLA: 'resize-naive')."""
    action_chunk: int = 1
    """Actions predicted per inference (K); > 1 needs ``decoding='parallel'``."""
    decoding: str = "autoregressive"
    """'autoregressive' (OpenVLA, one token per decoder pass) or 'parallel' (OpenVLA-OFT style)."""
    slot_embeddings: str = "zero"
    """Parallel decoding: 'zero' (empty slots, told apart by their positions only) or 'learned' (one
    trained embedding per slot)."""
    arch_specifier: str = "no-align+fused-gelu-mlp"
    """Prismatic projector spec; recorded for compatibility."""
    norm_stats: dict[str, Any] | None = field(default=None, compare=False)
    """Per-dataset action/proprio statistics used to unnormalize actions."""
    extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)
    """Other config.json keys, written back untouched on save."""

    def __post_init__(self) -> None:
        if not self.towers or len(self.towers) > 2:
            raise ConfigError(f"{self.vision_backbone_id}: expected 1 or 2 vision towers, got {len(self.towers)}")
        if len({t.num_patches for t in self.towers}) != 1:
            raise ConfigError(
                f"{self.vision_backbone_id}: towers produce different patch counts "
                f"{[t.num_patches for t in self.towers]}; fused towers must share a patch grid"
            )
        if self.image_resize_strategy != "resize-naive":
            raise ConfigError(
                f"image_resize_strategy={self.image_resize_strategy!r} is not supported; "
                "OpenVLA checkpoints use 'resize-naive'"
            )
        if not self.arch_specifier.endswith("gelu-mlp"):
            raise ConfigError(
                f"arch_specifier={self.arch_specifier!r}: only the GELU MLP projectors "
                "('...gelu-mlp', '...fused-gelu-mlp') of OpenVLA are supported"
            )
        if self.n_action_bins < 2:
            raise ConfigError(f"n_action_bins={self.n_action_bins} must be >= 2")
        if self.decoding not in DECODINGS:
            raise ConfigError(f"rlrc_decoding={self.decoding!r}: expected one of {list(DECODINGS)}")
        if not isinstance(self.action_chunk, int) or not 1 <= self.action_chunk <= 64:
            raise ConfigError(f"rlrc_action_chunk={self.action_chunk!r}: expected an integer in [1, 64]")
        if self.slot_embeddings not in SLOT_EMBEDDINGS:
            raise ConfigError(f"rlrc_slot_embeddings={self.slot_embeddings!r}: expected one of {list(SLOT_EMBEDDINGS)}")
        if self.slot_embeddings != "zero" and self.decoding != "parallel":
            raise ConfigError(f"rlrc_slot_embeddings={self.slot_embeddings!r} needs rlrc_decoding='parallel'")
        if self.action_chunk > 1 and self.decoding != "parallel":
            raise ConfigError(f"rlrc_action_chunk={self.action_chunk} needs rlrc_decoding='parallel' (autoregressive "
                              "decoding predicts one action per pass)")
        if self.token_vocab_size < self.n_action_bins:
            raise ConfigError(
                f"tokenizer vocabulary {self.token_vocab_size} (vocab_size - pad_to_multiple_of) is smaller "
                f"than n_action_bins={self.n_action_bins}"
            )

    @property
    def use_fused_vision_backbone(self) -> bool:
        return len(self.towers) == 2

    @property
    def image_size(self) -> int:
        return self.towers[0].image_size

    @property
    def num_patches(self) -> int:
        return self.towers[0].num_patches

    @property
    def vision_dim(self) -> int:
        """Width of the concatenated patch features."""
        return sum(t.embed_dim for t in self.towers)

    @property
    def projector_dims(self) -> tuple[int, ...]:
        """Widths through the projector: fused = 3 linears via 4x vision_dim, else 2 linears."""
        h = self.llm.hidden_size
        if self.use_fused_vision_backbone:
            return (self.vision_dim, 4 * self.vision_dim, h, h)
        return (self.vision_dim, h, h)

    @property
    def token_vocab_size(self) -> int:
        """OpenVLA's ``vocab_size`` for action decoding: 32064 - 64 = 32000."""
        return self.llm.vocab_size - self.pad_to_multiple_of

    @classmethod
    def from_hf_dict(cls, cfg: Mapping[str, Any], source: str = "config.json") -> "VLAConfig":
        """Parse an HF OpenVLA ``config.json`` dict; ``source`` names the file in errors.

        Every key is read through ``OPENVLA_FIELDS`` / ``TEXT_CONFIG_FIELDS`` / ``TOWER_FIELDS``: a value
        of the wrong type, out of range or missing where HF defines no default is a ConfigError that
        names the file, the field, the value found and the value expected.
        """
        if not isinstance(cfg, Mapping):
            raise ConfigError(f"{source}: expected a JSON object, got {_json_kind(cfg)}; the file is not an OpenVLA "
                              "config")
        try:
            return cls._from_hf_dict(cfg, source)
        except ConfigError as exc:
            if source in str(exc):
                raise
            raise type(exc)(f"{source}: {exc}") from exc

    @classmethod
    def _from_hf_dict(cls, cfg: Mapping[str, Any], source: str) -> "VLAConfig":
        top = {key: read_field(cfg, key, spec, source) for key, spec in OPENVLA_FIELDS.items()}
        backbone = top["vision_backbone_id"]
        if backbone not in VISION_BACKBONES:
            raise UnknownBackboneError(
                f"{source}: vision_backbone_id={backbone!r} is not supported; supported: "
                f"{sorted(VISION_BACKBONES)}.{did_you_mean(str(backbone), sorted(VISION_BACKBONES))}"
            )
        timm_ids = tuple(top["timm_model_ids"] or VISION_BACKBONES[backbone])
        if timm_ids != VISION_BACKBONES[backbone]:
            raise ConfigError(
                f"{source}: timm_model_ids={list(timm_ids)} do not match vision_backbone_id={backbone!r}, "
                f"which uses {list(VISION_BACKBONES[backbone])}"
            )
        fused = top["use_fused_vision_backbone"]
        if fused is not None and fused != (len(timm_ids) == 2):
            raise ConfigError(
                f"{source}: use_fused_vision_backbone={fused} contradicts vision_backbone_id={backbone!r} "
                f"({len(timm_ids)} tower(s))"
            )
        sizes = top["image_sizes"] or list(BACKBONE_IMAGE_SIZES[backbone])
        if len(sizes) != len(timm_ids):
            raise ConfigError(f"{source}: image_sizes={sizes} must have one entry per tower ({len(timm_ids)})")
        overrides = top["rlrc_vision_towers"] or [{}] * len(timm_ids)
        if len(overrides) != len(timm_ids):
            raise ConfigError(f"{source}: rlrc_vision_towers must have one entry per tower ({len(timm_ids)})")
        towers = []
        for i, (timm_id, size, over) in enumerate(zip(timm_ids, sizes, overrides)):
            prefix = f"rlrc_vision_towers[{i}]."
            for key, spec in TOWER_FIELDS.items():
                read_field(over, key, spec, source, prefix)
            towers.append(tower_from_timm_id(timm_id, size, over))
        llm = LLMConfig.from_text_config(top["text_config"], source)
        norm_stats = top["norm_stats"]
        if norm_stats is not None and not all(isinstance(v, dict) for v in norm_stats.values()):
            raise NormStatsError(
                f"{source}: norm_stats must be an object {{dataset_key: {{'action': {{q01, q99, mask}}, ...}}}}; "
                f"got {_show(norm_stats)}"
            )
        arch = top["arch_specifier"] or ("no-align+fused-gelu-mlp" if len(towers) == 2 else "no-align+gelu-mlp")
        return cls(
            vision_backbone_id=backbone,
            towers=tuple(towers),
            llm=llm,
            n_action_bins=top["n_action_bins"],
            pad_to_multiple_of=top["pad_to_multiple_of"],
            image_resize_strategy=top["image_resize_strategy"],
            arch_specifier=arch,
            norm_stats=copy.deepcopy(norm_stats),
            action_chunk=top["rlrc_action_chunk"],
            decoding=top["rlrc_decoding"],
            slot_embeddings=top["rlrc_slot_embeddings"],
            extra={k: copy.deepcopy(v) for k, v in cfg.items() if k not in OPENVLA_FIELDS},
        )

    def to_hf_dict(self) -> dict[str, Any]:
        """The ``config.json`` dict, in the HF OpenVLA layout plus our extension keys if needed."""
        out: dict[str, Any] = dict(self.extra)
        out.update(
            {
                "model_type": "openvla",
                "architectures": out.get("architectures", ["OpenVLAForActionPrediction"]),
                "vision_backbone_id": self.vision_backbone_id,
                "timm_model_ids": [t.timm_id for t in self.towers],
                "timm_override_act_layers": [None] * len(self.towers),
                "use_fused_vision_backbone": self.use_fused_vision_backbone,
                "image_sizes": [t.image_size for t in self.towers],
                "image_resize_strategy": self.image_resize_strategy,
                "arch_specifier": self.arch_specifier,
                "llm_backbone_id": out.get("llm_backbone_id", "llama2-7b-pure"),
                "llm_max_length": out.get("llm_max_length", self.llm.max_position_embeddings),
                "pad_token_id": self.llm.pad_token_id,
                "pad_to_multiple_of": self.pad_to_multiple_of,
                "n_action_bins": self.n_action_bins,
                "text_config": self.llm.to_text_config(),
                "norm_stats": self.norm_stats,
            }
        )
        overrides = []
        for t in self.towers:
            ref = timm_defaults(t.timm_id)
            overrides.append({f: getattr(t, f) for f in TOWER_OVERRIDE_FIELDS if getattr(t, f) != ref[f]})
        if any(overrides):
            out["rlrc_vision_towers"] = overrides
        else:
            out.pop("rlrc_vision_towers", None)
        if self.decoding != "autoregressive" or self.action_chunk != 1:
            out["rlrc_action_chunk"] = self.action_chunk
            out["rlrc_decoding"] = self.decoding
        if self.slot_embeddings != "zero":
            out["rlrc_slot_embeddings"] = self.slot_embeddings
        return out

    def replace(self, **changes: Any) -> "VLAConfig":
        return dataclasses.replace(self, **changes)

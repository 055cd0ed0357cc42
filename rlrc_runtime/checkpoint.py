"""Reading an OpenVLA checkpoint directory without torch: config, weight index, tokenizer, stats.

A checkpoint directory is the HF layout of ``openvla/openvla-7b`` and its fine-tunes::

    config.json                       model_type "openvla", text_config, norm_stats
    model.safetensors                 or sharded: model-0000i-of-0000n.safetensors
    model.safetensors.index.json      {"weight_map": {key: shard file}} when sharded
    tokenizer.json | tokenizer.model  (+ tokenizer_config.json, special_tokens_map.json)
    preprocessor_config.json          optional: per-tower means/stds of the image processor
    dataset_statistics.json           optional: norm_stats, when config.json lacks them

Our own checkpoints (pruned, recovered) use the same layout, so one loader reads both.
"""
from __future__ import annotations

import json
import math
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlrc_runtime.config import TEXT_CONFIG_FIELDS, TOWER_OVERRIDE_FIELDS, VLAConfig
from rlrc_runtime.errors import CheckpointError, ConfigError, MissingFileError, NormStatsError, TokenizerNotFoundError

INDEX_FILE = "model.safetensors.index.json"
SINGLE_FILE = "model.safetensors"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "tokenizer_config.json", "special_tokens_map.json", "added_tokens.json")


@dataclass(frozen=True)
class TensorInfo:
    """One stored tensor, read from a safetensors header (no data read)."""

    file: str
    dtype: str
    shape: tuple[int, ...]


@dataclass(frozen=True)
class CheckpointInfo:
    """What a checkpoint directory holds, validated, before any weight is read."""

    path: Path
    config: VLAConfig
    tensors: dict[str, TensorInfo]
    """Stored key -> file, dtype and shape."""
    tokenizer_file: Path
    """tokenizer.json, or tokenizer.model when there is no tokenizer.json."""

    @property
    def files(self) -> list[str]:
        return sorted({t.file for t in self.tensors.values()})


def read_json(path: Path) -> Any:
    if not path.is_file():
        raise MissingFileError(f"{path} does not exist")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is damaged or truncated") from exc


def read_config(path: str | Path) -> VLAConfig:
    """The checkpoint's VLAConfig, with norm_stats from config.json or dataset_statistics.json."""
    return _read_config(Path(path))[0]


def _read_config(path: Path) -> tuple[VLAConfig, dict[str, Any]]:
    """(the VLAConfig, config.json as parsed: which fields it leaves out matters to check_absent_dimensions)."""
    if not path.is_dir():
        raise MissingFileError(f"checkpoint directory {path} does not exist")
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise MissingFileError(
            f"{path} has no config.json; point at an OpenVLA checkpoint directory "
            "(config.json + *.safetensors + tokenizer), e.g. one written by `rlrc-export make-tiny`"
        )
    raw = read_json(cfg_path)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{cfg_path}: expected a JSON object, got {type(raw).__name__}; the file is not an OpenVLA config")
    stats = raw.get("norm_stats")
    if stats is not None and not (isinstance(stats, dict) and all(isinstance(v, dict) for v in stats.values())):
        raise NormStatsError(
            f"{cfg_path}: norm_stats must be an object {{dataset_key: {{'action': {{q01, q99, mask}}, ...}}}}, "
            f"got {type(stats).__name__}"
        )
    config = VLAConfig.from_hf_dict(raw, source=str(cfg_path))
    stats_path = path / "dataset_statistics.json"
    if not config.norm_stats and stats_path.is_file():
        stats = read_json(stats_path)
        if not (isinstance(stats, dict) and all(isinstance(v, dict) for v in stats.values())):
            raise NormStatsError(
                f"{stats_path}: expected an object {{dataset_key: {{'action': {{q01, q99, mask}}, ...}}}}, got "
                f"{type(stats).__name__}; write the statistics of the training data there (`rlrc-sim norm-stats`)"
            )
        config = config.replace(norm_stats=stats)
    return config, raw


# Bits per element of each dtype the safetensors format defines.
SAFETENSORS_DTYPE_BITS = {
    "BOOL": 8, "U8": 8, "I8": 8, "F8_E5M2": 8, "F8_E4M3": 8, "F8_E8M0": 8, "F8_E4M3FNUZ": 8, "F8_E5M2FNUZ": 8,
    "F4": 4, "F6_E2M3": 6, "F6_E3M2": 6, "I16": 16, "U16": 16, "F16": 16, "BF16": 16, "I32": 32, "U32": 32,
    "F32": 32, "C64": 64, "F64": 64, "I64": 64, "U64": 64,
}
MAX_HEADER_BYTES = 100_000_000  # the safetensors library's own limit
# torch.save writes a zip archive (new format) or a bare pickle (protocol 2-5: 0x80, then the protocol).
PICKLE_MAGIC = (b"PK\x03\x04", b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def safetensors_header(path: Path) -> dict[str, Any]:
    """The validated JSON header of a .safetensors file: key -> {dtype, shape, data_offsets}.

    Checks what the format promises before any tensor is mapped: the header fits in the file, is a
    JSON object without repeated keys, every entry has a known dtype, a shape whose byte size equals its
    offset span, and the spans tile the data area exactly (no overlap, no gap, nothing cut off or left over).
    """
    size = path.stat().st_size
    with path.open("rb") as f:
        raw_len = f.read(8)
        if len(raw_len) != 8:
            raise CheckpointError(f"{path} is truncated: shorter than the 8-byte safetensors header length")
        (n,) = struct.unpack("<Q", raw_len)
        if (n > MAX_HEADER_BYTES or 8 + n > size) and raw_len.startswith(PICKLE_MAGIC):
            raise CheckpointError(
                f"{path} is a PyTorch pickle (torch.save output), not safetensors; it is not unpickled here, because "
                "a pickle can run code. Convert it on a machine you trust: "
                "safetensors.torch.save_file(torch.load(f, weights_only=True), 'model.safetensors')"
            )
        if n > MAX_HEADER_BYTES:
            raise CheckpointError(f"{path}: header length {n} is implausible; the file is not safetensors or is damaged")
        if 8 + n > size:
            raise CheckpointError(
                f"{path}: the safetensors header is not valid JSON: its length field says {n} bytes but only "
                f"{size - 8} follow; the file is truncated or is not safetensors. Copy it again"
            )
        text = f.read(n)
    try:
        header = json.loads(text, object_pairs_hook=_unique_keys)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON; the file is damaged") from exc
    except _RepeatedKey as exc:
        raise CheckpointError(f"{path}: the safetensors header names {exc.args[0]!r} twice; the file is damaged or "
                              "forged") from exc
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: the safetensors header is a JSON {type(header).__name__}, not an object "
                              "{key: {dtype, shape, data_offsets}}; the file is damaged or is not safetensors")
    meta = header.pop("__metadata__", None)
    if meta is not None and not (isinstance(meta, dict) and all(isinstance(v, str) for v in meta.values())):
        raise CheckpointError(f"{path}: the safetensors __metadata__ must map strings to strings; the file is damaged")
    _check_tensor_spans(path, header, size - 8 - n)
    return header


class _RepeatedKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise _RepeatedKey(key)
        out[key] = value
    return out


def _check_tensor_spans(path: Path, header: dict[str, Any], data_bytes: int) -> None:
    """Each entry well formed, its span as long as its shape needs, the spans tiling [0, data_bytes)."""
    damaged = "the header is damaged or forged; copy the file again from its source"
    spans = []
    for key, entry in header.items():
        if not isinstance(entry, dict) or not {"dtype", "shape", "data_offsets"} <= set(entry):
            raise CheckpointError(f"{path}: header entry {key!r} must be an object with dtype, shape and "
                                  f"data_offsets, got {json.dumps(entry)[:80]}; {damaged}")
        dtype, shape, offsets = entry["dtype"], entry["shape"], entry["data_offsets"]
        if dtype not in SAFETENSORS_DTYPE_BITS:
            raise CheckpointError(f"{path}: tensor {key!r} has dtype {dtype!r}, which safetensors does not define "
                                  f"(known: {sorted(SAFETENSORS_DTYPE_BITS)}); {damaged}")
        if not (isinstance(shape, list) and all(_is_count(d) for d in shape)):
            raise CheckpointError(f"{path}: tensor {key!r} has shape {shape!r}; expected a list of integers >= 0; "
                                  f"{damaged}")
        if not (isinstance(offsets, list) and len(offsets) == 2 and all(_is_count(o) for o in offsets)
                and offsets[0] <= offsets[1]):
            raise CheckpointError(f"{path}: tensor {key!r} has data_offsets {offsets!r}; expected [begin, end] with "
                                  f"0 <= begin <= end; {damaged}")
        bits = math.prod(shape) * SAFETENSORS_DTYPE_BITS[dtype]
        if bits != 8 * (offsets[1] - offsets[0]):
            raise CheckpointError(
                f"{path}: tensor {key!r} of shape {shape} {dtype} needs {bits / 8:g} bytes but its data_offsets "
                f"{offsets} span {offsets[1] - offsets[0]}; {damaged}"
            )
        spans.append((offsets[0], offsets[1], key))
    end, previous = 0, None
    for begin, stop, key in sorted(spans):
        if begin < end:
            raise CheckpointError(f"{path}: tensor {key!r} (bytes {begin}..{stop}) overlaps {previous!r} "
                                  f"(which ends at byte {end}); {damaged}")
        if begin > end:
            raise CheckpointError(f"{path}: bytes {end}..{begin} before tensor {key!r} belong to no tensor; {damaged}")
        end, previous = stop, key
    if end > data_bytes:
        raise CheckpointError(
            f"{path} is truncated: its header promises {path.stat().st_size - data_bytes + end} bytes, the file has "
            f"{path.stat().st_size}; copy the file again"
        )
    if end < data_bytes:
        raise CheckpointError(f"{path}: {data_bytes - end} bytes after the last tensor belong to no tensor; "
                              f"{damaged}")


def _is_count(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def weight_index(path: str | Path) -> dict[str, TensorInfo]:
    """Key -> TensorInfo over every shard, following model.safetensors.index.json when present."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        index = read_json(path / INDEX_FILE)
        weight_map = index.get("weight_map") if isinstance(index, dict) else None
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{path / INDEX_FILE} has no 'weight_map' {{key: shard file}}")
        for key, name in weight_map.items():
            if not isinstance(name, str) or Path(name).name != name or name in ("", ".", ".."):
                raise CheckpointError(
                    f"{path / INDEX_FILE}: weight_map[{key!r}]={name!r} must be the file name of a shard in "
                    f"{path} (no directories); the index is damaged"
                )
        files = sorted(set(weight_map.values()))
        for name in files:
            if not (path / name).is_file():
                n_keys = sum(1 for f in weight_map.values() if f == name)
                raise MissingFileError(
                    f"shard {path / name} is missing ({n_keys} weights are mapped to it by {INDEX_FILE}); "
                    "download or copy the complete checkpoint"
                )
    elif (path / SINGLE_FILE).is_file():
        weight_map, files = None, [SINGLE_FILE]
    else:
        others = sorted(p.name for p in path.glob("*.bin")) + sorted(p.name for p in path.glob("*.safetensors"))
        hint = f" (found {others}: only safetensors with {INDEX_FILE} or a single {SINGLE_FILE} are read)" if others else ""
        raise MissingFileError(f"{path} has no {SINGLE_FILE} and no {INDEX_FILE}{hint}")
    tensors: dict[str, TensorInfo] = {}
    for name in files:
        for key, meta in safetensors_header(path / name).items():
            if weight_map is not None and weight_map.get(key) != name:
                raise CheckpointError(
                    f"{path / name} holds {key!r} but {INDEX_FILE} maps it to {weight_map.get(key)!r}; "
                    "the index and the shards are from different checkpoints"
                )
            tensors[key] = TensorInfo(file=name, dtype=meta["dtype"], shape=tuple(meta["shape"]))
    if weight_map is not None:
        absent = sorted(set(weight_map) - set(tensors))
        if absent:
            raise CheckpointError(
                f"{INDEX_FILE} maps {len(absent)} keys that their shard does not hold, e.g. "
                f"{absent[0]!r} in {weight_map[absent[0]]}; the shard is incomplete"
            )
    return tensors


def find_tokenizer(path: str | Path) -> Path:
    path = Path(path)
    for name in ("tokenizer.json", "tokenizer.model"):
        if (path / name).is_file():
            return path / name
    raise TokenizerNotFoundError(
        f"{path}: no tokenizer found; expected tokenizer.json (or tokenizer.model) next to config.json. "
        "Copy the tokenizer files of the base model into this directory"
    )


def read_checkpoint(path: str | Path, require_norm_stats: bool = True) -> CheckpointInfo:
    """Validate a checkpoint directory's files (not yet every key against the model)."""
    path = Path(path)
    config, raw = _read_config(path)
    if require_norm_stats and not config.norm_stats:
        raise NormStatsError(
            f"{path / 'config.json'} has no norm_stats (and there is no dataset_statistics.json), so actions "
            "cannot be unnormalized; compute them from the training data (`rlrc-sim norm-stats`) and add them"
        )
    tensors = weight_index(path)
    check_absent_dimensions(path / "config.json", raw, config, tensors)
    return CheckpointInfo(path=path, config=config, tensors=tensors, tokenizer_file=find_tokenizer(path))


TOWER_PREFIXES = ("vision_backbone.featurizer.", "vision_backbone.fused_featurizer.")
LLM_PREFIX = "language_model.model."
# (config fields involved, value the config implies, value the weights show, weight key, format string
# naming what is compared, e.g. "{} rows")
DimensionCheck = tuple[tuple[str, ...], Any, Any, str, str]
_TEXT_DIMENSIONS = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "head_dim", "layer_num_attention_heads", "layer_num_key_value_heads",
                    "layer_intermediate_size")


def check_absent_dimensions(cfg_path: Path, raw: dict[str, Any], config: VLAConfig,
                            tensors: dict[str, TensorInfo]) -> None:
    """Refuse a config.json whose absent dimension fields took defaults that the stored weights contradict.

    As in HF, an absent text_config size takes LlamaConfig's default (Llama-2-7B's) and an absent
    rlrc_vision_towers the timm model's sizes: right for OpenVLA-7B, wrong for any other model whose file
    lost the key. The stored shapes tell, so the error names the field instead of building (or printing)
    a model of the wrong size. Explicit values that disagree are left to the key and shape check at load
    (``export.checkpoint.check_keys``), which names the weight.
    """
    absent = _absent_dimension_fields(raw, len(config.towers))
    mismatches = [c for c in _dimension_checks(config, tensors) if c[1] != c[2]]
    if not mismatches:
        return
    fields, implied, stored, key, says = mismatches[0]  # the most basic dimension that disagrees
    blamed = [f for f in fields if f in absent]
    if not blamed:  # an explicit value is wrong: check_keys names the weight at load
        return
    # An absent head_dim, layer_* list or tower entry key is the normal HF form; name it only when no
    # LlamaConfig size or whole rlrc_vision_towers is missing too.
    primary = [f for f in blamed if not (f.endswith("head_dim") or ".layer_" in f or "]." in f)]
    blamed = primary or blamed
    where = f" in {tensors[key].file}" if key in tensors else ""
    # The one field a 1:1 check measures (hidden_size from embed_tokens' columns, a tower's embed_dim ...).
    direct = fields[-1] if len(fields) == 1 or (fields[0] == "rlrc_vision_towers" and len(fields) == 2) else None
    hint = f" (the weights say {direct}={stored})" if direct else ""
    raise ConfigError(
        f"{cfg_path}: {', '.join(blamed)} {'is' if len(blamed) == 1 else 'are'} not in the file, so "
        f"{'it takes its default' if len(blamed) == 1 else 'they take their defaults'}: {_defaults_taken(blamed)}; "
        f"but {key}{where} has {says.format(stored)} where the config implies {says.format(implied)}. Add "
        f"{', '.join(blamed)} with the model's real value{'s' if len(blamed) > 1 else ''}{hint}"
    )


def _absent_dimension_fields(raw: dict[str, Any], n_towers: int) -> set[str]:
    text = raw.get("text_config") if isinstance(raw.get("text_config"), dict) else {}
    absent = {f"text_config.{k}" for k in _TEXT_DIMENSIONS if text.get(k) is None}
    if raw.get("image_sizes") is None:
        absent.add("image_sizes")
    towers = raw.get("rlrc_vision_towers")
    if towers is None:
        absent.add("rlrc_vision_towers")
        towers = [{}] * n_towers
    for i, over in enumerate(towers):
        absent |= {f"rlrc_vision_towers[{i}].{k}" for k in TOWER_OVERRIDE_FIELDS if k not in over}
    return absent


def _dimension_checks(config: VLAConfig, tensors: dict[str, TensorInfo]) -> list[DimensionCheck]:
    """A DimensionCheck for each dimension a stored weight pins, the most basic first (embeddings, layer
    count, per-layer widths, then the towers). Keys the checkpoint lacks are left to the key check at load."""
    def shape(key: str) -> tuple[int, ...] | None:
        return tensors[key].shape if key in tensors else None

    llm, tc = config.llm, "text_config."
    checks: list[DimensionCheck] = []
    emb_key = LLM_PREFIX + "embed_tokens.weight"
    emb = shape(emb_key)
    if emb is not None and len(emb) == 2:
        checks.append(((tc + "vocab_size",), llm.vocab_size, emb[0], emb_key, "{} rows"))
        checks.append(((tc + "hidden_size",), llm.hidden_size, emb[1], emb_key, "{} columns"))
    layers = _block_count(tensors, LLM_PREFIX + "layers.")
    if layers:
        checks.append(((tc + "num_hidden_layers",), llm.num_layers, layers, LLM_PREFIX + "layers.*", "{} layers"))
    head_fields = (tc + "head_dim", tc + "num_attention_heads")
    per_layer = (
        ("mlp.gate_proj.weight", llm.intermediate_size, (tc + "intermediate_size",), tc + "layer_intermediate_size"),
        ("self_attn.q_proj.weight", [h * llm.head_dim for h in llm.num_attention_heads], head_fields,
         tc + "layer_num_attention_heads"),
        ("self_attn.k_proj.weight", [kv * llm.head_dim for kv in llm.num_key_value_heads],
         (tc + "num_key_value_heads", *head_fields), tc + "layer_num_key_value_heads"),
    )
    for suffix, implied, uniform_fields, list_field in per_layer:
        keys = [f"{LLM_PREFIX}layers.{i}.{suffix}" for i in range(llm.num_layers)]
        rows = [s[0] if (s := shape(k)) else None for k in keys]
        if len({r for r in rows if r is not None}) > 1:  # layers differ: only the per-layer list can say so
            checks.append(((list_field,), list(implied), rows, keys[0].replace(".0.", ".*."), "{} rows per layer"))
        for key, want, got in zip(keys, implied, rows):
            if got is not None:
                checks.append((uniform_fields, want, got, key, "{} rows"))
    for i, (tower, prefix) in enumerate(zip(config.towers, TOWER_PREFIXES)):
        def fields(*names: str) -> tuple[str, ...]:
            return ("rlrc_vision_towers", *(f"rlrc_vision_towers[{i}].{n}" for n in names))

        patch_key = prefix + "patch_embed.proj.weight"
        patch = shape(patch_key)
        if patch is not None and len(patch) == 4:
            checks.append((fields("embed_dim"), tower.embed_dim, patch[0], patch_key, "{} rows"))
            checks.append((fields("patch_size"), tower.patch_size, patch[2], patch_key, "a kernel of {} pixels"))
        pos = shape(prefix + "pos_embed")
        if pos is not None and len(pos) == 3:
            checks.append((("image_sizes", *fields("patch_size")), tower.num_patches, pos[1], prefix + "pos_embed",
                           "{} positions"))
        depth = _block_count(tensors, prefix + "blocks.")
        if depth:
            checks.append((fields("depth"), tower.depth, depth, prefix + "blocks.*", "{} blocks"))
        fc1 = shape(prefix + "blocks.0.mlp.fc1.weight")
        if fc1 is not None:
            checks.append((fields("mlp_dim"), tower.mlp_dim, fc1[0], prefix + "blocks.0.mlp.fc1.weight", "{} rows"))
        reg = shape(prefix + "reg_token")
        if reg is not None and len(reg) == 3:
            checks.append((fields("num_registers"), tower.num_registers, reg[1], prefix + "reg_token", "{} tokens"))
    return checks


def _block_count(tensors: dict[str, TensorInfo], prefix: str) -> int:
    """1 + the highest block index among keys ``{prefix}{i}.*`` (0 when there are none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.")
    found = [int(m.group(1)) for k in tensors if (m := pattern.match(k))]
    return max(found) + 1 if found else 0


def _defaults_taken(fields: list[str]) -> str:
    why = {
        "image_sizes": "the backbone's resolution",
        "rlrc_vision_towers": "the sizes of the timm model each tower names",
        "text_config.head_dim": "hidden_size / num_attention_heads",
        "text_config.layer_num_attention_heads": "the same heads in every layer",
        "text_config.layer_num_key_value_heads": "the same key/value heads in every layer",
        "text_config.layer_intermediate_size": "the same MLP width in every layer",
        "text_config.num_key_value_heads": "num_attention_heads",
    }
    out = []
    for f in fields:
        if f in why:
            out.append(f"{f} = {why[f]}")
        elif f.startswith("text_config."):
            out.append(f"{f}={TEXT_CONFIG_FIELDS[f.removeprefix('text_config.')].default} (transformers' "
                       "LlamaConfig default, Llama-2-7B's size)")
        else:
            out.append(f"{f} = the timm model's size")
    return "; ".join(out)


def image_stats(path: str | Path, config: VLAConfig) -> tuple[tuple[tuple[float, ...], ...], tuple[tuple[float, ...], ...]]:
    """Per-tower (means, stds) that OpenVLA's image processor actually applies.

    That is ``tvf_normalize_params[i]`` of preprocessor_config.json: the processor recomputes them
    from ``means``/``stds`` but then HF's ImageProcessingMixin restores every serialised key, so the
    stored values win. Real openvla-7b files store timm's 0.485... in ``means`` and the bf16-rounded
    0.484375... in ``tvf_normalize_params``. Fall back to ``means``/``stds``, then the tower defaults.
    """
    defaults = tuple(t.image_mean for t in config.towers), tuple(t.image_std for t in config.towers)
    pp = Path(path) / "preprocessor_config.json"
    if not pp.is_file():
        return defaults
    raw = read_json(pp)
    if not isinstance(raw, dict):
        raise CheckpointError(f"{pp}: expected a JSON object")
    tvf = raw.get("tvf_normalize_params")
    if tvf is not None:
        entries = tvf if isinstance(tvf, list) and all(isinstance(p, dict) for p in tvf) else [{}]
        means, stds = [p.get("mean") for p in entries], [p.get("std") for p in entries]
        source = "tvf_normalize_params"
    else:
        means, stds, source = raw.get("means"), raw.get("stds"), "means/stds"
    if means is None or stds is None:
        return defaults

    def three_numbers(v: Any, low: float) -> bool:
        return isinstance(v, list) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x) and x > low for x in v)

    n = len(config.towers)
    if not (isinstance(means, list) and isinstance(stds, list) and len(means) == len(stds) == n
            and all(three_numbers(m, -math.inf) and three_numbers(s, 0.0) for m, s in zip(means, stds))):
        raise CheckpointError(
            f"{pp}: {source} must give a 3-channel mean and std (finite numbers, std > 0) for each of the {n} "
            f"tower(s) config.json describes; got means={json.dumps(means)[:80]}, stds={json.dumps(stds)[:80]}. "
            "Copy preprocessor_config.json of the model's base checkpoint"
        )
    return tuple(tuple(float(v) for v in m) for m in means), tuple(tuple(float(v) for v in s) for s in stds)

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
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rlrc_runtime.config import VLAConfig
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
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON ({exc}); the file is damaged or truncated") from exc


def read_config(path: str | Path) -> VLAConfig:
    """The checkpoint's VLAConfig, with norm_stats from config.json or dataset_statistics.json."""
    path = Path(path)
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
    try:
        config = VLAConfig.from_hf_dict(raw, source=str(cfg_path))
    except ConfigError as exc:
        if str(cfg_path) in str(exc):
            raise
        raise type(exc)(f"{cfg_path}: {exc}") from exc
    if not config.norm_stats and (path / "dataset_statistics.json").is_file():
        config = config.replace(norm_stats=read_json(path / "dataset_statistics.json"))
    return config


def safetensors_header(path: Path) -> dict[str, Any]:
    """The JSON header of a .safetensors file: key -> {dtype, shape, data_offsets}."""
    try:
        with path.open("rb") as f:
            raw_len = f.read(8)
            if len(raw_len) != 8:
                raise CheckpointError(f"{path} is truncated: shorter than the 8-byte safetensors header length")
            (n,) = struct.unpack("<Q", raw_len)
            if n > 100_000_000:
                raise CheckpointError(f"{path}: header length {n} is implausible; the file is not safetensors or is damaged")
            header = json.loads(f.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{path}: the safetensors header is not valid JSON; the file is damaged") from exc
    header.pop("__metadata__", None)
    end = max((v["data_offsets"][1] for v in header.values()), default=0)
    if path.stat().st_size < 8 + n + end:
        raise CheckpointError(
            f"{path} is truncated: its header promises {8 + n + end} bytes, the file has {path.stat().st_size}; "
            "copy the file again"
        )
    return header


def weight_index(path: str | Path) -> dict[str, TensorInfo]:
    """Key -> TensorInfo over every shard, following model.safetensors.index.json when present."""
    path = Path(path)
    if (path / INDEX_FILE).is_file():
        index = read_json(path / INDEX_FILE)
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{path / INDEX_FILE} has no 'weight_map' {{key: shard file}}")
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
    """Validate a checkpoint directory's files (not yet its keys against the model)."""
    path = Path(path)
    config = read_config(path)
    if require_norm_stats and not config.norm_stats:
        raise NormStatsError(
            f"{path / 'config.json'} has no norm_stats (and there is no dataset_statistics.json), so actions "
            "cannot be unnormalized; compute them from the training data (`rlrc-sim norm-stats`) and add them"
        )
    return CheckpointInfo(path=path, config=config, tensors=weight_index(path), tokenizer_file=find_tokenizer(path))


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
        means = [p.get("mean") for p in tvf] if isinstance(tvf, list) else None
        stds = [p.get("std") for p in tvf] if isinstance(tvf, list) else None
        source = "tvf_normalize_params"
    else:
        means, stds, source = raw.get("means"), raw.get("stds"), "means/stds"
    if means is None or stds is None:
        return defaults
    if len(means) != len(config.towers) or len(stds) != len(config.towers) or any(
        m is None or s is None or len(m) != 3 or len(s) != 3 for m, s in zip(means, stds)
    ):
        raise CheckpointError(
            f"{pp}: {source} must give a 3-channel mean and std for each of the {len(config.towers)} "
            f"tower(s) config.json describes"
        )
    return tuple(tuple(float(v) for v in m) for m in means), tuple(tuple(float(v) for v in s) for s in stds)

"""Load and save OpenVLA checkpoints (HF directory layout) into ``export.model.OpenVLA``.

Loading is memory-frugal: the model is built on the meta device (no allocation), every stored key
and shape is checked against it from the safetensors headers before any data is read, and then
each tensor is read from the memory-mapped shard, cast to the requested dtype and placed into the
model one at a time. Peak memory is the model plus one tensor, never two copies of the model.
"""
from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from export.model import OpenVLA
from rlrc_runtime.checkpoint import INDEX_FILE, SINGLE_FILE, TOKENIZER_FILES, CheckpointInfo, read_checkpoint
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import CheckpointError, ConfigError, KeyMismatchError, ShapeMismatchError

log = logging.getLogger(__name__)

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16}

# Older spellings of our keys: original Prismatic / timm checkpoints store LayerScale as ``gamma``.
KEY_RENAMES = ((".ls1.gamma", ".ls1.scale_factor"), (".ls2.gamma", ".ls2.scale_factor"))


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ConfigError(f"dtype={dtype!r} is not supported; choose one of {sorted(set(DTYPES))}")
    return DTYPES[dtype]


def map_key(key: str) -> str:
    """A stored key -> our module's parameter name."""
    for old, new in KEY_RENAMES:
        if key.endswith(old):
            return key[: -len(old)] + new
    return key


def expected_shapes(model: OpenVLA) -> dict[str, tuple[int, ...]]:
    return {name: tuple(t.shape) for name, t in model.state_dict().items()}


def check_keys(info: CheckpointInfo, expected: dict[str, tuple[int, ...]]) -> None:
    """Raise KeyMismatchError / ShapeMismatchError naming file, key and shapes."""
    stored = {map_key(k): (k, t) for k, t in info.tensors.items()}
    missing = sorted(set(expected) - set(stored))
    unexpected = sorted(set(stored) - set(expected))
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing (e.g. {missing[:3]})")
        if unexpected:
            k, t = stored[unexpected[0]]
            parts.append(f"{len(unexpected)} unexpected (e.g. {k!r} in {t.file})")
        raise KeyMismatchError(
            f"{info.path}: weights do not match config.json: {'; '.join(parts)}. The config and the weights "
            "come from different models, or the checkpoint is incomplete"
        )
    for name, shape in expected.items():
        key, t = stored[name]
        if t.shape != shape:
            raise ShapeMismatchError(
                f"{info.path / t.file}: {key!r} has shape {list(t.shape)}, config.json implies {list(shape)}; "
                "config.json does not describe these weights (e.g. a pruned model saved without its per-layer widths)"
            )


def _set_tensor(model: torch.nn.Module, name: str, value: torch.Tensor) -> None:
    *path, leaf = name.split(".")
    module = model.get_submodule(".".join(path)) if path else model
    if leaf in module._parameters:
        module._parameters[leaf] = torch.nn.Parameter(value, requires_grad=value.is_floating_point())
    else:
        module._buffers[leaf] = value


def load_model(
    path: str | Path,
    dtype: str | torch.dtype = "float32",
    device: str | torch.device = "cpu",
    require_norm_stats: bool = True,
    progress: bool = False,
) -> tuple[OpenVLA, CheckpointInfo]:
    """Load a checkpoint directory -> (model in eval mode, its CheckpointInfo)."""
    torch_dtype = resolve_dtype(dtype)
    info = read_checkpoint(path, require_norm_stats=require_norm_stats)
    with torch.device("meta"):
        model = OpenVLA(info.config)
    check_keys(info, expected_shapes(model))
    by_file: dict[str, list[str]] = {}
    for key, t in info.tensors.items():
        by_file.setdefault(t.file, []).append(key)
    bar = _progress(len(info.tensors), f"loading {info.path.name}", progress)
    for file, keys in sorted(by_file.items()):
        try:
            with safe_open(str(info.path / file), framework="pt", device="cpu") as f:
                for key in keys:
                    tensor = f.get_tensor(key)
                    if tensor.is_floating_point():
                        tensor = tensor.to(device=device, dtype=torch_dtype)
                    _set_tensor(model, map_key(key), tensor.to(device))
                    bar.update(1)
        except SafetensorError as exc:  # the file changed after its header was validated, or a dtype torch lacks
            raise CheckpointError(f"{info.path / file}: safetensors cannot read it ({exc}); copy the file "
                                  "again") from exc
    bar.close()
    model.reset_non_persistent_buffers()
    model.eval()
    return model, info


def save_checkpoint(
    model: OpenVLA,
    out: str | Path,
    tokenizer_dir: str | Path,
    config: VLAConfig | None = None,
    dtype: str | torch.dtype | None = None,
    max_shard_bytes: int = 2 * 1024**3,
    overwrite: bool = False,
) -> Path:
    """Write ``model`` as an OpenVLA checkpoint directory (the same layout ``load_model`` reads).

    The directory is assembled next to ``out`` and renamed into place, so an interrupted save
    never leaves a half-written checkpoint where a good one was expected.
    """
    out = Path(out)
    config = config or model.config
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; choose another --out or pass overwrite")
    torch_dtype = resolve_dtype(dtype) if dtype is not None else None
    tensors = {}
    for name, t in model.state_dict().items():
        t = t.detach().to("cpu")
        if torch_dtype is not None and t.is_floating_point():
            t = t.to(torch_dtype)
        tensors[name] = t.contiguous()
    shards = _plan_shards(tensors, max_shard_bytes)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        weight_map: dict[str, str] = {}
        for i, keys in enumerate(shards):
            name = SINGLE_FILE if len(shards) == 1 else f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
            save_file({k: tensors[k] for k in keys}, str(tmp / name), metadata={"format": "pt"})
            weight_map.update({k: name for k in keys})
        if len(shards) > 1:
            total = sum(t.numel() * t.element_size() for t in tensors.values())
            _write_json(tmp / INDEX_FILE, {"metadata": {"total_size": total}, "weight_map": weight_map})
        hf = config.to_hf_dict()
        hf["torch_dtype"] = str(next(iter(tensors.values())).dtype).removeprefix("torch.")
        _write_json(tmp / "config.json", hf)
        if config.norm_stats:
            _write_json(tmp / "dataset_statistics.json", config.norm_stats)
        _write_json(tmp / "preprocessor_config.json", preprocessor_config(config))
        copied = copy_tokenizer(tokenizer_dir, tmp)
        if not copied:
            raise CheckpointError(f"{tokenizer_dir} holds no tokenizer files ({', '.join(TOKENIZER_FILES)})")
        if out.exists():
            shutil.rmtree(out)
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log.info("saved checkpoint %s (%d shard(s))", out, len(shards))
    return out


def copy_tokenizer(src: str | Path, dst: str | Path) -> list[str]:
    src, dst = Path(src), Path(dst)
    copied = []
    for name in TOKENIZER_FILES:
        if (src / name).is_file():
            shutil.copy2(src / name, dst / name)
            copied.append(name)
    return copied


def preprocessor_config(config: VLAConfig) -> dict:
    """OpenVLA's preprocessor_config.json (PrismaticImageProcessor) for this model."""
    s = config.image_size
    return {
        "image_processor_type": "PrismaticImageProcessor",
        "processor_class": "PrismaticProcessor",
        "image_resize_strategy": config.image_resize_strategy,
        "use_fused_vision_backbone": config.use_fused_vision_backbone,
        "input_sizes": [[3, s, s] for _ in config.towers],
        "interpolations": ["bicubic" for _ in config.towers],
        "means": [list(t.image_mean) for t in config.towers],
        "stds": [list(t.image_std) for t in config.towers],
        "tvf_do_letterbox": False,
        "tvf_letterbox_fill": None,
        "tvf_resize_params": [
            {"antialias": True, "interpolation": 3, "max_size": None, "size": [s, s]} for _ in config.towers
        ],
        "tvf_crop_params": [{"output_size": [s, s]} for _ in config.towers],
        "tvf_normalize_params": [
            {"inplace": False, "mean": list(t.image_mean), "std": list(t.image_std)} for t in config.towers
        ],
    }


def _plan_shards(tensors: dict[str, torch.Tensor], max_bytes: int) -> list[list[str]]:
    shards: list[list[str]] = [[]]
    size = 0
    for key, t in tensors.items():
        n = t.numel() * t.element_size()
        if shards[-1] and size + n > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(key)
        size += n
    return shards


def _write_json(path: Path, obj: object) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


class _NullBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return _NullBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="tensor")

"""Writing bundle directories: graphs with shared external weights, I/O specs, versions, manifest.

Prefill and decode run the same LLM weights. Each graph keeps its own (exporter-named)
initializers, but ``save_graphs`` writes every distinct tensor once into one data file, keyed by
its content, and points both graphs at the same offsets: the weights are stored once on disk
whatever the exporter or the quantizer named them. Offsets are page-aligned so a runtime may map
the file instead of reading it.
"""
from __future__ import annotations

import dataclasses
import datetime as _dt
import hashlib
import importlib.metadata
import logging
import os
import shlex
import shutil
import sys
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from rlrc_runtime.checkpoint import TOKENIZER_FILES
from rlrc_runtime.errors import CheckpointError
from rlrc_runtime.manifest import (
    MANIFEST_FILE,
    GraphSpec,
    Manifest,
    TensorSpec,
    read_manifest,
    write_manifest,
)

log = logging.getLogger(__name__)

ALIGN = 4096
EXTERNAL_MIN_BYTES = 1024  # smaller tensors stay inside the graph file


def onnx_dtype_name(elem_type: int) -> str:
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type)).name


def io_specs(model: onnx.ModelProto) -> tuple[tuple[TensorSpec, ...], tuple[TensorSpec, ...]]:
    """Graph inputs and outputs -> TensorSpecs (dynamic axes keep their names)."""

    def spec(v: onnx.ValueInfoProto) -> TensorSpec:
        t = v.type.tensor_type
        dims = tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim)
        return TensorSpec(name=v.name, shape=dims, dtype=onnx_dtype_name(t.elem_type))

    inits = {i.name for i in model.graph.initializer}
    return (
        tuple(spec(v) for v in model.graph.input if v.name not in inits),
        tuple(spec(v) for v in model.graph.output),
    )


def _raw_bytes(t: onnx.TensorProto) -> bytes:
    if t.data_location == onnx.TensorProto.EXTERNAL:
        raise CheckpointError(f"initializer {t.name!r} still points at external data; load the model with its data first")
    if t.HasField("raw_data"):
        return t.raw_data
    return numpy_helper.to_array(t).tobytes()


def initializer_bytes(model: onnx.ModelProto) -> int:
    """Bytes of every initializer of a model (loaded with its data)."""
    return sum(len(_raw_bytes(t)) for t in model.graph.initializer)


def save_graphs(out_dir: Path, models: Mapping[str, onnx.ModelProto], data_file: str) -> dict[str, int]:
    """Write ``{name}.onnx`` for each model, their large initializers deduplicated into ``data_file``.

    Returns each graph's weight bytes (what one run reads). Models are modified in place.
    """
    out_dir = Path(out_dir)
    weight_bytes: dict[str, int] = {}
    offsets: dict[str, tuple[int, int]] = {}  # content key -> (offset, length)
    with (out_dir / data_file).open("wb") as f:
        for name, model in models.items():
            total = 0
            for t in model.graph.initializer:
                raw = _raw_bytes(t)
                total += len(raw)
                if len(raw) < EXTERNAL_MIN_BYTES:
                    continue
                key = hashlib.sha256(raw).hexdigest() + f"/{t.data_type}/{tuple(t.dims)}"
                if key not in offsets:
                    pos = f.tell()
                    pad = (-pos) % ALIGN
                    f.write(b"\0" * pad)
                    offsets[key] = (pos + pad, len(raw))
                    f.write(raw)
                offset, length = offsets[key]
                # Keep dims and dtype; move the bytes out.
                t.ClearField("raw_data")
                for fld in ("float_data", "int32_data", "int64_data", "double_data", "uint64_data", "string_data"):
                    t.ClearField(fld)
                t.data_location = onnx.TensorProto.EXTERNAL
                del t.external_data[:]
                for k, v in (("location", data_file), ("offset", str(offset)), ("length", str(length))):
                    entry = t.external_data.add()
                    entry.key, entry.value = k, v
            weight_bytes[name] = total
            onnx.save_model(model, str(out_dir / f"{name}.onnx"))
    log.info("wrote %s: %d distinct tensors, %.1f MiB, read by %s", data_file, len(offsets),
             (out_dir / data_file).stat().st_size / 2**20, ", ".join(f"{n}.onnx" for n in models))
    return weight_bytes


def load_graph(bundle: Path, spec: GraphSpec) -> onnx.ModelProto:
    """A bundle graph with its external weights loaded into memory."""
    return onnx.load(str(Path(bundle) / spec.file), load_external_data=True)


def graph_spec(model: onnx.ModelProto, file: str, precision: str, data_files: tuple[str, ...], weight_bytes: int) -> GraphSpec:
    inputs, outputs = io_specs(model)
    return GraphSpec(file=file, inputs=inputs, outputs=outputs, precision=precision, data_files=data_files,
                     weight_bytes=weight_bytes)


def copy_tokenizer_files(src: Path, dst: Path) -> list[str]:
    copied = []
    for name in TOKENIZER_FILES:
        if (Path(src) / name).is_file():
            shutil.copy2(Path(src) / name, Path(dst) / name)
            copied.append(name)
    if not copied:
        raise CheckpointError(f"{src} holds no tokenizer files ({', '.join(TOKENIZER_FILES)}); a bundle needs one")
    return copied


def tool_versions(*extra: str) -> dict[str, str]:
    """Versions of the packages that shaped the bundle (absent ones are left out)."""
    out = {"python": sys.version.split()[0]}
    for pkg in ("rlrc_runtime", "torch", "onnx", "onnxscript", "onnxruntime", "numpy", *extra):
        try:
            out[pkg] = importlib.metadata.version(pkg)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


def stage_record(stage: str, config: Any, command: str | None = None, **facts: Any) -> dict[str, Any]:
    """One provenance entry for manifest.stages: the stage, its resolved config, the command line."""
    cfg = dataclasses.asdict(config) if dataclasses.is_dataclass(config) else dict(config)
    return {"stage": stage, "config": cfg, "command": command or shlex.join(["rlrc-export", stage]),
            "time": now_iso(), **facts}


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).replace(microsecond=0).isoformat()


def prepare_out(out: Path, overwrite: bool) -> Path:
    """A fresh temporary directory next to ``out``; ``finish_out`` moves it into place."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; pass --overwrite (overwrite=True) or choose another --out")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    return tmp


def finish_out(tmp: Path, out: Path) -> Path:
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)
    return out


def write_bundle(tmp: Path, out: Path, manifest: Manifest) -> Path:
    """Hash the files in ``tmp``, write its manifest and move it to ``out``."""
    write_manifest(tmp, dataclasses.replace(manifest, created=now_iso()))
    return finish_out(tmp, Path(out))


def copy_bundle_except(src: Path, dst: Path, skip: set[str]) -> None:
    """Copy a bundle's files (not the manifest, not ``skip``) into ``dst``."""
    for p in sorted(Path(src).rglob("*")):
        rel = p.relative_to(src).as_posix()
        if not p.is_file() or rel == MANIFEST_FILE or rel in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst / rel)


__all__ = [
    "copy_bundle_except", "copy_tokenizer_files", "finish_out", "graph_spec", "initializer_bytes", "io_specs",
    "load_graph", "now_iso", "prepare_out", "read_manifest", "save_graphs", "stage_record", "tool_versions",
    "write_bundle",
]

"""Writing bundle directories: graphs with shared external weights, I/O specs, versions, manifest.

Prefill and decode run the same LLM weights. Each graph keeps its own (exporter-named)
initializers, but ``save_graphs`` writes every distinct tensor once into one data file, keyed by
its content, and points both graphs at the same offsets: the weights are stored once on disk
whatever the exporter or the quantizer named them. Offsets are page-aligned so a runtime may map
the file instead of reading it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import fcntl
import hashlib
import importlib.metadata
import logging
import os
import shlex
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import onnx
from onnx import numpy_helper

from rlrc_runtime.checkpoint import TOKENIZER_FILES
from rlrc_runtime.errors import CheckpointError, MissingFileError
from rlrc_runtime.manifest import (
    MANIFEST_FILE,
    MANIFEST_HASH_FILE,
    GraphSpec,
    Manifest,
    TensorSpec,
    read_manifest,
    sha256_file,
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


def content_digest(*paths: Path) -> str:
    """sha256 over the content of files and directory trees (relative names included), in order."""
    h = hashlib.sha256()
    for path in paths:
        path = Path(path)
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        if not path.exists() or not files:
            raise MissingFileError(f"{path} does not exist or holds no files; check the path")
        for f in files:
            h.update(f.relative_to(path).as_posix().encode() if path.is_dir() else b"")
            h.update(b"\0" + sha256_file(f).encode())
    return h.hexdigest()


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


class ExportBusyError(CheckpointError):
    """Another export holds the lock of the same output directory."""


_HELD: dict[Path, tuple[int, int]] = {}  # lock file -> (fd, depth): the locks this process holds


def _lock_path(out: Path) -> Path:
    out = Path(out).absolute()
    return out.parent / f".{out.name}.lock"


def lock_out(out: Path) -> None:
    """Take the exclusive lock of ``out`` (``.NAME.lock`` beside it), or raise ExportBusyError.

    Re-entrant within one process (the pipeline holds it while its stages take it again); the
    kernel releases it when the process dies, so a killed export never leaves a stale lock (its
    file may stay behind, unlocked; the next export takes it over).
    """
    path = _lock_path(out)
    if path in _HELD:
        fd, depth = _HELD[path]
        _HELD[path] = (fd, depth + 1)
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise ExportBusyError(
                f"{out} is being written by another export ({holder}); wait for it to finish or choose another --out"
            ) from None
        try:
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder released and removed this lock file while we waited: take a new one
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()} since {now_iso()}".encode(), 0)
    _HELD[path] = (fd, 1)


def unlock_out(out: Path) -> None:
    """Release one hold of ``out``'s lock (the last one closes it)."""
    path = _lock_path(out)
    if path not in _HELD:  # already released (a failed finish_out released it before raising)
        return
    fd, depth = _HELD[path]
    if depth > 1:
        _HELD[path] = (fd, depth - 1)
        return
    del _HELD[path]
    path.unlink(missing_ok=True)  # while still locked, so a waiting export retries on a fresh file
    os.close(fd)


@contextlib.contextmanager
def exclusive_out(out: Path) -> Iterator[None]:
    """Hold ``out``'s export lock for the duration of the block."""
    lock_out(out)
    try:
        yield
    finally:
        unlock_out(out)


def private_dir(out: Path, kind: str) -> Path:
    """A new directory ``.NAME.KIND-XXXX`` beside ``out``, after removing the ones a killed export left.

    Call with ``out``'s lock held: no other export can be using a directory of that pattern then.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for stale in out.parent.glob(f".{out.name}.{kind}-*"):
        log.info("removing %s, left by an interrupted export", stale)
        shutil.rmtree(stale, ignore_errors=True)
    return Path(tempfile.mkdtemp(prefix=f".{out.name}.{kind}-", dir=out.parent))


def prepare_out(out: Path, overwrite: bool) -> Path:
    """Lock ``out`` and return a private temporary directory beside it; ``finish_out`` moves it into
    place, ``abandon_out`` removes it. Until then ``out`` is untouched."""
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise CheckpointError(f"{out} exists and is not empty; pass --overwrite (overwrite=True) or choose another --out")
    lock_out(out)
    try:
        return private_dir(out, "tmp")
    except BaseException:
        unlock_out(out)
        raise


def finish_out(tmp: Path, out: Path) -> Path:
    """Move the finished ``tmp`` to ``out`` (an old ``out`` is moved aside first, then deleted) and unlock."""
    out = Path(out)
    try:
        old = None
        if out.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
            os.replace(out, old / out.name)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        unlock_out(out)
    return out


def abandon_out(tmp: Path, out: Path) -> None:
    """Remove an unfinished ``tmp`` and release ``out``'s lock (``out`` is left as it was)."""
    shutil.rmtree(tmp, ignore_errors=True)
    unlock_out(out)


def write_bundle(tmp: Path, out: Path, manifest: Manifest) -> Path:
    """Hash the files in ``tmp``, write its manifest and move it to ``out``."""
    write_manifest(tmp, dataclasses.replace(manifest, created=now_iso()))
    return finish_out(tmp, Path(out))


def copy_bundle_except(src: Path, dst: Path, skip: set[str]) -> None:
    """Copy a bundle's files (not the manifest, not ``skip``) into ``dst``."""
    for p in sorted(Path(src).rglob("*")):
        rel = p.relative_to(src).as_posix()
        if not p.is_file() or rel in (MANIFEST_FILE, MANIFEST_HASH_FILE) or rel in skip:
            continue
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst / rel)


__all__ = [
    "ExportBusyError", "abandon_out", "content_digest", "copy_bundle_except", "copy_tokenizer_files", "exclusive_out",
    "finish_out",
    "graph_spec", "initializer_bytes", "io_specs", "load_graph", "now_iso", "prepare_out", "private_dir",
    "read_manifest", "save_graphs", "stage_record", "tool_versions", "write_bundle",
]

"""The bundle's ``manifest.json``: every fact a consumer of a bundle needs, written from one dataclass.

A bundle is one self-describing directory (design.md §2)::

    manifest.json          this file (Manifest below)
    tokenizer.json ...     the tokenizer files of the checkpoint
    vision.onnx            pixel_values -> projected patches      (+ vision.onnx.data, its weights)
    prefill.onnx           [BOS, patches, prompt] -> first token + keys/values
    decode.onnx            token + position + static cache -> next token + this step's keys/values
    llm.onnx.data          the LLM weights, stored once and read by both prefill.onnx and decode.onnx
    embed_tokens.npy       [vocab, hidden] text embeddings, when they are looked up on the host
    engines/*.plan         TensorRT engines (built on the target by `rlrc-export engine`)

Torch-free: the runtime reads it on the robot. Loading verifies, before anything is used:

- ``manifest.sha256`` (beside it): the sha256 of manifest.json itself, so an edit to any fact in
  it (norm_stats included) is refused; the digest is also the bundle's id in the ROS node's
  diagnostics, so a deployment can pin the exact bundle it was tested with;
- every path the manifest names is relative and stays inside the bundle (no absolute paths, no
  ``..``, no symlink that leads out), and every file a backend opens is listed in ``files``;
- every file of the bundle is listed, and its sha256 matches (a dropped entry does not let an
  edited file through);
- for engines, the TensorRT version and the GPU compute capability they were built for.

A mismatch is an error that says how to rebuild.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import CheckpointError, ConfigError, MissingFileError

log = logging.getLogger(__name__)

MANIFEST_FILE = "manifest.json"
MANIFEST_HASH_FILE = "manifest.sha256"
RUNTIME_CACHE_DIRS = ("ort_trt_cache",)
"""Directories a runtime writes into a bundle (onnxruntime's TensorRT engine cache); not hashed."""
FORMAT_VERSION = 1
PRECISIONS = ("fp32", "fp16", "int8", "int4")
HASH_CHUNK = 8 * 1024 * 1024


class BundleError(CheckpointError):
    """A bundle directory cannot be used as it is (manifest missing, malformed, or inconsistent)."""


class ChecksumError(BundleError):
    """A bundle file's sha256 differs from the one manifest.json recorded."""


class EngineMismatchError(BundleError):
    """An engine was built for another TensorRT version or GPU architecture than this machine's."""


@dataclass(frozen=True)
class TensorSpec:
    """One graph input or output."""

    name: str
    """Tensor name in the graph."""
    shape: tuple[int | str, ...]
    """Dimensions; a string names a dynamic axis (e.g. 'seq')."""
    dtype: str
    """numpy dtype name: 'float32', 'float16', 'int64'."""


@dataclass(frozen=True)
class GraphSpec:
    """One ONNX graph of the bundle."""

    file: str
    """Graph file, relative to the bundle."""
    inputs: tuple[TensorSpec, ...]
    """Inputs in graph order."""
    outputs: tuple[TensorSpec, ...]
    """Outputs in graph order."""
    precision: str
    """'fp32', 'fp16', 'int8' (dynamic, MatMulInteger) or 'int4' (weight-only, MatMulNBits)."""
    data_files: tuple[str, ...] = ()
    """External weight files the graph reads (shared between prefill and decode)."""
    weight_bytes: int = 0
    """Bytes of weights (initializers) the graph reads on every run: the roofline's numerator."""

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ConfigError(f"graph {self.file}: precision={self.precision!r} is not one of {PRECISIONS}")


@dataclass(frozen=True)
class EngineSpec:
    """A TensorRT engine built from one graph, on (and for) one kind of GPU."""

    file: str
    """Serialized engine (.plan), relative to the bundle."""
    graph: str
    """Name of the graph it was built from ('vision', 'prefill', 'decode')."""
    tensorrt_version: str
    """TensorRT version that built it; engines only load with the same version."""
    compute_capability: str
    """GPU compute capability it was built for, e.g. '8.7' (Orin), '9.0' (H100), '11.0' (Thor)."""
    device_name: str
    """Name of the GPU that built it."""
    precision: str
    """Builder precision flags: 'fp32', 'fp16', 'int8', 'fp8' or 'int4'."""
    timing_cache: str | None = None
    """Timing cache file reused by later builds on the same device."""


@dataclass(frozen=True)
class LLMSpec:
    """How the runtime drives prefill and decode."""

    max_seq_len: int
    """Static cache length S_max: 1 + patches + prompt + generated tokens must fit."""
    embeddings: str
    """'host' (the runtime looks text embeddings up in ``embed_file``) or 'graph' (ids go in)."""
    head: str
    """'full' (argmax over the whole vocabulary, as OpenVLA) or 'action' (over the action rows only)."""
    head_offset: int
    """Id of the head's first row (0 for 'full', vocab - n_bins for 'action')."""
    cache_layers: tuple[int, ...]
    """Layers that keep attention and therefore a cache, in the order of the cache tensors."""
    kv_heads: tuple[int, ...]
    """Key/value heads of each cache layer."""
    head_dim: int
    """Width of one key/value head."""
    cache_dtype: str
    """numpy dtype of the cache and of the embeddings fed to the graphs."""
    embed_file: str | None = None
    """[vocab, hidden] .npy table, with embeddings='host'."""
    embed_quant: str = "none"
    """Storage of the host table: 'none', 'int8' or 'int4' (per-row scales; rlrc_runtime.embeddings)."""
    embed_scale_file: str | None = None
    """float32 [vocab] row scales of a quantized host table."""
    decoding: str = "autoregressive"
    """'autoregressive' (prefill + decode graphs, one token per pass) or 'parallel' (one chunk graph)."""
    chunk_tokens: int = 0
    """Action tokens the chunk graph emits per pass (K x action dimensions), with decoding='parallel'."""

    def __post_init__(self) -> None:
        if self.embeddings not in ("host", "graph"):
            raise ConfigError(f"llm.embeddings={self.embeddings!r}; expected 'host' or 'graph'")
        if self.head not in ("full", "action"):
            raise ConfigError(f"llm.head={self.head!r}; expected 'full' or 'action'")
        if self.embeddings == "host" and not self.embed_file:
            raise ConfigError("llm.embeddings='host' needs llm.embed_file (the [vocab, hidden] .npy table)")
        if self.embed_quant not in ("none", "int8", "int4"):
            raise ConfigError(f"llm.embed_quant={self.embed_quant!r}; expected 'none', 'int8' or 'int4'")
        if self.embed_quant != "none" and not self.embed_scale_file:
            raise ConfigError(f"llm.embed_quant={self.embed_quant!r} needs llm.embed_scale_file (the row scales)")
        if self.decoding not in ("autoregressive", "parallel"):
            raise ConfigError(f"llm.decoding={self.decoding!r}; expected 'autoregressive' or 'parallel'")
        if (self.decoding == "parallel") != (self.chunk_tokens > 0):
            raise ConfigError(f"llm.chunk_tokens={self.chunk_tokens} with llm.decoding={self.decoding!r}: a parallel "
                              "bundle emits chunk_tokens > 0 tokens per pass, an autoregressive one has none")
        if len(self.cache_layers) != len(self.kv_heads):
            raise ConfigError(f"llm.cache_layers {self.cache_layers} and llm.kv_heads {self.kv_heads} differ in length")


@dataclass(frozen=True)
class Manifest:
    """Everything a bundle's consumer needs; nothing downstream guesses a fact from a file name."""

    model_config: dict[str, Any]
    """The model's config.json (HF OpenVLA layout + per-layer widths), without norm_stats."""
    norm_stats: dict[str, Any]
    """Per-dataset action statistics (OpenVLA's schema) used to unnormalize actions."""
    prompt: dict[str, Any]
    """{'template', 'bos_token_id', 'add_bos', 'append_token_id'}."""
    image: dict[str, Any]
    """{'size', 'means', 'stds', 'resize'}: the preprocessing the vision graph expects."""
    action: dict[str, Any]
    """{'vocab_size', 'n_bins', 'first_token'}: OpenVLA's action tokenizer."""
    llm: LLMSpec
    """Cache and embedding layout."""
    graphs: dict[str, GraphSpec]
    """'vision' and the LLM graphs: 'prefill' + 'decode' (autoregressive) or 'chunk' (parallel)."""
    engines: dict[str, EngineSpec] = field(default_factory=dict)
    """TensorRT engines by graph name (empty until `rlrc-export engine` runs on the target)."""
    files: dict[str, str] = field(default_factory=dict)
    """sha256 of every file of the bundle except manifest.json, by relative path."""
    versions: dict[str, str] = field(default_factory=dict)
    """Versions of the tools that wrote the bundle (torch, onnx, onnxruntime, tensorrt, ...)."""
    stages: tuple[dict[str, Any], ...] = ()
    """Provenance: each stage that produced the bundle with its resolved config and command."""
    created: str = ""
    """UTC time the manifest was written (ISO 8601)."""
    format_version: int = FORMAT_VERSION
    """Schema version of this file."""

    def __post_init__(self) -> None:
        want = {"vision", *self.llm_graphs}
        if set(self.graphs) != want:
            raise ConfigError(f"manifest graphs are {sorted(self.graphs)}; a bundle with {self.llm.decoding} decoding "
                              f"has {sorted(want)}")
        for rel, where in {**{f: "files" for f in self.files}, **self.referenced_files()}.items():
            check_relative(rel, where)

    @property
    def llm_graphs(self) -> tuple[str, ...]:
        """Names of the graphs that hold the LLM weights (stored once, in llm.onnx.data)."""
        return ("chunk",) if self.llm.decoding == "parallel" else ("prefill", "decode")

    @property
    def precision(self) -> str:
        """The LLM graphs' precision (what `rlrc-export quantize` changes)."""
        return self.graphs[self.llm_graphs[0]].precision

    def referenced_files(self) -> dict[str, str]:
        """Every file a backend opens, by relative path -> what names it."""
        out: dict[str, str] = {}
        for name, g in self.graphs.items():
            out[g.file] = f"graphs.{name}.file"
            out.update({d: f"graphs.{name}.data_files" for d in g.data_files})
        for key in ("embed_file", "embed_scale_file"):
            if getattr(self.llm, key):
                out[getattr(self.llm, key)] = f"llm.{key}"
        for name, e in self.engines.items():
            out[e.file] = f"engines.{name}.file"
            if e.timing_cache:
                out[e.timing_cache] = f"engines.{name}.timing_cache"
        return out

    def vla_config(self) -> VLAConfig:
        return VLAConfig.from_hf_dict({**self.model_config, "norm_stats": self.norm_stats}, source=MANIFEST_FILE)

    def weight_bytes(self) -> dict[str, int]:
        """Bytes of weights each graph reads per run, plus the total stored on disk."""
        out = {name: g.weight_bytes for name, g in self.graphs.items()}
        return out

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any], source: str = MANIFEST_FILE) -> "Manifest":
        if not isinstance(raw, Mapping):
            raise BundleError(f"{source} holds a JSON {type(raw).__name__}, not an object; {rebuild_hint(None)}")
        try:
            version = raw.get("format_version", 0)
            if type(version) is not int:
                raise BundleError(f"{source}: format_version={version!r} is not an integer; {rebuild_hint(None)}")
            if version != FORMAT_VERSION:
                raise BundleError(
                    f"{source}: format_version={version}, this rlrc_runtime reads version {FORMAT_VERSION}; "
                    "re-export the bundle with this version (rlrc-export pipeline ...)"
                )

            def tensors(items: Any) -> tuple[TensorSpec, ...]:
                return tuple(TensorSpec(name=t["name"], shape=tuple(t["shape"]), dtype=t["dtype"]) for t in items)

            graphs = {
                name: GraphSpec(file=g["file"], inputs=tensors(g["inputs"]), outputs=tensors(g["outputs"]),
                                precision=g["precision"], data_files=tuple(g.get("data_files", ())),
                                weight_bytes=int(g.get("weight_bytes", 0)))
                for name, g in raw["graphs"].items()
            }
            llm = dict(raw["llm"])
            llm["cache_layers"] = tuple(llm["cache_layers"])
            llm["kv_heads"] = tuple(llm["kv_heads"])
            return cls(
                model_config=dict(raw["model_config"]),
                norm_stats=dict(raw["norm_stats"] or {}),
                prompt=dict(raw["prompt"]),
                image=dict(raw["image"]),
                action=dict(raw["action"]),
                llm=LLMSpec(**llm),
                graphs=graphs,
                engines={name: EngineSpec(**e) for name, e in (raw.get("engines") or {}).items()},
                files=dict(raw.get("files") or {}),
                versions=dict(raw.get("versions") or {}),
                stages=tuple(raw.get("stages") or ()),
                created=str(raw.get("created", "")),
                format_version=version,
            )
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            if isinstance(exc, ConfigError):
                raise
            raise BundleError(
                f"{source} is malformed ({type(exc).__name__}: {exc}); it was not written by rlrc-export or was "
                "edited by hand. Re-export the bundle (rlrc-export pipeline --checkpoint CKPT --out BUNDLE)"
            ) from exc


def is_bundle(path: str | Path) -> bool:
    """True when ``path`` is a directory holding a manifest.json."""
    return (Path(path) / MANIFEST_FILE).is_file()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def rebuild_hint(manifest: Manifest | None) -> str:
    """The command that made this bundle, for error messages."""
    if manifest is not None:
        commands = [s.get("command") for s in manifest.stages if s.get("command")]
        if commands:
            return "rebuild it with: " + " && ".join(commands)
    return "rebuild it with: rlrc-export pipeline --checkpoint CKPT --out BUNDLE"


def check_relative(rel: str, where: str) -> None:
    """Raise BundleError unless ``rel`` is a plain relative path inside the bundle."""
    if not isinstance(rel, str) or not rel or Path(rel).is_absolute() or ".." in Path(rel).parts or "\\" in rel:
        raise BundleError(
            f"manifest.json {where} names {rel!r}: bundle paths must be relative and stay inside the bundle (no "
            f"absolute paths, no '..'); the manifest was edited or forged. {rebuild_hint(None)}"
        )


def _bundle_files(bundle: Path) -> list[str]:
    """Relative paths of the files a manifest must list (all but the manifest, its hash and runtime caches)."""
    out = []
    for p in sorted(bundle.rglob("*")):
        rel = p.relative_to(bundle)
        if rel.parts[0] in RUNTIME_CACHE_DIRS or rel.as_posix() in (MANIFEST_FILE, MANIFEST_HASH_FILE):
            continue
        if p.is_file() or p.is_symlink():
            out.append(rel.as_posix())
    return out


def verify_files(bundle: Path, manifest: Manifest) -> None:
    """Raise MissingFileError / ChecksumError / BundleError unless every file of the bundle is listed,
    present, inside the bundle and intact, and every file the manifest names is among them."""
    fix = rebuild_hint(manifest)
    for rel, where in sorted(manifest.referenced_files().items()):
        if rel not in manifest.files:
            raise BundleError(f"{bundle / rel} ({where}) is not listed in manifest.json files, so it cannot be "
                              f"verified; the manifest was edited. {fix}")
    unlisted = sorted(set(_bundle_files(bundle)) - set(manifest.files))
    if unlisted:
        raise BundleError(f"{bundle} holds files that manifest.json does not list: {unlisted}; they were added or "
                          f"their entries removed after export. Remove them, or {fix}")
    root = bundle.resolve()
    for rel, digest in sorted(manifest.files.items()):
        path = bundle / rel
        if not path.resolve().is_relative_to(root):
            raise BundleError(f"bundle file {path} leads outside the bundle (to {path.resolve()}); {fix}")
        if not path.is_file():
            raise MissingFileError(f"bundle file {path} is missing (listed in {bundle / MANIFEST_FILE}); {fix}")
        actual = sha256_file(path)
        if actual != digest:
            raise ChecksumError(
                f"bundle file {path}: sha256 {actual[:16]}… differs from {digest[:16]}… recorded in manifest.json; "
                f"the file was modified or damaged after export. Copy the bundle again, or {fix}"
            )


def _verify_manifest_hash(bundle: Path, text: bytes) -> None:
    hpath = bundle / MANIFEST_HASH_FILE
    if not hpath.is_file():
        raise MissingFileError(f"{hpath} is missing, so manifest.json cannot be verified; copy the whole bundle "
                               f"directory, or {rebuild_hint(None)}")
    recorded = hpath.read_text().split()[0] if hpath.read_text().split() else ""
    actual = hashlib.sha256(text).hexdigest()
    if actual != recorded:
        raise ChecksumError(f"{bundle / MANIFEST_FILE}: sha256 {actual[:16]}… differs from {recorded[:16]}… in "
                            f"{MANIFEST_HASH_FILE}; manifest.json was edited after export (norm_stats, paths or "
                            f"checksums). Copy the bundle again, or {rebuild_hint(None)}")


def read_manifest(path: str | Path, verify: bool = True) -> Manifest:
    """Read (and by default verify: its own hash, every file's listing and sha256) a bundle's manifest.json."""
    bundle = Path(path)
    mpath = bundle / MANIFEST_FILE
    if not mpath.is_file():
        raise MissingFileError(
            f"{bundle} has no {MANIFEST_FILE}, so it is not a bundle; export one with "
            "`rlrc-export pipeline --checkpoint CKPT --out BUNDLE`"
        )
    text = mpath.read_bytes()
    if verify:
        _verify_manifest_hash(bundle, text)
    try:
        raw = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath} is not valid JSON ({exc}); the file is damaged. {rebuild_hint(None)}") from exc
    manifest = Manifest.from_dict(raw, source=str(mpath))
    if verify:
        verify_files(bundle, manifest)
    return manifest


def write_manifest(bundle: str | Path, manifest: Manifest, hash_files: bool = True) -> Manifest:
    """Hash every file under ``bundle`` into ``manifest.files``, write manifest.json and its hash."""
    bundle = Path(bundle)
    if hash_files:
        manifest = dataclasses.replace(manifest, files={rel: sha256_file(bundle / rel) for rel in _bundle_files(bundle)})
    for rel, where in manifest.referenced_files().items():
        if rel not in manifest.files:
            raise BundleError(f"manifest {where} names {rel}, which is not a file of {bundle}")
    text = (json.dumps(manifest.to_dict(), indent=2) + "\n").encode()
    (bundle / MANIFEST_FILE).write_bytes(text)
    (bundle / MANIFEST_HASH_FILE).write_text(f"{hashlib.sha256(text).hexdigest()}  {MANIFEST_FILE}\n")
    log.info("wrote %s (%d files)", bundle / MANIFEST_FILE, len(manifest.files))
    return manifest


def check_engine(spec: EngineSpec, tensorrt_version: str, compute_capability: str, bundle: str | Path = "") -> None:
    """Raise EngineMismatchError unless ``spec`` was built for this TensorRT version and GPU.

    TensorRT engines are specific to the TensorRT version and to the GPU architecture (compute
    capability) they were built on; loading them elsewhere fails or silently misbehaves.
    """
    where = f"{Path(bundle) / spec.file}" if bundle else spec.file
    fix = f"rebuild the engines on this device: rlrc-export engine --bundle {bundle or 'BUNDLE'}"
    if spec.tensorrt_version != tensorrt_version:
        raise EngineMismatchError(
            f"{where} was built with TensorRT {spec.tensorrt_version}, this machine has TensorRT "
            f"{tensorrt_version}; engines only load with the TensorRT version that built them; {fix}"
        )
    if spec.compute_capability != compute_capability:
        raise EngineMismatchError(
            f"{where} was built for GPU compute capability {spec.compute_capability} ({spec.device_name}), "
            f"this GPU has {compute_capability}; {fix}"
        )

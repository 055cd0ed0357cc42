"""The run skeleton every training job shares (SFT and PPO).

A ``Run`` owns one job's output directory and process group:

    out/train_config.json        the resolved config (a resumed run must match it)
    out/metrics.jsonl            one row per log interval, CleanRL-style keys (losses/..., charts/...)
    out/state/STATE              model, optimizer and schedule state for exact resume (tensors and
                                 plain values only: read back with ``weights_only=True``)
    out/checkpoints/NAME_N/      periodic OpenVLA checkpoints, the newest ``keep_checkpoints`` kept
    out/final/                   the final checkpoint
    out/tokenizer/               the tokenizer every checkpoint of the run carries

Under ``torchrun`` each rank builds its own ``Run``; only rank 0 writes shared files.
"""
from __future__ import annotations

import json
import logging
import math
import os
import shutil
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ContextManager, Iterable

import numpy as np
import torch
from torch import nn

from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import CheckpointError, ConfigError

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Options of every training job: where it writes, how often, on what."""

    out: str = field(metadata={"help": "output directory (train_config.json, metrics.jsonl, state/, checkpoints/, "
                                       "final/)"})
    save_every: int = field(default=500, metadata={"help": "write state + a checkpoint every N steps"})
    log_every: int = field(default=25, metadata={"help": "write a metrics.jsonl row every N steps"})
    keep_checkpoints: int = field(default=2, metadata={"help": "periodic checkpoints kept (oldest deleted)"})
    seed: int = field(default=0, metadata={"help": "seed of initialisation and every random draw"})
    precision: str = field(default="fp32", metadata={"help": "fp32, or bf16 autocast", "choices": ["fp32", "bf16"]})
    threads: int = field(default=0, metadata={"help": "torch CPU threads; 0 = torch default"})
    device: str = field(default="auto", metadata={"help": "cpu, cuda, or auto (cuda when available)"})
    progress: bool = field(default=True, metadata={"help": "show a progress bar"})
    stop_after: int = field(default=0, metadata={"help": "stop (state saved) after this many steps in this "
                                                         "invocation; 0 = run to the end. Rerun to resume"})

    # Options a resumed run may change; every other option must equal the saved run's.
    RESUMABLE = frozenset({"save_every", "log_every", "progress", "threads", "keep_checkpoints", "stop_after", "device"})

    def __post_init__(self) -> None:
        for name in ("save_every", "log_every", "keep_checkpoints"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be >= 1")
        for name in ("seed", "threads", "stop_after"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{flag(name)}={getattr(self, name)} must be >= 0")
        if self.precision not in ("fp32", "bf16"):
            raise ConfigError(f"--precision={self.precision!r}: expected fp32 or bf16")
        if not self.out:
            raise ConfigError("--out is empty; pass an output directory")


def flag(name: str) -> str:
    """A config field's command-line flag (``save_every`` -> ``--save-every``)."""
    return "--" + name.replace("_", "-")


def outcome(final: Path | None) -> str:
    """A training command's last line: where the final checkpoint is, or how to resume."""
    return f"final checkpoint: {final}" if final else "stopped early (--stop-after); run the same command again to resume"


def lr_factor(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Linear warm-up to 1 over ``warmup`` steps, then cosine decay to ``min_ratio`` at ``total``."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def param_groups(model: nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: weight decay on matrices only (not on norms, biases, embeddings, position tables,
    action slots)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        if p.ndim < 2 or "embed_tokens" in name or "norm" in name or name.endswith(("pos_embed", "cls_token", "reg_token", "action_slots")):
            no_decay.append(p)
        else:
            decay.append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


class Run:
    """One training job's directory, process group, device, state files and logs."""

    def __init__(self, cfg: RunConfig, state_name: str) -> None:
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        self.cfg = cfg
        self.rank, self.world = _init_distributed(cfg.device)
        self.device = _resolve_device(cfg.device, self.rank)
        self.out = Path(cfg.out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.state_path = self.out / "state" / state_name
        self.resuming = self.state_path.is_file()
        self.tokenizer_dir = self.out / "tokenizer"

    @property
    def main(self) -> bool:
        """True on the process that writes shared files (rank 0)."""
        return self.rank == 0

    # ------------------------------------------------------------------ config

    def write_config(self, configs: dict[str, Any]) -> None:
        """Check a resumed run against its saved config, then save the resolved ``configs``
        (name -> frozen dataclass, e.g. {"train": cfg, "recipe": recipe_cfg})."""
        resolved = {name: asdict(c) for name, c in configs.items()}
        path = self.out / "train_config.json"
        if self.resuming and path.is_file():
            defaults = {name: {f.name: f.default for f in fields(c)} for name, c in configs.items()}
            self._check_same_job(json.loads(path.read_text()), resolved, defaults)
        if self.main:
            path.write_text(json.dumps(resolved, indent=2, default=str) + "\n")

    def _check_same_job(self, saved: dict[str, Any], now: dict[str, Any], defaults: dict[str, Any]) -> None:
        """A flag the saved run did not record (it predates the flag) counts as its default."""
        diff = []
        for name, values in now.items():
            old = saved.get(name, {})
            for key, value in values.items():
                if key in self.cfg.RESUMABLE or key in ("steps", "updates"):
                    continue
                before = old.get(key, defaults[name].get(key))
                if before != value:
                    diff.append(f"{flag(key)}: saved {before!r}, now {value!r}")
        if diff:
            raise ConfigError(f"{self.out} holds a run with other settings ({'; '.join(diff)}); use another --out or "
                              "the same flags")

    # ------------------------------------------------------------------ state

    def load_state(self) -> dict[str, Any]:
        """The saved state, read without running any pickled code (``weights_only``)."""
        try:
            return torch.load(self.state_path, map_location=self.device, weights_only=True)
        except Exception as exc:  # noqa: BLE001 - torch raises UnpicklingError, RuntimeError, EOFError ...
            lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
            reason = next((ln for ln in lines if "GLOBAL" in ln), lines[0] if lines else "")
            raise CheckpointError(f"{self.state_path}: cannot read the saved training state ({type(exc).__name__}: "
                                  f"{reason}); this trainer writes only tensors and plain values there, so the file "
                                  f"is damaged or was not written by it. Delete {self.state_path.parent} to start "
                                  "over, or use another --out") from exc

    def save_state(self, state: dict[str, Any], path: Path | None = None, all_ranks: bool = False) -> None:
        """Write ``state`` (tensors and plain values) atomically: a crash mid-save leaves the last one."""
        if not (self.main or all_ranks):
            return
        path = path or self.state_path
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    def save_checkpoint(self, model: nn.Module, config: VLAConfig, name: str,
                        extra: Callable[[Path], Any] | None = None) -> Path | None:
        """A periodic checkpoint ``checkpoints/NAME`` (rank 0), pruning old ones; ``extra(dir)`` adds files."""
        if not self.main:
            return None
        ckpt_dir = self.out / "checkpoints"
        path = self._save(model, config, ckpt_dir / name, extra)
        prefix = name.rsplit("_", 1)[0] + "_"
        for old in sorted(ckpt_dir.glob(prefix + "*"))[:-self.cfg.keep_checkpoints]:
            shutil.rmtree(old, ignore_errors=True)
        return path

    def save_final(self, model: nn.Module, config: VLAConfig, extra: Callable[[Path], Any] | None = None) -> Path:
        """``final/`` (rank 0); every rank returns its path after the barrier."""
        final = self.out / "final"
        if self.main:
            self._save(model, config, final, extra)
            log.info("final checkpoint: %s", final)
        self.barrier()
        return final

    def _save(self, model: nn.Module, config: VLAConfig, path: Path, extra: Callable[[Path], Any] | None) -> Path:
        from export.checkpoint import save_checkpoint

        save_checkpoint(model, path, tokenizer_dir=self.tokenizer_dir, config=config, overwrite=True)
        if extra is not None:
            extra(path)
        return path

    # ------------------------------------------------------------------ loop helpers

    def steps(self, start: int, total: int) -> Iterable[int]:
        """Step indices ``start .. total - 1``, ending early after ``stop_after`` of them."""
        end = total if not self.cfg.stop_after else min(total, start + self.cfg.stop_after)
        return range(start, end)

    def save_due(self, done: int, total: int, start: int) -> bool:
        """After ``done`` steps: time for a state + checkpoint save (periodic, last, or stop_after)."""
        stopping = bool(self.cfg.stop_after) and done - start >= self.cfg.stop_after
        return done % self.cfg.save_every == 0 or done == total or stopping

    def log_due(self, done: int, total: int) -> bool:
        return done % self.cfg.log_every == 0 or done == total

    def finished(self, done: int, total: int) -> bool:
        """False (with a log line) when stop_after ended this invocation early."""
        if done < total:
            log.info("stopped at step %d of %d; run the same command again to resume", done, total)
            self.barrier()
            return False
        return True

    def autocast(self) -> ContextManager[Any]:
        if self.cfg.precision != "bf16":
            return nullcontext()
        return torch.autocast(device_type="cuda" if self.device.startswith("cuda") else "cpu", dtype=torch.bfloat16)

    def progress(self, total: int, start: int, desc: str, unit: str):
        """A tqdm bar on rank 0 (a resumed run starts at ``start``)."""
        from tqdm import tqdm

        return tqdm(total=total, initial=start, desc=desc, unit=unit, disable=not (self.cfg.progress and self.main),
                    dynamic_ncols=True)

    def metrics(self) -> "MetricsLog":
        return MetricsLog(self.out / "metrics.jsonl" if self.main else None)

    # ------------------------------------------------------------------ process group

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier()

    def all_reduce_mean(self, tensors: Iterable[torch.Tensor]) -> None:
        """Average each tensor over the ranks, in place (gradients of a manual data-parallel step)."""
        if self.world <= 1:
            return
        import torch.distributed as dist

        for t in tensors:
            dist.all_reduce(t)
            t /= self.world

    def all_reduce_sum(self, values: torch.Tensor) -> torch.Tensor:
        """Sum a float64 CPU tensor over the ranks."""
        if self.world <= 1:
            return values
        import torch.distributed as dist

        on = values.to("cuda" if dist.get_backend() == "nccl" else "cpu")
        dist.all_reduce(on)
        return on.cpu()


class MetricsLog:
    """Collects values between log rows; each row holds their means (NaN and inf rows dropped)."""

    def __init__(self, path: Path | None) -> None:
        self.file = path.open("a") if path is not None else None
        self.window: dict[str, list[float]] = {}

    def add(self, values: dict[str, float | torch.Tensor]) -> None:
        for key, value in values.items():
            self.window.setdefault(key, []).append(float(value))

    def flush(self, extra: dict[str, Any]) -> dict[str, float]:
        """Write one row: the window's means plus ``extra``; returns it and starts a new window."""
        row: dict[str, Any] = {}
        for key, values in self.window.items():
            arr = np.asarray(values, dtype=np.float64)
            if np.isfinite(arr).any():
                row[key] = float(np.nanmean(arr))
        row.update(extra)
        self.window = {}
        if self.file is not None:
            self.file.write(json.dumps({k: v for k, v in row.items()
                                        if not (isinstance(v, float) and not math.isfinite(v))}) + "\n")
            self.file.flush()
        return row

    def close(self) -> None:
        if self.file is not None:
            self.file.close()


def _init_distributed(device: str) -> tuple[int, int]:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return 0, 1
    import torch.distributed as dist

    gpu = device in ("cuda", "auto") and torch.cuda.is_available()
    dist.init_process_group(backend="nccl" if gpu else "gloo")
    return dist.get_rank(), dist.get_world_size()


def _resolve_device(name: str, rank: int) -> str:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("--device cuda but torch sees no CUDA GPU; use --device cpu")
        name = f"cuda:{int(os.environ.get('LOCAL_RANK', rank))}"
    elif name != "cpu" and not name.startswith("cuda:"):
        raise ConfigError(f"--device={name!r}: expected cpu, cuda, cuda:N or auto")
    return name

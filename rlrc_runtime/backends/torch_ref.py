"""The PyTorch reference backend: the export toolchain's model, run eagerly.

The only place rlrc_runtime touches torch, imported lazily when this backend is chosen.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from export.checkpoint import load_model
from rlrc_runtime.backends.base import Backend
from rlrc_runtime.config import VLAConfig
from rlrc_runtime.errors import BackendError
from rlrc_runtime.prompt import require_positions


class TorchBackend(Backend):
    name = "torch"

    def __init__(self, path: Path, config: VLAConfig, device: str = "cpu", dtype: str = "float32") -> None:
        super().__init__(path, config, device, dtype)
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendError(f"device={device!r} but torch sees no CUDA GPU here; use device='cpu'")
        self.model = None

    def activate(self) -> None:
        if self.model is None:
            self.model, _ = load_model(self.path, dtype=self.dtype, device=self.device)
        super().activate()

    def deactivate(self) -> None:
        self.model = None
        super().deactivate()

    def _sync(self) -> None:
        if self.device.startswith("cuda"):
            torch.cuda.synchronize()

    @torch.inference_mode()
    def encode_image(self, pixel_values: np.ndarray) -> Any:
        out = self.model.embed_image(torch.from_numpy(pixel_values).to(self.device))
        self._sync()
        return out

    @torch.inference_mode()
    def generate(self, patch_embeddings: Any, input_ids: np.ndarray, max_new_tokens: int) -> np.ndarray:
        parallel = self.config.decoding == "parallel"  # every token of the chunk from one decoder pass
        # Positions the generated tokens occupy: all N slots in parallel, N - 1 fed back autoregressively.
        require_positions(len(input_ids), patch_embeddings.shape[1], max_new_tokens - (0 if parallel else 1),
                          self.config.llm.max_position_embeddings, "text_config.max_position_embeddings")
        ids = torch.from_numpy(np.asarray(input_ids, dtype=np.int64))[None].to(self.device)
        if parallel:
            tokens = self.model.generate_parallel(patch_embeddings, ids, max_new_tokens)
        else:
            tokens = self.model.generate(patch_embeddings, ids, max_new_tokens)
        return tokens[0].cpu().numpy().astype(np.int64)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "torch": torch.__version__, "threads": torch.get_num_threads()}

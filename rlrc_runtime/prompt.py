"""Prompt building and tokenization, exactly as OpenVLA's ``predict_action`` does it.

``"In: What action should the robot take to {instruction.lower()}?\\nOut:"`` -> BOS + tokens, then
token 29871 ("▁") appended unless it is already last. The tokenizer comes from the checkpoint:
``tokenizer.json`` through the ``tokenizers`` library (what LlamaTokenizerFast wraps), else
``tokenizer.model`` through sentencepiece. BOS is prepended here rather than by the file's
post-processor, because LlamaTokenizerFast rebuilds that post-processor from ``add_bos_token``.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from rlrc_runtime.errors import CheckpointError, InputError, TokenizerNotFoundError

log = logging.getLogger(__name__)

PROMPT_TEMPLATE = "In: What action should the robot take to {instruction}?\nOut:"
SPIECE_UNDERLINE_ID = 29871
MAX_INSTRUCTION_CHARS = 2000


def build_prompt(instruction: str, template: str = PROMPT_TEMPLATE) -> str:
    """The OpenVLA prompt for one instruction (lower-cased as the official code does)."""
    if not isinstance(instruction, str):
        raise InputError(f"instruction must be a str, got {type(instruction).__name__}")
    text = instruction.strip()
    if not text:
        raise InputError("instruction is empty; pass the task in words, e.g. 'pick up the red block'")
    if len(text) > MAX_INSTRUCTION_CHARS:
        raise InputError(
            f"instruction has {len(text)} characters; the limit is {MAX_INSTRUCTION_CHARS} "
            "(a longer prompt would not fit the model's context)"
        )
    # The official code lowercases but does not strip; strip only guards empty input above.
    return template.format(instruction=instruction.lower())


def require_positions(n_ids: int, n_patches: int, n_generated: int, limit: int, limit_name: str) -> None:
    """Refuse a prompt that does not fit the model: ``[BOS, patches, prompt[1:]]`` plus the positions the
    generated tokens occupy (``n_generated``) must be at most ``limit`` positions.

    Every backend calls this with its own limit (the torch backend: ``max_position_embeddings``; ONNX
    Runtime and TensorRT: the cache length the bundle was exported with), so the message is the same.
    """
    needed = n_ids + n_patches + n_generated
    if needed > limit:
        raise InputError(
            f"the instruction's prompt is {n_ids} tokens; with {n_patches} image patches and {n_generated} positions "
            f"for generated tokens it needs {needed} positions, but the model has {limit_name}={limit}; shorten the "
            f"instruction to at most {max(limit - n_patches - n_generated, 0)} prompt tokens"
        )


@dataclass
class PromptTokenizer:
    """Text -> OpenVLA input ids, over a tokenizer.json or tokenizer.model file."""

    encode_fn: Callable[[str], list[int]]
    """Text -> ids without special tokens."""
    bos_token_id: int
    """Prepended when ``add_bos`` is set."""
    add_bos: bool
    """From tokenizer_config.json 'add_bos_token' (default True, as Llama)."""
    source: str
    """The file the vocabulary came from."""
    template: str = PROMPT_TEMPLATE
    """Prompt template with an {instruction} field."""

    @classmethod
    def from_dir(cls, path: str | Path) -> "PromptTokenizer":
        """Load the tokenizer of a checkpoint or bundle directory."""
        path = Path(path)
        tcfg = {}
        if (path / "tokenizer_config.json").is_file():
            from rlrc_runtime.checkpoint import read_json  # checkpoint reading lives there

            tcfg = read_json(path / "tokenizer_config.json")
            if not isinstance(tcfg, dict):
                raise CheckpointError(f"{path / 'tokenizer_config.json'}: expected a JSON object")
        add_bos = bool(tcfg.get("add_bos_token", True))
        if (path / "tokenizer.json").is_file():
            from tokenizers import Tokenizer

            tok = Tokenizer.from_file(str(path / "tokenizer.json"))
            bos = tok.token_to_id(_token_str(tcfg.get("bos_token"), "<s>"))
            if bos is None:
                raise CheckpointError(f"{path / 'tokenizer.json'}: the BOS token '<s>' is not in the vocabulary")
            return cls(lambda text: tok.encode(text, add_special_tokens=False).ids, bos, add_bos, str(path / "tokenizer.json"))
        if (path / "tokenizer.model").is_file():
            try:
                import sentencepiece as spm
            except ImportError as exc:  # an optional dependency on the robot side
                raise TokenizerNotFoundError(
                    f"{path}: only tokenizer.model is present and the 'sentencepiece' package is not installed; "
                    "pip install sentencepiece, or add tokenizer.json to the directory"
                ) from exc
            sp = spm.SentencePieceProcessor(model_file=str(path / "tokenizer.model"))
            log.info("no tokenizer.json in %s; using tokenizer.model via sentencepiece", path)
            return cls(lambda text: list(sp.encode(text)), sp.bos_id(), add_bos, str(path / "tokenizer.model"))
        raise TokenizerNotFoundError(
            f"{path}: no tokenizer found; expected tokenizer.json (or tokenizer.model) next to config.json. "
            "Copy the tokenizer files of the base model into this directory"
        )

    def __call__(self, instruction: str) -> np.ndarray:
        """Instruction -> input ids [T] int64 (BOS first, 29871 last)."""
        ids = self.encode_fn(build_prompt(instruction, self.template))
        if self.add_bos:
            ids = [self.bos_token_id, *ids]
        if not ids or ids[-1] != SPIECE_UNDERLINE_ID:
            ids.append(SPIECE_UNDERLINE_ID)
        return np.asarray(ids, dtype=np.int64)


def _token_str(value: object, default: str) -> str:
    """tokenizer_config stores special tokens either as a string or as an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return default

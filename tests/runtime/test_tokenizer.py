"""Prompt tokenization: the generated Llama-layout tokenizer, PromptTokenizer against transformers and
sentencepiece, and the input checks on instructions.

The official OpenVLA flow (design.md §3) is ``tokenizer(prompt).input_ids`` with the checkpoint's
LlamaTokenizerFast, then 29871 ("▁") appended unless already last; PromptTokenizer must give the same ids.
"""
from __future__ import annotations

import io
import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.tokenizer_gen import WORDS
from rlrc_runtime import load_policy
from rlrc_runtime.errors import CheckpointError, InputError, MissingFileError, TokenizerNotFoundError
from rlrc_runtime.prompt import MAX_INSTRUCTION_CHARS, PROMPT_TEMPLATE, SPIECE_UNDERLINE_ID, PromptTokenizer, build_prompt

INSTRUCTIONS = [
    "pick up the red block",
    "Put the Cup ON the plate!",
    "PUSH THE BLUE BUTTON",
    "move the bowl 3 cm to the left, then stop.",
    "open drawer #2 (the top one)",
    "place the grüne Tasse in the Schüssel",
    "  lift   the   lid  ",
    "what's on the table? grab it",
    "stack 1, 2 and 3; then 42",
    "turn the knob 90° clockwise",
    "put the 日本 cup near the café mug",
    "slide\tthe tray",
    "close the door\nand the cabinet",
    "x",
]


def openvla_prompt(instruction: str) -> str:
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


def official_ids(encode, prompt: str) -> list[int]:
    """OpenVLA's predict_action: tokenizer ids, then 29871 appended unless already last."""
    ids = list(encode(prompt))
    if ids[-1] != 29871:
        ids.append(29871)
    return ids


@pytest.fixture(scope="module")
def tokenizer_json(tiny_ckpt: Path):
    from tokenizers import Tokenizer

    return Tokenizer.from_file(str(tiny_ckpt / "tokenizer.json"))


@pytest.fixture(scope="module")
def prompt_tokenizer(tiny_ckpt: Path) -> PromptTokenizer:
    return PromptTokenizer.from_dir(tiny_ckpt)


# --------------------------------------------------------------------------- the generated tokenizer


def test_generated_tokenizer_has_llama_id_layout(tokenizer_json, tiny_ckpt):
    tok = tokenizer_json
    assert tok.token_to_id("<unk>") == 0
    assert tok.token_to_id("<s>") == 1
    assert tok.token_to_id("</s>") == 2
    assert tok.token_to_id("<0x0A>") == 13
    assert tok.id_to_token(29871) == "\u2581"
    assert tok.token_to_id("<PAD>") == 32000
    assert tok.get_vocab_size(with_added_tokens=False) == 32000
    assert tok.get_vocab_size(with_added_tokens=True) == 32001
    action_tokens = [tok.id_to_token(i) for i in range(31744, 32000)]
    assert all(len(t) == 1 for t in action_tokens)
    assert len(set(action_tokens)) == 256
    assert all(not t.isascii() for t in action_tokens)
    assert tok.id_to_token(31743) not in action_tokens
    # byte fallback: a newline is the Llama byte piece 13
    assert tok.encode("\n", add_special_tokens=False).ids[-1] == 13
    special = json.loads((tiny_ckpt / "special_tokens_map.json").read_text())
    assert special == {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<PAD>"}
    assert json.loads((tiny_ckpt / "tokenizer_config.json").read_text())["add_bos_token"] is True


# --------------------------------------------------------------------------- PromptTokenizer


@pytest.mark.parametrize("instruction", INSTRUCTIONS)
def test_prompt_ids_decode_to_openvla_prompt(prompt_tokenizer, tokenizer_json, instruction):
    ids = prompt_tokenizer(instruction)
    assert ids.dtype == np.int64 and ids.ndim == 1
    assert ids[0] == 1 and ids[-1] == SPIECE_UNDERLINE_ID
    assert ids[-2] != SPIECE_UNDERLINE_ID
    assert tokenizer_json.decode(ids[1:-1].tolist()) == openvla_prompt(instruction)
    assert build_prompt(instruction) == openvla_prompt(instruction)


def test_prompt_lowercases_instruction(prompt_tokenizer):
    assert np.array_equal(prompt_tokenizer("Pick Up The RED Block"), prompt_tokenizer("pick up the red block"))
    assert "Pick" not in build_prompt("Pick Up")


def test_prompt_contains_one_newline_byte(prompt_tokenizer):
    assert list(prompt_tokenizer("pick up the red block")).count(13) == 1


def test_29871_not_appended_twice_when_prompt_ends_with_it(tiny_ckpt, tokenizer_json):
    template = PROMPT_TEMPLATE + " "  # a trailing space encodes as a final "▁" (29871)
    encoded = tokenizer_json.encode(template.format(instruction="pick up the cup"), add_special_tokens=False).ids
    assert encoded[-1] == SPIECE_UNDERLINE_ID  # the case under test really arises
    tok = PromptTokenizer.from_dir(tiny_ckpt)
    tok.template = template
    ids = tok("pick up the cup").tolist()
    assert ids == [1, *encoded]
    assert ids[-2] != SPIECE_UNDERLINE_ID


@pytest.mark.parametrize(
    "encoded, add_bos, expected",
    [
        ([5, 6], True, [1, 5, 6, 29871]),
        ([5, 29871], True, [1, 5, 29871]),
        ([29871], True, [1, 29871]),
        ([5, 29871], False, [5, 29871]),
        ([], False, [29871]),
    ],
)
def test_29871_rule_with_encode_fn(encoded, add_bos, expected):
    tok = PromptTokenizer(encode_fn=lambda text: list(encoded), bos_token_id=1, add_bos=add_bos, source="test")
    assert tok("pick up the cup").tolist() == expected


# --------------------------------------------------------------------------- parity with transformers


@pytest.fixture(scope="module")
def hf_tokenizer(tiny_ckpt: Path):
    """LlamaTokenizerFast over the checkpoint's tokenizer.json, with its tokenizer_config.json settings
    (what from_pretrained passes; transformers 5 no longer defaults add_bos_token to True)."""
    transformers = pytest.importorskip("transformers")
    kwargs = json.loads((tiny_ckpt / "tokenizer_config.json").read_text())
    kwargs.pop("tokenizer_class", None)
    return transformers.LlamaTokenizerFast(tokenizer_file=str(tiny_ckpt / "tokenizer.json"), **kwargs)


def test_ids_match_transformers_llama_tokenizer(prompt_tokenizer, hf_tokenizer):
    assert len(INSTRUCTIONS) >= 10
    for instruction in INSTRUCTIONS:
        expected = official_ids(lambda p: hf_tokenizer(p).input_ids, openvla_prompt(instruction))
        assert prompt_tokenizer(instruction).tolist() == expected, instruction
        assert expected[0] == 1


def test_ids_match_transformers_auto_tokenizer(prompt_tokenizer, tiny_ckpt):
    transformers = pytest.importorskip("transformers")
    auto = transformers.AutoTokenizer.from_pretrained(str(tiny_ckpt))
    for instruction in INSTRUCTIONS[:4]:
        expected = official_ids(lambda p: auto(p).input_ids, openvla_prompt(instruction))
        assert prompt_tokenizer(instruction).tolist() == expected, instruction


# --------------------------------------------------------------------------- sentencepiece fallback


@pytest.fixture(scope="module")
def sp_model() -> bytes:
    """A real BPE sentencepiece model (byte fallback, Llama's special ids) trained on robot instructions."""
    spm = pytest.importorskip("sentencepiece")
    rng = random.Random(0)
    corpus = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 10))) for _ in range(2000)]
    corpus += [openvla_prompt(i) for i in INSTRUCTIONS[:3]]
    out = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(corpus), model_writer=out, vocab_size=400, model_type="bpe", byte_fallback=True,
        character_coverage=1.0, unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
        normalization_rule_name="identity", remove_extra_whitespaces=False,  # as Llama's tokenizer.model
    )
    return out.getvalue()


@pytest.fixture
def sp_dir(tmp_path: Path, sp_model: bytes) -> Path:
    d = tmp_path / "sp"
    d.mkdir()
    (d / "tokenizer.model").write_bytes(sp_model)
    return d


def test_sentencepiece_fallback(sp_dir, sp_model):
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    tok = PromptTokenizer.from_dir(sp_dir)
    assert tok.source == str(sp_dir / "tokenizer.model")
    assert tok.bos_token_id == sp.bos_id() == 1
    for instruction in INSTRUCTIONS:
        prompt = openvla_prompt(instruction)
        expected = official_ids(lambda p: [sp.bos_id(), *sp.encode(p)], prompt)
        ids = tok(instruction)
        assert ids.tolist() == expected, instruction
        assert sp.decode(ids[1:-1].tolist()) == prompt


def test_sentencepiece_fallback_respects_add_bos_token(sp_dir, sp_model):
    import sentencepiece as spm

    (sp_dir / "tokenizer_config.json").write_text(json.dumps({"add_bos_token": False}))
    sp = spm.SentencePieceProcessor(model_proto=sp_model)
    assert PromptTokenizer.from_dir(sp_dir)("pick up the cup").tolist() == [
        *sp.encode(openvla_prompt("pick up the cup")), SPIECE_UNDERLINE_ID
    ]


def test_tokenizer_json_preferred_over_tokenizer_model(ckpt_copy, sp_model):
    ckpt = ckpt_copy()
    (ckpt / "tokenizer.model").write_bytes(sp_model)
    assert PromptTokenizer.from_dir(ckpt).source == str(ckpt / "tokenizer.json")


def test_checkpoint_with_only_tokenizer_model_loads(ckpt_copy, sp_model):
    ckpt = ckpt_copy()
    (ckpt / "tokenizer.json").unlink()
    (ckpt / "tokenizer.model").write_bytes(sp_model)
    from export.checkpoint import load_model

    _, info = load_model(ckpt)
    assert info.tokenizer_file == ckpt / "tokenizer.model"
    with load_policy(ckpt) as policy:
        assert policy.tokenizer.source == str(ckpt / "tokenizer.model")
        action = policy.predict_action(np.zeros((224, 224, 3), np.uint8), "pick up the red block")
    assert action.shape == (7,) and np.all(np.isfinite(action))


def test_no_tokenizer_file_names_directory(tmp_path: Path, tiny_ckpt: Path):
    d = tmp_path / "no_tok"
    d.mkdir()
    shutil.copy(tiny_ckpt / "tokenizer_config.json", d)  # config files alone are not a tokenizer
    with pytest.raises(TokenizerNotFoundError) as exc:
        PromptTokenizer.from_dir(d)
    assert isinstance(exc.value, MissingFileError)
    assert str(d) in str(exc.value) and "tokenizer.json" in str(exc.value) and "tokenizer.model" in str(exc.value)


def test_damaged_tokenizer_config_names_file(ckpt_copy):
    ckpt = ckpt_copy()
    (ckpt / "tokenizer_config.json").write_text('{"add_bos_token": tr')
    with pytest.raises(CheckpointError) as exc:
        PromptTokenizer.from_dir(ckpt)
    assert str(ckpt / "tokenizer_config.json") in str(exc.value)


# --------------------------------------------------------------------------- instruction checks


@pytest.mark.parametrize(
    "instruction",
    ["", " ", "   \t\n ", "x" * 10_000, "pick " * (MAX_INSTRUCTION_CHARS // 5 + 1)],
    ids=["empty", "space", "whitespace", "10k_chars", "just_over_limit"],
)
def test_bad_instruction_raises_input_error(prompt_tokenizer, instruction):
    with pytest.raises(InputError) as exc:
        prompt_tokenizer(instruction)
    assert isinstance(exc.value, ValueError)
    assert "instruction" in str(exc.value)


def test_instruction_at_limit_is_accepted(prompt_tokenizer):
    assert prompt_tokenizer("a" * MAX_INSTRUCTION_CHARS)[0] == 1


@pytest.mark.parametrize("instruction", [None, 42, b"pick up the cup", ["pick up the cup"]], ids=["None", "int", "bytes", "list"])
def test_non_str_instruction_raises_input_error(prompt_tokenizer, instruction):
    with pytest.raises(InputError, match="must be a str") as exc:
        prompt_tokenizer(instruction)
    assert type(instruction).__name__ in str(exc.value)


def test_policy_rejects_empty_instruction(tiny_ckpt):
    with load_policy(tiny_ckpt) as policy:
        with pytest.raises(InputError):
            policy.predict_action(np.zeros((224, 224, 3), np.uint8), "   ")

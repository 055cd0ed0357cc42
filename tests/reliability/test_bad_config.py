"""Bad config.json values give a ConfigError naming the file and the field, never a traceback.

The cases are generated from the tables ``VLAConfig.from_hf_dict`` reads through (``OPENVLA_FIELDS``,
``TEXT_CONFIG_FIELDS``, ``TOWER_FIELDS``): every field gets a missing, a wrong-type and an
out-of-range case, so a field added to a table is tested here without editing this file. A spy
checks that from_hf_dict reads no key outside those tables.

Missing follows HF: a key OpenVLA's HF config gives a default takes that default (OpenVLA-7B's own
config.json leaves hidden_size out); where the default contradicts the stored weights, reading the
checkpoint names the field. Then one CLI case per class: exit status 2 and no traceback.
"""
from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from export.cli import main as export_main
from export.tiny import PRESETS, preset_config
from rlrc_runtime import load_policy
from rlrc_runtime.checkpoint import read_checkpoint
from rlrc_runtime.cli import main as predict_main
from rlrc_runtime.config import OPENVLA_FIELDS, REQUIRED, TEXT_CONFIG_FIELDS, TOWER_FIELDS, FieldSpec, VLAConfig
from rlrc_runtime.errors import ConfigError, InputError

SOURCE = "/ckpt/config.json"
# One value of each JSON type; a case uses those the field does not accept.
SAMPLES: dict[str, Any] = {"int": 7, "number": 0.5, "bool": True, "str": "abc", "list": [1], "object": {"a": 1},
                           "null": None}


def base_config() -> dict[str, Any]:
    """config.json of the tiny preset: every table field present (text_config in full, tower overrides)."""
    return json.loads(json.dumps(preset_config(PRESETS["tiny"]).to_hf_dict()))


# (dotted field, spec, function that returns the JSON object holding the field)
FIELDS: list[tuple[str, FieldSpec, Any]] = (
    [(key, spec, lambda cfg: cfg) for key, spec in OPENVLA_FIELDS.items()]
    + [(f"text_config.{key}", spec, lambda cfg: cfg["text_config"]) for key, spec in TEXT_CONFIG_FIELDS.items()]
    + [(f"rlrc_vision_towers[0].{key}", spec, lambda cfg: cfg["rlrc_vision_towers"][0])
       for key, spec in TOWER_FIELDS.items()]
)


def wrong_types(spec: FieldSpec) -> list[Any]:
    out = []
    for kind, value in SAMPLES.items():
        accepted = (kind in spec.kinds or (kind == "int" and "number" in spec.kinds)
                    or (kind == "null" and spec.nullable))
        if not accepted:
            out.append(value)
    if spec.item and not spec.choices:
        out.append(["abc"] if spec.item != "str" else [7])  # a list with an item of the wrong type
    return out


def out_of_range(spec: FieldSpec) -> list[Any]:
    if spec.choices:
        return [{"str": "bogus", "bool": True, "object": {"type": "linear"}}[spec.kinds[0]]]
    out: list[Any] = []
    if spec.minimum is not None:
        out.append(spec.minimum - 1)
    if spec.above is not None:
        out += [spec.above, spec.above - 1.0]
    if spec.maximum is not None:
        out.append(spec.maximum + 1)
    if spec.item:
        out = [[v] for v in out]
    return out


def cases(kind: str) -> list[Any]:
    params = []
    for name, spec, holder in FIELDS:
        values = wrong_types(spec) if kind == "type" else out_of_range(spec)
        params += [pytest.param(name, holder, v, id=f"{name}={json.dumps(v)}") for v in values]
    return params


def parse(cfg: dict[str, Any]) -> VLAConfig:
    return VLAConfig.from_hf_dict(cfg, source=SOURCE)


def assert_names(exc: pytest.ExceptionInfo, name: str) -> str:
    msg = str(exc.value)
    assert SOURCE in msg and name in msg, msg
    return msg


def test_the_base_config_parses():
    assert parse(base_config()) == preset_config(PRESETS["tiny"])


def refusal(name: str, holder, value) -> str:
    """The error message of parsing the base config with field ``name`` set to ``value``."""
    cfg = base_config()
    holder(cfg)[name.rsplit(".", 1)[-1]] = value
    with pytest.raises(ConfigError) as exc:
        parse(cfg)
    return assert_names(exc, name)


@pytest.mark.parametrize("name, holder, value", cases("type"))
def test_wrong_type_names_the_field(name, holder, value):
    msg = refusal(name, holder, value)
    assert "must be" in msg and "the value the model was trained with" in msg


@pytest.mark.parametrize("name, holder, value", cases("range"))
def test_out_of_range_names_the_field(name, holder, value):
    msg = refusal(name, holder, value)
    assert "out of range" in msg or "not supported" in msg


@pytest.mark.parametrize("token", ["bos_token_id", "eos_token_id", "pad_token_id"])
def test_token_ids_outside_the_vocabulary(token):
    cfg = base_config()
    cfg["text_config"][token] = cfg["text_config"]["vocab_size"]
    with pytest.raises(ConfigError) as exc:
        parse(cfg)
    assert_names(exc, f"text_config.{token}")


@pytest.mark.parametrize("name, spec, holder", [pytest.param(n, s, h, id=n) for n, s, h in FIELDS])
def test_missing_field(name, spec, holder):
    """Required fields (no HF default we accept) are named; the others take HF's default, except one
    whose HF default this runtime does not support (image_resize_strategy: 'letterbox')."""
    cfg = base_config()
    key = name.rsplit(".", 1)[-1]
    holder(cfg).pop(key, None)
    if spec.default is REQUIRED or (spec.choices and spec.default not in spec.choices):
        with pytest.raises(ConfigError) as exc:
            parse(cfg)
        assert "missing" in assert_names(exc, name)
        return
    try:
        parse(cfg)
    except ConfigError as exc:  # a default that contradicts other fields must still be named
        assert SOURCE in str(exc) and key in str(exc), str(exc)


def test_only_fields_without_an_hf_default_are_required():
    """HF's OpenVLAConfig defaults every top-level key and LlamaConfig every text_config key; we refuse to
    guess the backbone and the decoder, and nothing else."""
    required = [n for n, spec, _ in FIELDS if spec.default is REQUIRED]
    assert required == ["model_type", "vision_backbone_id", "text_config"]


def test_llama_defaults_are_transformers_4_40s():
    """OpenVLA-7B's text_config relies on these (design.md §3): the sizes of Llama-2-7B."""
    expected = {"vocab_size": 32000, "hidden_size": 4096, "intermediate_size": 11008, "num_hidden_layers": 32,
                "num_attention_heads": 32, "num_key_value_heads": None, "max_position_embeddings": 2048,
                "rms_norm_eps": 1e-6, "rope_theta": 10000.0, "bos_token_id": 1, "eos_token_id": 2}
    assert {k: TEXT_CONFIG_FIELDS[k].default for k in expected} == expected


def test_image_sizes_default_to_the_backbones_resolution():
    cfg = base_config()
    cfg.update(vision_backbone_id="dinosiglip-vit-so-384px",
               timm_model_ids=["vit_large_patch14_reg4_dinov2.lvd142m", "vit_so400m_patch14_siglip_384"])
    cfg.pop("image_sizes")
    for tower in cfg["rlrc_vision_towers"]:
        tower["patch_size"] = 16  # 384 is no multiple of the real patch 14, which the towers here require
    assert [t.image_size for t in parse(cfg).towers] == [384, 384]


@pytest.mark.parametrize("raw", [[1, 2], "openvla", None, 3])
def test_config_that_is_not_an_object(raw):
    with pytest.raises(ConfigError, match="expected a JSON object"):
        parse(raw)


class KeySpy(dict):
    """A dict that records the keys looked up in it (and in the objects nested under it)."""

    def __init__(self, data: dict, seen: set[str], prefix: str = "") -> None:
        super().__init__({k: KeySpy(v, seen, f"{prefix}{k}.") if isinstance(v, dict) and k != "norm_stats" else
                          [KeySpy(x, seen, f"{prefix}{k}[].") if isinstance(x, dict) else x for x in v]
                          if isinstance(v, list) else v for k, v in data.items()})
        self.seen, self.prefix = seen, prefix

    def _saw(self, key: Any) -> None:
        self.seen.add(f"{self.prefix}{key}")

    def __getitem__(self, key: Any) -> Any:
        self._saw(key)
        return super().__getitem__(key)

    def __contains__(self, key: object) -> bool:
        self._saw(key)
        return super().__contains__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._saw(key)
        return super().get(key, default)


def test_every_key_read_is_in_the_tables():
    seen: set[str] = set()
    parse(KeySpy(base_config(), seen))
    tables = ({*OPENVLA_FIELDS} | {f"text_config.{k}" for k in TEXT_CONFIG_FIELDS}
              | {f"rlrc_vision_towers[].{k}" for k in TOWER_FIELDS})
    assert seen <= tables, sorted(seen - tables)
    assert tables <= seen, sorted(tables - seen)  # and every table field is read


# --------------------------------------------------------------------------- against the weights


def ckpt_with_config(tiny_ckpt: Path, tmp_path: Path, cfg: dict[str, Any]) -> Path:
    """A checkpoint directory sharing tiny_ckpt's weights and tokenizer (symlinks) with its own config.json."""
    out = tmp_path / "ckpt"
    out.mkdir(parents=True)
    for f in tiny_ckpt.iterdir():
        if f.name != "config.json":
            (out / f.name).symlink_to(f)
    (out / "config.json").write_text(json.dumps(cfg))
    return out


def dimensions(config: VLAConfig) -> tuple:
    """What fixes the weights' shapes (tower head counts do not)."""
    llm = config.llm
    return (llm.vocab_size, llm.hidden_size, llm.head_dim, llm.num_attention_heads, llm.num_key_value_heads,
            llm.intermediate_size, [(t.embed_dim, t.depth, t.mlp_dim, t.patch_size, t.num_registers, t.image_size)
                                    for t in config.towers])


DEFAULTED = [pytest.param(n, h, id=n) for n, s, h in FIELDS if s.default is not REQUIRED and "[0]" not in n] + [
    pytest.param(f"rlrc_vision_towers[0].{k}", lambda cfg: cfg["rlrc_vision_towers"][0], id=f"rlrc_vision_towers[0].{k}")
    for k in ("embed_dim", "depth", "mlp_dim")]


@pytest.mark.parametrize("name, holder", DEFAULTED)
def test_a_default_the_weights_contradict_is_named(tiny_ckpt, tmp_path, name, holder):
    """A field left out of a tiny checkpoint's config.json: loading either gives the same shapes or a
    ConfigError naming the field (never a model of the wrong size: hidden_size 4096 over 64-wide weights)."""
    raw = json.loads((tiny_ckpt / "config.json").read_text())
    original = VLAConfig.from_hf_dict(raw)
    cfg = copy.deepcopy(raw)
    key = name.rsplit(".", 1)[-1]
    holder(cfg).pop(key, None)
    ckpt = ckpt_with_config(tiny_ckpt, tmp_path, cfg)
    try:
        changed = dimensions(VLAConfig.from_hf_dict(cfg)) != dimensions(original)
    except ConfigError:
        changed = True
    if not changed:
        read_checkpoint(ckpt)
        return
    with pytest.raises(ConfigError) as exc:
        read_checkpoint(ckpt)
    msg = str(exc.value)
    assert str(ckpt / "config.json") in msg and name.split(".")[0] in msg and key in msg, msg


@pytest.mark.parametrize("field, value", [("hidden_size", 64), ("num_hidden_layers", 4), ("intermediate_size", 128),
                                          ("num_attention_heads", 4), ("num_key_value_heads", 2)])
def test_missing_llm_size_is_refused_not_defaulted(tiny_ckpt, tmp_path, field, value):
    """The issue's case: tiny's hidden_size removed used to load as Llama-2-7B's 4096."""
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    del cfg["text_config"][field]
    ckpt = ckpt_with_config(tiny_ckpt, tmp_path, cfg)
    with pytest.raises(ConfigError) as exc:
        read_checkpoint(ckpt)
    msg = str(exc.value)
    assert f"text_config.{field} is not in the file" in msg and "Add text_config." + field in msg, msg
    if field in ("hidden_size", "num_hidden_layers", "intermediate_size"):
        assert f"the weights say text_config.{field}={value}" in msg or f"{value} rows" in msg


# --------------------------------------------------------------------------- the model's positions


def fitting_limit(tiny_ckpt: Path, instruction: str, parallel: bool) -> int:
    """Positions BOS + patches + the prompt + the generated tokens take on the tiny checkpoint."""
    with load_policy(tiny_ckpt) as policy:
        n_ids = len(policy.tokenizer(instruction))
        patches = policy.config.num_patches
    return n_ids + patches + (7 if parallel else 6)


@pytest.mark.parametrize("parallel", [False, True], ids=["autoregressive", "parallel"])
def test_a_prompt_longer_than_the_positions_is_refused(tiny_ckpt, tmp_path, parallel):
    instruction = "pick up the red block and put it in the blue bowl"
    limit = fitting_limit(tiny_ckpt, instruction, parallel)
    image = np.zeros((64, 64, 3), np.uint8)
    for max_positions in (limit, limit - 1):
        cfg = json.loads((tiny_ckpt / "config.json").read_text())
        cfg["text_config"]["max_position_embeddings"] = max_positions
        if parallel:
            cfg["rlrc_decoding"] = "parallel"
        ckpt = ckpt_with_config(tiny_ckpt, tmp_path / str(max_positions), cfg)
        with load_policy(ckpt) as policy:
            if max_positions == limit:  # exactly full: runs
                assert policy.predict_action(image, instruction).shape == (7,)
                continue
            with pytest.raises(InputError) as exc:
                policy.predict_action(image, instruction)
    msg = str(exc.value)
    assert f"needs {limit} positions" in msg and f"max_position_embeddings={limit - 1}" in msg
    assert "shorten the instruction" in msg


# --------------------------------------------------------------------------- the CLIs: exit 2, no traceback


def bad_config_ckpt(tiny_ckpt: Path, tmp_path: Path, case: str) -> Path:
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    if case == "wrong_type":
        cfg["text_config"]["hidden_size"] = "abc"
    elif case == "null":
        cfg["n_action_bins"] = None
    elif case == "list_for_text_config":
        cfg["text_config"] = [cfg["text_config"]]
    elif case == "dict_for_list":
        cfg["image_sizes"] = {"dino": 224}
    elif case == "out_of_range":
        cfg["text_config"]["rms_norm_eps"] = -1e-6
    elif case == "missing":
        del cfg["text_config"]["hidden_size"]
    return ckpt_with_config(tiny_ckpt, tmp_path, cfg)


CLI_CASES = {
    "wrong_type": "text_config.hidden_size='abc'",
    "null": "n_action_bins=null",
    "list_for_text_config": "text_config=[",
    "dict_for_list": "image_sizes={",
    "out_of_range": "text_config.rms_norm_eps=-1e-06 is out of range",
    "missing": "text_config.hidden_size is not in the file",
}


@pytest.mark.parametrize("case", sorted(CLI_CASES))
def test_export_inspect_exits_2(tiny_ckpt, tmp_path, capsys, case):
    ckpt = bad_config_ckpt(tiny_ckpt, tmp_path, case)
    assert export_main(["inspect", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlrc-export inspect: error: ") and "Traceback" not in err
    assert str(ckpt / "config.json") in err and CLI_CASES[case] in err


@pytest.mark.parametrize("case", ["wrong_type", "missing"])
def test_predict_exits_2(tiny_ckpt, tmp_path, capsys, case):
    ckpt = bad_config_ckpt(tiny_ckpt, tmp_path, case)
    assert predict_main(["--policy", str(ckpt)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("rlrc-predict: error: ") and "Traceback" not in err and CLI_CASES[case] in err


def test_predict_exits_2_on_a_prompt_too_long(tiny_ckpt, tmp_path, capsys):
    cfg = json.loads((tiny_ckpt / "config.json").read_text())
    cfg["text_config"]["max_position_embeddings"] = 270
    ckpt = ckpt_with_config(tiny_ckpt, tmp_path, cfg)
    assert predict_main(["--policy", str(ckpt), "--instruction", "pick up " + "the red block and " * 10 + "stop"]) == 2
    err = capsys.readouterr().err
    assert "max_position_embeddings=270" in err and "Traceback" not in err


def test_a_number_nan_is_not_a_number():
    """json.loads reads NaN; a NaN epsilon must not pass as a number > 0."""
    cfg = base_config()
    cfg["text_config"]["rms_norm_eps"] = math.nan
    with pytest.raises(ConfigError, match="text_config.rms_norm_eps=NaN"):
        parse(cfg)

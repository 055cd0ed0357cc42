import json

import numpy as np
import pytest
import torch

import rlrc_runtime as r
from export.checkpoint import load_model, save_checkpoint
from rlrc_runtime.action import ActionTokenizer
from rlrc_runtime.errors import BackendError, InputError
from rlrc_runtime.policy import STAGES


@pytest.fixture(scope="module")
def policy(tiny_ckpt):
    with r.load_policy(tiny_ckpt) as p:
        yield p


@pytest.fixture(scope="module")
def acting_ckpt(tiny_ckpt, tmp_path_factory):
    """The tiny checkpoint with lm_head biased toward action tokens, so greedy decoding emits them."""
    model, _ = load_model(tiny_ckpt)
    with torch.no_grad():
        head = model.language_model.lm_head.weight
        head[31744:32000] *= 40.0
    return save_checkpoint(model, tmp_path_factory.mktemp("acting") / "ckpt", tokenizer_dir=tiny_ckpt)


def test_acceptance_zeros_frame_gives_a_7_vector(policy):
    action = policy.predict_action(np.zeros((480, 640, 3), np.uint8), "pick up the red block")
    assert action.shape == (7,) and action.dtype == np.float32 and np.all(np.isfinite(action))


def test_infer_record_is_consistent(policy):
    res = policy.infer(np.full((240, 320, 3), 90, np.uint8), "push the blue block to the left")
    assert set(res.timings_ms) == set(STAGES) and all(v >= 0 for v in res.timings_ms.values())
    assert res.timings_ms["total"] >= res.timings_ms["vision"] + res.timings_ms["llm"]
    assert res.action_tokens.shape == (7,) and res.action_tokens.dtype == np.int64
    stats = policy.stats()
    expected = stats.unnormalize(ActionTokenizer().decode(res.action_tokens)).astype(np.float32)
    np.testing.assert_array_equal(res.action, expected)
    assert res.unnorm_key == "tiny_demo"


def test_policy_equals_the_model_run_by_hand(tiny_ckpt, policy):
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)
    model, info = load_model(tiny_ckpt)
    pixels = torch.from_numpy(policy.image_transform(image))
    ids = torch.from_numpy(policy.tokenizer("stack the green block on the red block"))[None]
    with torch.inference_mode():
        tokens = model.generate(model.embed_image(pixels), ids, 7)[0].numpy()
    res = policy.infer(image, "stack the green block on the red block")
    assert res.action_tokens.tolist() == tokens.tolist()


def test_deterministic(policy):
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    a = policy.infer(image, "open the drawer")
    b = policy.infer(image, "open the drawer")
    assert a.action_tokens.tolist() == b.action_tokens.tolist()
    np.testing.assert_array_equal(a.action, b.action)


def test_actions_from_action_tokens_respect_the_stats(acting_ckpt):
    with r.load_policy(acting_ckpt) as p:
        stats = p.stats()
        for seed in range(4):
            image = np.random.default_rng(seed).integers(0, 256, (96, 128, 3), dtype=np.uint8)
            res = p.infer(image, f"pick up the block number {seed}")
            assert np.all((res.action_tokens >= 31744) & (res.action_tokens <= 31999))
            masked = stats.mask
            assert np.all(res.action[masked] >= stats.q01[masked] - 1e-6)
            assert np.all(res.action[masked] <= stats.q99[masked] + 1e-6)
            # The gripper (mask False) stays in normalised [-1, 1] units, as OpenVLA returns it.
            assert np.all(np.abs(res.action[~masked]) < 1)


@pytest.mark.parametrize("preset", ["tiny-hetero", "tiny-dinov2", "tiny-siglip", "tiny-128"])
def test_every_preset_runs_through_the_policy(ckpt_factory, preset):
    with r.load_policy(ckpt_factory(preset)) as p:
        assert p.predict_action(np.zeros((50, 70, 3), np.uint8), "go left").shape == (7,)


def test_bad_inputs_are_input_errors(policy):
    with pytest.raises(InputError, match="uint8"):
        policy.infer(np.zeros((8, 8, 3), np.float64), "go")
    with pytest.raises(InputError, match="empty"):
        policy.infer(np.zeros((8, 8, 3), np.uint8), "   ")


def test_unknown_backend_is_named(tiny_ckpt):
    with pytest.raises(BackendError, match="Did you mean 'torch'"):
        r.load_policy(tiny_ckpt, backend="trch")


def test_closed_policy_refuses(tiny_ckpt):
    p = r.load_policy(tiny_ckpt)
    p.close()
    with pytest.raises(BackendError, match="closed"):
        p.predict_action(np.zeros((8, 8, 3), np.uint8), "go")


def test_cli_make_tiny_inspect_predict(tmp_path, capsys):
    from export.cli import main as export_main
    from rlrc_runtime.cli import main as predict_main

    out = tmp_path / "cli-tiny"
    assert export_main(["make-tiny", "--out", str(out), "--preset", "tiny-dinov2", "--seed", "2"]) == 0
    assert (out / "config.json").is_file() and (out / "model.safetensors").is_file()
    assert export_main(["make-tiny", "--out", str(out)]) == 2  # refuses to overwrite
    assert "exists and is not empty" in capsys.readouterr().err
    assert export_main(["inspect", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["vision_backbone_id"] == "dinov2-vit-l" and summary["norm_stats_keys"] == ["tiny_demo"]
    assert predict_main(["--policy", str(out), "--json", "--instruction", "lift the cup"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert len(printed["action"]) == 7 and set(printed["timings_ms"]) == set(STAGES)
    assert predict_main(["--policy", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert export_main(["make-tiny", "--out", str(tmp_path / "x"), "--preset", "tinny"]) == 2
    assert "Did you mean 'tiny'" in capsys.readouterr().err

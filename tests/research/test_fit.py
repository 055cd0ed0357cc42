"""research/fit.py: the binding fit, its scores of a real checkpoint, and the grounding fit, on real demo files."""
from __future__ import annotations

import json

import numpy as np
import pytest

from research import fit


def test_one_colour_names_only_the_block_to_move():
    assert fit.one_colour("put the green block on top of the purple block") == \
        "put the green block on top of the other block"
    assert fit.one_colour("pick up the red cube") == "pick up the red cube"


def test_bad_override_is_a_usage_error(tmp_path, capsys):
    assert fit.main(["binding", "--data", str(tmp_path / "x.hdf5"), "--override", '{"no_such_field": 1}']) == 2
    err = capsys.readouterr().err
    assert "--override" in err and "no_such_field" in err
    assert fit.main(["binding", "--data", str(tmp_path / "x.hdf5"), "--override", "{hidden"]) == 2


def test_pairs_are_a_frame_twice_with_the_roles_of_each_instruction(stack_demos):
    model, transforms = fit.new_model(fit.get_preset("tiny-128"), seed=0)
    pairs = fit.load_pairs([str(stack_demos)], model, transforms, attn_role=1.0)
    sel = np.arange(min(3, len(pairs.frames)))
    batch = pairs.batch(sel)
    assert batch.pixel_values.shape[0] == 2 * len(sel)
    # Both rows of a pair show the same frame; the swapped row's roles are the recorded ones reversed (stack).
    assert bool((batch.pixel_values[0::2] == batch.pixel_values[1::2]).all())
    roles = batch.extras["roles"].numpy()
    assert (roles[1::2] == roles[0::2][:, ::-1]).all() and (roles >= 0).all()
    assert not np.array_equal(batch.input_ids[0].numpy(), batch.input_ids[1].numpy())


def test_a_short_fit_writes_its_scores(stack_demos, tmp_path):
    out = tmp_path / "fit.json"
    assert fit.main(["binding", "--data", str(stack_demos), "--preset", "tiny-128", "--steps", "2", "--every", "2",
                     "--pairs", "2", "--warmup-steps", "1", "--attn-role", "1.0", "--attn-sup", "1.0", "--threads",
                     "1", "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert [r["step"] for r in report["rows"]] == [2] and report["pairs"]["train"] > 0
    for row in report["rows"]:
        assert np.isfinite(row["loss"]) and row["attn_role"] > 0 and row["attn_sup"] > 0
        assert 0.0 <= row["train"]["both"] <= min(row["train"]["own"], row["train"]["swapped"]) <= 1.0


def test_score_a_checkpoint_on_stack_pairs(stack_demos, ckpt_factory, tmp_path):
    """score: a trained checkpoint's pair scores, the first token (dx) also alone, without training."""
    out = tmp_path / "score.json"
    assert fit.main(["score", "--data", str(stack_demos), "--checkpoint", str(ckpt_factory("tiny-128")),
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "train" in report["scores"] and set(report["scores"]) <= {"train", "held_out"}
    for s in report["scores"].values():
        assert 0.0 <= s["both"] <= min(s["own"], s["swapped"]) <= 1.0
        if "dx_pairs" in s:
            assert s["dx_pairs"] > 0 and 0.0 <= s["dx_both"] <= min(s["dx_own"], s["dx_swapped"]) <= 1.0
    assert any("dx_pairs" in s for s in report["scores"].values())  # stack pairs whose dx labels differ exist


@pytest.mark.parametrize("target", ["object", "hand"])
def test_a_short_grounding_fit_reports_errors_in_cm(stack_demos, tmp_path, target):
    out = tmp_path / "grounding.json"
    assert fit.main(["grounding", "--data", str(stack_demos), "--steps", "2", "--every", "2", "--batch-size", "4",
                     "--layers", "1", "--image-size", "64", "--target", target, "--aux", "1.0", "--threads", "1",
                     "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    (row,) = report["rows"]
    assert row["step"] == 2 and np.isfinite(row["loss"]) and row["aux"] >= 0
    # Errors are distances in cm on the table: bounded by the answer ranges (at most 110 cm for the offsets).
    assert len(row["error_cm"]) == 4 and all(0 <= e <= 110 for e in row["error_cm"])
    assert report["questions"]["held_out"] > 0 and len(report["constant_error_cm"]) == 4

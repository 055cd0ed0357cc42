"""benchmarks/binding_fit.py: the diagnostic options (the training loop itself is measured, not unit-tested)."""
from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def binding_fit(load_script):
    return load_script("binding_fit")


def test_one_colour_names_only_the_block_to_move(binding_fit):
    assert binding_fit.one_colour("put the green block on top of the purple block") == \
        "put the green block on top of the other block"
    assert binding_fit.one_colour("pick up the red cube") == "pick up the red cube"


def test_bad_override_is_a_usage_error(binding_fit, tmp_path, capsys):
    with pytest.raises(SystemExit) as exc:
        binding_fit.main(["--data", str(tmp_path / "x.hdf5"), "--override", '{"no_such_field": 1}'])
    assert exc.value.code == 2 and "--override" in capsys.readouterr().err



def test_score_a_checkpoint_on_stack_pairs(binding_fit, ckpt_factory, tmp_path):
    """--score: a trained checkpoint's pair scores, the first token (dx) also alone, without training."""
    import json

    from sim.data import DemoConfig, write_demos

    demos = tmp_path / "stack.hdf5"
    write_demos(DemoConfig(episodes=8, families=("stack",), image_size=64, seed=5), demos, progress=False)
    out = tmp_path / "score.json"
    assert binding_fit.main(["--data", str(demos), "--score", str(ckpt_factory("tiny-128")), "--json", str(out)]) == 0
    report = json.loads(out.read_text())
    assert "train" in report["scores"] and set(report["scores"]) <= {"train", "held_out"}
    for s in report["scores"].values():
        assert 0.0 <= s["both"] <= min(s["own"], s["swapped"]) <= 1.0
        if "dx_pairs" in s:
            assert s["dx_pairs"] > 0 and 0.0 <= s["dx_both"] <= min(s["dx_own"], s["dx_swapped"]) <= 1.0
    assert any("dx_pairs" in s for s in report["scores"].values())  # stack pairs whose dx labels differ exist

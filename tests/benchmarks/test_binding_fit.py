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


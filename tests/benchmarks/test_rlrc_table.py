"""benchmarks/rlrc_table.py: stage markers, config checks, and (slow) the whole --quick experiment."""
from __future__ import annotations

import json

import pytest

from rlrc_runtime.errors import ConfigError


@pytest.fixture(scope="module")
def table(load_script):
    return load_script("rlrc_table")


def test_finished_stages_are_skipped(table, tmp_path):
    calls = []
    stages = table.Stages(tmp_path)
    facts = stages.run("prune_75", lambda: calls.append(1) or {"checkpoint": "x"})
    assert calls == [1] and facts["checkpoint"] == "x" and "wall_s" in facts
    again = table.Stages(tmp_path)  # a new invocation after a restart
    assert again.run("prune_75", lambda: calls.append(2) or {"checkpoint": "y"})["checkpoint"] == "x"
    assert calls == [1] and again.facts["prune_75"]["checkpoint"] == "x"
    # Other inputs (another base, budget or method): the stage runs again into a cleared output folder.
    out = tmp_path / "pruned"
    out.mkdir()
    (out / "stale").write_text("old weights")
    assert again.run("prune_75", lambda: calls.append(3) or {"checkpoint": "z"}, {"base_digest": "b"},
                     out)["checkpoint"] == "z"
    assert calls == [1, 3] and not (out / "stale").exists()

    def boom():
        raise RuntimeError("killed mid-stage")

    with pytest.raises(RuntimeError):
        again.run("sft_75", boom)
    assert not (tmp_path / "stages" / "sft_75.json").exists()  # an interrupted stage runs again next time


def test_config_checks_and_quick_budgets(table):
    with pytest.raises(ConfigError, match="--main-ratio"):
        table.TableConfig(main_ratio=1.5)
    with pytest.raises(ConfigError, match="--ratios"):
        table.TableConfig(ratios="0.5,0.95")
    with pytest.raises(ConfigError, match="--episodes"):
        table.TableConfig(episodes=0)
    cfg = table.TableConfig(quick=True).resolved()
    assert cfg.work.endswith("_quick") and cfg.name == "rlrc_table_quick" and cfg.episodes == 1
    assert table.TableConfig(ratios="0.5,0.9", main_ratio=0.75).ratio_list == [0.5, 0.75, 0.9]


def test_missing_base_is_a_clear_error(table, tmp_path):
    cfg = table.TableConfig(base=str(tmp_path / "nope"), work=str(tmp_path / "w"), results=str(tmp_path / "r"))
    with pytest.raises(ConfigError, match="base_policy.sh"):
        table.run(cfg)


@pytest.mark.slow
def test_quick_run_end_to_end_and_resume(table, tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    args = ["--quick", "--work", str(tmp_path / "work"), "--results", str(tmp_path / "results"),
            "--base", str(tmp_path / "absent"), "--no-progress"]
    assert table.main(args) == 0
    result = json.loads((tmp_path / "results" / "rlrc_table_quick.json").read_text())
    rows = result["rows"]
    assert list(rows) == ["base", "pruned_50", "pruned_75", "pruned_90", "sft_75", "rlrc_75", "rlrc_75_int8",
                          "rlrc_75_int4", "rl_no_sft_75", "rlrc_75_no_warmup", "rlrc_75_no_bc"]
    for name, row in rows.items():
        for split in ("id", "ood"):
            assert row[split]["episodes"] == 4 and 0 <= row[split]["success_rate"] <= 1
        assert row["latency"]["p50"] > 0 and row["latency"]["peak_rss_bytes"] > 0
    assert rows["pruned_90"]["decoder_params"] < rows["pruned_50"]["decoder_params"] < rows["base"]["decoder_params"]
    assert rows["rlrc_75_int4"]["weight_bytes"] < rows["rlrc_75_int8"]["weight_bytes"]
    md = (tmp_path / "results" / "rlrc_table_quick.md").read_text()
    assert all(row["label"] in md for row in rows.values()) and "Targets:" in md
    assert set(result["targets"]) >= {"rlrc_id_within_5_points_of_base", "int4_id_within_3_points_of_rlrc"}
    assert sum(rows["rlrc_75_int4"]["bytes_by_part"].values()) >= 0.9 * rows["rlrc_75_int4"]["weight_bytes"]
    assert (tmp_path / "results" / "rlrc_table_quick.png").stat().st_size > 0
    # A second invocation finds every stage finished and only re-measures latency.
    assert table.main(args) == 0
    again = json.loads((tmp_path / "results" / "rlrc_table_quick.json").read_text())
    assert again["rows"]["rlrc_75"]["id"] == rows["rlrc_75"]["id"]
    assert again["wall_s_this_invocation"] < result["wall_s_this_invocation"]
    # The main rows only (a second base's table): the same finished stages, no ablation rows or targets.
    assert table.main([*args, "--no-ablations", "--name", "main_rows"]) == 0
    main_rows = json.loads((tmp_path / "results" / "main_rows_quick.json").read_text())
    assert list(main_rows["rows"]) == list(rows)[:8]
    assert "rl_without_sft_below_rlrc" not in main_rows["targets"] and "rl_without_sft_below_rlrc" in result["targets"]
    assert main_rows["rows"]["rlrc_75"]["id"] == rows["rlrc_75"]["id"]

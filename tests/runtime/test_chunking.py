"""Chunk execution: open loop (OpenVLA-OFT) and temporal ensembling (ACT)."""
import numpy as np
import pytest

from rlrc_runtime.chunking import ChunkExecution, ChunkExecutor
from rlrc_runtime.errors import ConfigError


def _chunk(start: float, k: int = 4) -> np.ndarray:
    return np.stack([np.full(2, start + i, np.float32) for i in range(k)])  # action i = start + i


def test_open_loop_executes_the_chunk_then_replans():
    ex = ChunkExecutor(4)
    assert ex.needs_plan() and ex.action() is None  # nothing planned: nothing to send
    ex.add(_chunk(0))
    sent = []
    for _ in range(4):
        assert not ex.needs_plan() or not sent
        sent.append(float(ex.action()[0]))
    assert sent == [0, 1, 2, 3] and ex.needs_plan() and ex.action() is None  # the chunk ran out
    partial = ChunkExecutor(4, ChunkExecution(replan=2))
    partial.add(_chunk(0))
    partial.action(), partial.action()
    assert partial.needs_plan()
    partial.add(_chunk(10))
    assert float(partial.action()[0]) == 10  # the newest chunk wins


def test_ensemble_averages_every_prediction_for_a_step():
    ex = ChunkExecutor(4, ChunkExecution(mode="ensemble", decay=0.0))
    ex.add(_chunk(0))
    assert float(ex.action()[0]) == 0
    assert ex.needs_plan()  # default: re-plan every step
    ex.add(_chunk(100))  # predicts 100 for step 1, where the first chunk said 1
    assert float(ex.action()[0]) == pytest.approx(50.5)
    weighted = ChunkExecutor(4, ChunkExecution(mode="ensemble", decay=1.0))
    weighted.add(_chunk(0))
    weighted.action()
    weighted.add(_chunk(100))
    w = np.exp(-np.arange(2.0))
    assert float(weighted.action()[0]) == pytest.approx((1 * w[0] + 100 * w[1]) / w.sum(), rel=1e-6)
    ex.reset()
    assert ex.action() is None


def test_a_late_chunk_is_aligned_to_the_step_of_its_observation():
    ex = ChunkExecutor(4, ChunkExecution(replan=2))
    ex.add(_chunk(0))
    ex.action(), ex.action()  # steps 0, 1
    assert ex.needs_plan()  # an inference starts from the observation at step 2 ...
    assert float(ex.action()[0]) == 2  # ... and the old chunk keeps the robot moving meanwhile
    assert ex.add(_chunk(10), start=2)  # arrives at step 3: its action for step 2 is past
    assert float(ex.action()[0]) == 11 and float(ex.action()[0]) == 12
    assert not ex.add(_chunk(20), start=1)  # covers steps 1..4, all past by step 5: nothing added
    with pytest.raises(ConfigError, match="at or before now"):
        ex.add(_chunk(30), start=9)


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="mode='chunky'"):
        ChunkExecution(mode="chunky")
    with pytest.raises(ConfigError, match="at most 4"):
        ChunkExecutor(4, ChunkExecution(replan=5))
    with pytest.raises(ConfigError, match=r"\[4, D\] chunks"):
        ChunkExecutor(4).add(np.zeros((3, 7)))

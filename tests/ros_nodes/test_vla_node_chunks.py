"""The VLA node running an action-chunk policy (K actions per inference): open loop, temporal
ensembling, re-planning after a pause, and the chunk parameters' validation. Real rclpy and a real
tiny parallel-decoding policy; the camera publishes one fixed frame, so every inference plans the
same chunk and the published sequence can be checked value by value."""
from __future__ import annotations

import time

import numpy as np
import pytest

pytestmark = pytest.mark.ros

from ros_harness import (INSTRUCTION, CommandLog, FrameFeed, configure_activate, counter, make_node,  # noqa: E402
                         wait_for)
from ros_harness import feed_frame  # noqa: E402

from rclpy.lifecycle import TransitionCallbackReturn  # noqa: E402
from std_msgs.msg import Bool  # noqa: E402

import rlrc_runtime  # noqa: E402
from ros_nodes.params import CHUNK_MODES  # noqa: E402
from rlrc_runtime.chunking import MODES  # noqa: E402

K = 4
TOPIC = "/chunk_test/image"


@pytest.fixture(scope="module")
def chunk_ckpt(ckpt_factory, tmp_path_factory):
    """A tiny K-action parallel-decoding policy whose K planned actions differ (learned slots scaled up,
    the head biased to action tokens), so the order of what the node sends can be checked."""
    import torch

    from export.checkpoint import load_model, save_checkpoint

    base = ckpt_factory("tiny-128", action_chunk=K, slot_embeddings="learned")
    model, _ = load_model(base)
    with torch.no_grad():
        model.language_model.lm_head.weight[31744:32000] *= 40.0
        model.action_slots.mul_(50.0)
    return save_checkpoint(model, tmp_path_factory.mktemp("chunk") / "ckpt", tokenizer_dir=base)


@pytest.fixture(scope="module")
def planned(chunk_ckpt):
    """The chunk [K, 7] the policy plans for the feed's frame and INSTRUCTION (its rows all differ)."""
    with rlrc_runtime.load_policy(chunk_ckpt) as policy:
        chunk = policy.predict_chunk(feed_frame(), INSTRUCTION)
    assert len({tuple(row) for row in chunk.tolist()}) == K
    return chunk


def start(ros, ckpt, **params):
    log = CommandLog(ros)
    node = make_node(ros, ckpt, **{"camera_source": "topic", "image_topic": TOPIC, "instruction": INSTRUCTION,
                                    "rate_hz": 20.0, **params})
    feed = FrameFeed(ros, TOPIC)
    configure_activate(node)
    feed.resume()
    return node, log, feed


def published(log: CommandLog) -> np.ndarray:
    with log._lock:
        return np.array([m.data for _, m in log.actions], dtype=np.float32)


def test_chunk_modes_match_the_executor():
    assert CHUNK_MODES == MODES


def test_open_loop_sends_each_chunk_in_order_with_one_inference_per_chunk(ros, chunk_ckpt, planned):
    node, log, feed = start(ros, chunk_ckpt)
    wait_for(lambda: log.n_actions() >= 3 * K, what=f"{3 * K} actions")
    feed.pause()
    wait_for(lambda: node.diagnostics_values()["inference_in_flight"] == "false", what="the last inference")
    actions = published(log)
    n = len(actions)
    inferences = counter(node, "inferences")
    assert n // K <= inferences <= n // K + 1, f"{inferences} inferences for {n} actions of chunks of {K}"
    expected = np.stack([planned[i % K] for i in range(n)])
    np.testing.assert_allclose(actions, expected, atol=1e-6)  # chunk[0], chunk[1], ... chunk[K-1], chunk[0], ...
    values = node.diagnostics_values()
    assert values["action_chunk"] == str(K) and values["chunk_mode"] == "open_loop"
    assert float(values["achieved_rate_hz"]) > float(values["inference_rate_hz"]) > 0
    assert counter(node, "holds_published") == 0 and counter(node, "deadline_misses") == 0
    ros.close(node)


def test_ensemble_replans_every_step_and_averages_the_overlapping_chunks(ros, chunk_ckpt, planned):
    # 5 Hz: an inference ends well inside a tick even on a loaded machine, so every tick re-plans
    node, log, feed = start(ros, chunk_ckpt, chunk_mode="ensemble", chunk_decay=0.5, rate_hz=5.0)
    wait_for(lambda: log.n_actions() >= 3 * K, what=f"{3 * K} actions")
    feed.pause()
    wait_for(lambda: node.diagnostics_values()["inference_in_flight"] == "false", what="the last inference")
    actions = published(log)
    assert abs(counter(node, "inferences") - len(actions)) <= 2  # re-planned every step
    # the first chunk alone covers step 0; later steps mix the rows that several chunks plan for them,
    # so they lie between those rows, and differ from a plain open-loop sequence
    np.testing.assert_allclose(actions[0], planned[0], atol=1e-6)
    lo, hi = planned.min(0) - 1e-5, planned.max(0) + 1e-5
    assert np.all((actions >= lo) & (actions <= hi))
    assert not np.allclose(actions[K:2 * K], planned, atol=1e-4)
    ros.close(node)


def test_with_a_short_replan_the_arm_moves_during_inference(ros, chunk_ckpt, planned):
    """chunk_replan 2 of 4 with an inference slower than a tick: actions keep coming at the tick rate,
    each one a row of a chunk aligned to the step its frame was taken at."""
    def slow_loader(path, **kwargs):
        policy = rlrc_runtime.load_policy(path, **kwargs)
        infer = policy.infer

        def slow(*args, **kw):
            time.sleep(0.12)  # > 2 ticks at 20 Hz
            return infer(*args, **kw)

        policy.infer = slow
        return policy

    log = CommandLog(ros)
    node = make_node(ros, chunk_ckpt, policy_loader=slow_loader, camera_source="topic", image_topic=TOPIC,
                     instruction=INSTRUCTION, rate_hz=20.0, chunk_replan=2)
    feed = FrameFeed(ros, TOPIC)
    configure_activate(node)
    feed.resume()
    wait_for(lambda: log.n_actions() >= 4 * K, what=f"{4 * K} actions")
    feed.pause()
    actions = published(log)
    rows = [int(np.argmin(np.abs(planned - a).sum(1))) for a in actions]
    np.testing.assert_allclose(actions, planned[rows], atol=1e-6)  # every action is a planned row
    assert rows[:2] == [0, 1]  # the first chunk, from its start
    assert any(r >= 2 for r in rows[2:]), "rows 2-3 go out while the next chunk is computed"
    assert counter(node, "inferences") < len(actions)
    ros.close(node)


def test_a_pause_drops_the_rest_of_the_chunk(ros, chunk_ckpt, planned):
    node, log, feed = start(ros, chunk_ckpt, rate_hz=4.0)
    pause = ros.publisher(Bool, "/vla_node/pause")
    wait_for(lambda: pause.get_subscription_count() > 0, what="the pause subscription")
    wait_for(lambda: log.n_actions() >= 2, what="two actions of the first chunk")
    pause.publish(Bool(data=True))
    wait_for(lambda: node.diagnostics_values()["paused"] == "true", what="pause")
    n_paused = log.n_actions()
    time.sleep(0.6)
    assert log.n_actions() == n_paused, "no planned action may go out while paused"
    assert n_paused < K, "the test needs the pause to land inside the first chunk"
    pause.publish(Bool(data=False))
    wait_for(lambda: log.n_actions() > n_paused, what="actions after the pause")
    np.testing.assert_allclose(published(log)[n_paused], planned[0], atol=1e-6)  # a new plan, not the old chunk
    ros.close(node)


def test_a_replan_period_longer_than_the_chunk_fails_configure_with_the_reason(ros, chunk_ckpt):
    node = make_node(ros, chunk_ckpt, chunk_replan=K + 1)
    assert node.trigger_configure() != TransitionCallbackReturn.SUCCESS
    assert f"a replan of at most {K}" in node.diagnostics_values()["last_error"]
    ros.close(node)

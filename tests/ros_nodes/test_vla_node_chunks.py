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
def chunk_ckpt(ckpt_factory):
    return ckpt_factory("tiny-128", action_chunk=K)


@pytest.fixture(scope="module")
def planned(chunk_ckpt):
    """The chunk [K, 7] the policy plans for the feed's frame and INSTRUCTION."""
    with rlrc_runtime.load_policy(chunk_ckpt) as policy:
        return policy.predict_chunk(feed_frame(), INSTRUCTION)


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
    decay = 0.5
    node, log, feed = start(ros, chunk_ckpt, chunk_mode="ensemble", chunk_decay=decay)
    wait_for(lambda: log.n_actions() >= 2 * K, what=f"{2 * K} actions")
    feed.pause()
    wait_for(lambda: node.diagnostics_values()["inference_in_flight"] == "false", what="the last inference")
    actions = published(log)
    assert abs(counter(node, "inferences") - len(actions)) <= 1  # re-planned every step
    for t, action in enumerate(actions):
        # at step t the chunks planned at steps max(0, t-K+1)..t all predict it; the oldest weighs most
        preds = [planned[t - s] for s in range(max(0, t - K + 1), t + 1)]
        w = np.exp(-decay * np.arange(len(preds)))
        np.testing.assert_allclose(action, (np.stack(preds) * (w / w.sum())[:, None]).sum(0), atol=1e-5)
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

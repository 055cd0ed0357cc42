import numpy as np
import pytest

from rlrc_runtime.action import ActionStats, ActionTokenizer, action_stats, resolve_unnorm_key
from rlrc_runtime.errors import NormStatsError, UnnormKeyError


def test_bins_and_centres_follow_openvla():
    tok = ActionTokenizer()
    assert tok.bins.shape == (256,) and tok.bins[0] == -1.0 and tok.bins[-1] == 1.0
    assert tok.bin_centers.shape == (255,)
    np.testing.assert_allclose(tok.bin_centers[0], -1 + 1 / 255)
    np.testing.assert_allclose(tok.bin_centers[-1], 1 - 1 / 255)
    assert tok.first_action_token == 31744
    assert tok.action_token_ids[0] == 31744 and tok.action_token_ids[-1] == 31999


def test_decode_matches_official_formula_over_all_ids():
    tok = ActionTokenizer()
    ids = np.arange(0, 32064)
    expected = tok.bin_centers[np.clip(32000 - ids - 1, 0, 254)]
    np.testing.assert_array_equal(tok.decode(ids), expected)
    # Non-action ids clip to the extreme bins, exactly like the official numpy code.
    assert tok.decode(np.array([5]))[0] == tok.bin_centers[254]
    assert tok.decode(np.array([32010]))[0] == tok.bin_centers[0]


def test_round_trip_lands_in_the_right_bin():
    tok = ActionTokenizer()
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, size=(1000, 7))
    ids = tok.encode(actions)
    assert ids.min() >= 31744 and ids.max() <= 31999
    decoded = tok.decode(ids)
    # Decoding returns the centre of a bin at most one bin width (2/255) from the input.
    assert np.max(np.abs(decoded - actions)) <= 2 / 255 + 1e-12
    # Bin edges: exactly -1 and 1 map to the outermost tokens and decode inside [-1, 1].
    assert tok.encode(np.array([-1.0]))[0] == 31999 and tok.encode(np.array([1.0]))[0] == 31744
    assert np.all(np.abs(tok.decode(tok.encode(np.array([-1.0, 1.0])))) < 1)


def test_unnormalize_with_mask():
    stats = ActionStats(q01=np.array([-2.0, 0.0, 10.0]), q99=np.array([2.0, 1.0, 20.0]), mask=np.array([True, True, False]))
    x = np.array([[-1.0, 0.0, 0.3], [1.0, 1.0, -0.7]])
    out = stats.unnormalize(x)
    np.testing.assert_allclose(out, [[-2.0, 0.5, 0.3], [2.0, 1.0, -0.7]])
    # normalize inverts unnormalize on masked dims and passes the rest through.
    np.testing.assert_allclose(stats.normalize(out), x)


def _stats(q01, q99, mask=None):
    a = {"q01": q01, "q99": q99}
    if mask is not None:
        a["mask"] = mask
    return {"action": a}


def test_mask_defaults_to_all_true():
    s = action_stats({"d": _stats([0.0, 0.0], [1.0, 2.0])}, None)
    assert s.mask.tolist() == [True, True]


def test_unnorm_key_resolution():
    one = {"bridge": _stats([0.0], [1.0])}
    two = {"bridge": _stats([0.0], [1.0]), "libero": _stats([0.0], [1.0])}
    assert resolve_unnorm_key(one, None) == "bridge"
    with pytest.raises(UnnormKeyError, match=r"\['bridge', 'libero'\]"):
        resolve_unnorm_key(two, None)
    with pytest.raises(UnnormKeyError, match="valid keys: \\['bridge', 'libero'\\]"):
        resolve_unnorm_key(two, "fractal")
    with pytest.raises(NormStatsError, match="no norm_stats"):
        resolve_unnorm_key({}, None)


@pytest.mark.parametrize(
    "bad, message",
    [
        (_stats([0.0, 1.0], [1.0, 0.5]), "q99 < q01 on dimensions \\[1\\]"),
        (_stats([0.0, float("nan")], [1.0, 1.0]), "NaN or Inf"),
        (_stats([-1e308, 0.0], [1e308, 1.0]), "overflows on dimensions \\[0\\]"),
        (_stats([0.0, 0.0], [1.0]), "equal-length"),
        ({"action": {"q01": [0.0]}}, "lacks 'q99'"),
        ({"proprio": {}}, "no 'action' entry"),
    ],
)
def test_malformed_stats_rejected(bad, message):
    with pytest.raises(NormStatsError, match=message):
        action_stats({"d": bad}, "d")

"""Post-hoc length calibration: the LOWESS by hand (ties, robustness), the calibrated reward flat in length with its
within-length order kept, the saved file and its refusals."""

from __future__ import annotations

import json

import numpy as np
import pytest

from crs.config import ConfigError
from crs.rm.length_calibration import (
    RUN_CALIBRATION_SET,
    LengthCalibration,
    fit_length_calibration,
    lowess,
    read_length_calibration,
    write_length_calibration,
)
from crs.rm.metrics import spearman


def test_lowess_matches_a_hand_computation_on_five_points() -> None:
    # span 0.8 of 5 points: neighbourhoods of k = 4. At x0 = 3 the 4th nearest distance is h = 2, so the weights are
    # (1 - (d/2)^3)^3: 0, (7/8)^3, 1, (7/8)^3, 0; the neighbourhood is symmetric, so the line's value at 3 is the
    # weighted mean of y.
    x, y = np.array([1.0, 2, 3, 4, 5]), np.array([1.0, 3, 2, 5, 4])
    grid, fit = lowess(x, y, span=0.8, iterations=0)
    assert grid.tolist() == [1, 2, 3, 4, 5]
    a = (7 / 8) ** 3
    assert fit[2] == pytest.approx((3 * a + 2 + 5 * a) / (2 * a + 1), rel=1e-12)
    # At x0 = 1: h = 3, weights 1, (26/27)^3, (19/27)^3, 0, 0: a weighted straight line through the first three points.
    weights = np.array([1.0, (26 / 27) ** 3, (19 / 27) ** 3])
    line = np.polyfit(x[:3], y[:3], 1, w=np.sqrt(weights))  # polyfit weighs residuals: the square root of ours
    assert fit[0] == pytest.approx(np.polyval(line, 1.0), rel=1e-12)


def test_lowess_with_tied_lengths_averages_the_ties_it_is_left_with() -> None:
    # k = 3 of 6. At 1: h = 1 (two points at distance 0, the third at 1): only the two ties weigh; at 2: h = 1, only
    # x = 2 itself; at 3: three ties, h = 0: exactly those three.
    x, y = np.array([1.0, 1, 2, 3, 3, 3]), np.array([2.0, 4, 7, 1, 2, 6])
    grid, fit = lowess(x, y, span=0.5, iterations=0)
    assert grid.tolist() == [1, 2, 3]
    assert fit.tolist() == pytest.approx([3.0, 7.0, 3.0])


def test_lowess_robustness_passes_ignore_an_outlier() -> None:
    x = np.arange(20, dtype=float)
    y = 2 * x + 1
    y[7] += 100
    _, plain = lowess(x, y, span=0.5, iterations=0)
    _, robust = lowess(x, y, span=0.5, iterations=1)
    line = 2 * x + 1
    assert np.abs(plain - line).max() > 1  # the outlier pulls its neighbourhood
    np.testing.assert_allclose(robust, line, atol=1e-9)  # its bisquare weight is 0: the other points lie on the line


def test_lowess_refuses_what_it_cannot_fit() -> None:
    with pytest.raises(ValueError, match="one non-zero length"):
        lowess([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="span"):
        lowess([1.0, 2.0], [1.0, 2.0], span=0)
    with pytest.raises(ValueError, match="at least 2 replies"):
        fit_length_calibration([3.0], [1.0], "one reply", "src")


def _synthetic(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lengths (with many ties), a content signal independent of them, and scores = f(length) + content."""
    lengths = rng.integers(20, 200, n).astype(float)
    content = rng.normal(size=n)
    trend = 2.0 * np.log(lengths) + np.sin(lengths / 30.0)  # rises, not in a straight line
    return lengths, content, trend + content


def test_the_calibrated_score_is_flat_in_length_and_keeps_the_order_within_a_length() -> None:
    rng = np.random.default_rng(0)
    lengths, content, scores = _synthetic(rng, 600)
    calibration = fit_length_calibration(lengths, scores, "synthetic", "f(length) + content")
    calibrated = calibration.apply(scores, lengths)
    assert spearman(lengths.tolist(), scores.tolist()) > 0.5  # the control: the raw score is mostly length
    assert abs(spearman(lengths.tolist(), calibrated.tolist())) < 0.05
    _, trend_left = lowess(lengths, calibrated)
    assert np.abs(trend_left).max() < 0.2 * content.std()  # the LOWESS of the calibrated score is flat
    assert spearman(content.tolist(), calibrated.tolist()) > 0.9  # the content is what is left
    same = lengths[:, None] == lengths[None, :]
    order_raw, order_calibrated = np.sign(scores[:, None] - scores[None, :]), np.sign(calibrated[:, None] - calibrated)
    assert same.sum() > 2 * len(lengths) and (order_raw[same] == order_calibrated[same]).all()
    # Fitted once, it holds on new replies from the same distribution.
    fresh_lengths, _, fresh_scores = _synthetic(rng, 600)
    fresh = calibration.apply(fresh_scores, fresh_lengths)
    assert abs(spearman(fresh_lengths.tolist(), fresh.tolist())) < 0.1


def test_its_statistics_are_those_of_the_calibrated_score_on_the_calibration_set() -> None:
    lengths, _, scores = _synthetic(np.random.default_rng(1), 200)
    calibration = fit_length_calibration(lengths, scores, "synthetic", "src")
    calibrated = scores - calibration.trend_at(lengths)
    assert calibration.stats["mean"] == pytest.approx(calibrated.mean(), abs=1e-12)
    assert calibration.stats["std"] == pytest.approx(calibrated.std(), rel=1e-12)  # population std, as reward_stats
    assert calibration.raw_stats["std"] == pytest.approx(scores.std(), rel=1e-12)
    assert calibration.stats["std"] < 0.9 * calibration.raw_stats["std"]  # the spread due to length is gone


def test_the_trend_is_interpolated_between_lengths_and_held_beyond_them() -> None:
    calibration = LengthCalibration(
        np.array([10.0, 20.0, 40.0]), np.array([1.0, 3.0, 4.0]), 0.5, 0, {}, {}, "hand", "src"
    )
    assert calibration.trend_at([5, 10, 15, 30, 40, 400]).tolist() == [1.0, 1.0, 2.0, 3.5, 4.0, 4.0]
    assert calibration.apply([[5.0, 5.0]], [[15, 400]]).tolist() == [[3.0, 1.0]]


def test_a_saved_calibration_reads_back_identical(tmp_path) -> None:
    lengths, _, scores = _synthetic(np.random.default_rng(2), 50)
    calibration = fit_length_calibration(lengths, scores, RUN_CALIBRATION_SET.format(split="val"), "rm", 0.5, 2)
    write_length_calibration(tmp_path / "cal.json", calibration)
    back = read_length_calibration(tmp_path / "cal.json")
    assert back.lengths.tolist() == calibration.lengths.tolist() and back.trend.tolist() == calibration.trend.tolist()
    assert (back.span, back.iterations, back.stats, back.calibration_set) == (
        0.5,
        2,
        calibration.stats,
        "the run's own val replies",
    )
    assert back.digest == calibration.digest and back.fitted_on_run


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: {"lengths": [1, 2]}, "is not a length calibration"),
        (lambda d: {**d, "length_unit": "tokens"}, "length_unit 'tokens'"),
        (lambda d: {**d, "trend": d["trend"][:-1]}, "one non-zero length"),
        (lambda d: {**d, "lengths": d["lengths"][::-1]}, "strictly increasing"),
        (lambda d: {**d, "trend": [None] * len(d["trend"])}, "finite numbers"),
        (lambda d: {**d, "stats": {"mean": 0.0}}, "'stats' needs a finite mean and std"),
    ],
)
def test_a_misshapen_file_is_refused_naming_it(tmp_path, change, message) -> None:
    calibration = fit_length_calibration([1.0, 2.0, 3.0], [1.0, 2.0, 2.5], "hand", "src")
    path = tmp_path / "cal.json"
    path.write_text(json.dumps(change(calibration.to_json())))
    with pytest.raises(ConfigError, match=message) as caught:
        read_length_calibration(path)
    assert str(path) in str(caught.value) and "fit_length_calibration.py" in str(caught.value)


def test_a_missing_or_unreadable_file_is_refused(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        read_length_calibration(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not a JSON file"):
        read_length_calibration(tmp_path / "bad.json")


def test_a_run_calibration_of_another_reward_is_refused() -> None:
    own = fit_length_calibration([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], RUN_CALIBRATION_SET.format(split="val"), "rm")
    same = {"mean": own.raw_stats["mean"], "std": own.raw_stats["std"]}
    own.check_same_reward(same, "run/length_calibration.json")  # the reward it was fitted to: accepted
    # The same reward rescored in bf16 (other batches) moves its statistics a little: still accepted.
    own.check_same_reward({"mean": same["mean"] + 1e-3 * same["std"], "std": same["std"] * 1.001}, "run/cal.json")
    with pytest.raises(ConfigError, match="refit it"):
        own.check_same_reward({**same, "mean": same["mean"] + 1}, "run/length_calibration.json")
    other = fit_length_calibration([1.0, 2.0, 3.0], [1.0, 2.0, 4.0], "the replies of a file", "rm")
    other.check_same_reward({**same, "mean": 9.0}, "cal.json")  # fitted on other replies: nothing to compare

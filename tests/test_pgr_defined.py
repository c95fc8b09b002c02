"""PGR is undefined, not 1e14, when the ceiling beats the weak model by a rounding step only."""
import numpy as np
import pytest

from w2s_scale import intervals
from w2s_scale.aggregate import DROP_GAP, pgr_against_means
from w2s_scale.metrics import pgr, pgr_point

WEAK = 0.7
ROUNDING = 0.7 + 1e-16 * 5  # 0.7000000000000005: what two float sums of one accuracy can differ by


@pytest.mark.parametrize("ceiling", [ROUNDING, 0.7, 0.69])
def test_no_gap_is_undefined(ceiling):
    assert pgr(WEAK, ceiling, 0.8) is None


def test_a_real_gap_is_defined():
    assert pgr(0.7, 0.8, 0.75) == pytest.approx(0.5)
    assert pgr(0.7, 0.7 + 1e-6, 0.7) == 0.0


def test_means_with_a_rounding_gap_drop_the_run():
    row = {"dataset": "d", "weak": "w", "strong": "s", "transfer_acc": 0.8}
    means = {("d", "w"): WEAK, ("d", "s"): ROUNDING}
    assert pgr_against_means(row, means) == (None, DROP_GAP)


def test_a_point_is_undefined_as_a_whole_when_its_seed_means_have_no_gap():
    # seed 0's ceiling beats its weak model, seed 1's does not, and the seed means are equal
    # (up to rounding): the point's anchors are the means, so the point is undefined
    assert pgr(0.6, 0.65, 0.62) is not None
    assert pgr_point([0.6, 0.8], [0.65, 0.75], [0.62, 0.9]) is None


def test_bootstraps_leave_out_rounding_gaps():
    same = np.array([1.0, 0.0] * 50)  # weak and ceiling right on the same examples: no gap
    estimate = intervals.pgr([(same, same.copy(), same.copy())], n_boot=50)
    assert estimate.value is None and estimate.lo is None
    assert intervals.pgr_draws([(same, same.copy(), same.copy())], n_boot=50) == []

"""Transfer-run diagnostics against hand-computed values: agreement, misfit, gain, ECE."""
import numpy as np
import pytest

from w2s_scale.diagnostics import (agreement, expected_calibration_error, transfer_diagnostics,
                                   two_class)


def test_agreement_by_hand():
    a = two_class([0.9, 0.2, 0.6, 0.4])
    b = two_class([0.7, 0.3, 0.3, 0.1])
    assert agreement(a, b) == 0.75  # the third example disagrees
    with pytest.raises(ValueError):
        agreement(a, b[:3])


def test_ece_by_hand():
    # confidences 0.95 (bin 10, right), 0.92 (bin 10, wrong), 0.65 (bin 7, right), 0.55 (bin 6, wrong)
    probs = two_class([0.95, 0.92, 0.35, 0.55])
    labels = np.array([1, 0, 0, 0])
    # bin (0.9, 1]: acc 1/2, conf 0.935 -> 2/4 * 0.435; (0.6, 0.7]: 1/4 * |1 - 0.65|;
    # (0.5, 0.6]: 1/4 * |0 - 0.55|
    expected = 0.5 * 0.435 + 0.25 * 0.35 + 0.25 * 0.55
    assert expected_calibration_error(probs, labels) == pytest.approx(expected)
    # edges: a confidence of exactly 0.7 belongs to (0.6, 0.7], with 0.65; one bin of 2 then
    edge = expected_calibration_error(two_class([0.7, 0.35]), np.array([1, 0]))
    assert edge == pytest.approx(abs(1.0 - 0.675))
    # three classes: confidence is the max probability
    three = np.array([[0.2, 0.5, 0.3], [0.1, 0.1, 0.8]])
    assert expected_calibration_error(three, np.array([0, 2])) == pytest.approx(0.5 * 0.5 + 0.5 * 0.2)


def test_transfer_diagnostics_by_hand():
    labels = np.array([1, 0, 1, 0])
    weak = two_class([0.8, 0.6, 0.3, 0.2])      # right, wrong, wrong, right: acc 0.5
    student = two_class([0.9, 0.4, 0.7, 0.6])   # right, right, right, wrong: acc 0.75
    weak_b, student_b = two_class([0.7, 0.2]), two_class([0.6, 0.9])
    d = transfer_diagnostics(labels, student, weak, student_b, weak_b)
    assert d["agreement_with_weak_test"] == 0.25   # only the first example agrees
    assert d["misfit"] == 0.75
    assert d["gain_over_weak"] == pytest.approx(0.25)
    assert d["train_agreement_with_weak"] == 0.5
    assert d["weak_ece"] == pytest.approx(expected_calibration_error(weak, labels))
    assert d["n_test_diagnostics"] == 4


def test_summary_table_and_scatter_of_gain_against_misfit(tmp_path):
    from w2s_scale.figures import draw_gain_misfit
    from w2s_scale.report import format_diagnostics

    rows = [{"seed": s, "weak": "w", "strong": "s", "loss": loss, "misfit": m, "gain_over_weak": g,
             "agreement_with_weak_test": 1 - m, "agreement_with_weak": 0.9, "ece": 0.1,
             "weak_ece": 0.2, "chosen_step": None}
            for s, (loss, m, g) in enumerate([("xent", 0.1, 0.05), ("rce", 0.2, 0.12)])]
    text = format_diagnostics(rows)
    assert "misfit (test)" in text and "0.120" in text
    assert format_diagnostics([{"seed": 0, "misfit": None}]) == ""
    assert format_diagnostics([dict(rows[0], dataset="sst2")]).splitlines()[1].split()[0] == "dataset"
    assert draw_gain_misfit(rows, tmp_path) == [tmp_path / "gain-vs-misfit.png"]
    assert (tmp_path / "gain-vs-misfit.png").stat().st_size > 1000
    assert draw_gain_misfit([{"seed": 0, "misfit": None}], tmp_path / "none") == []

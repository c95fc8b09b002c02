"""EleutherAI's losses through the real engine (DeepSpeed ZeRO-3, tiny GPT-2 models): logconf_eleuther
with a rolling buffer longer than the batch (so earlier steps' predictions matter) and window with
radius midweak give the same transfer models on 2 ranks, stopped, killed and resumed mid-run, as on
1 rank uninterrupted: the buffer is gathered in the global batch's order and restored from the
checkpoint. The runs are the session's (tests/conftest.py: interrupted_experiment, whose
logconf_eleuther run is the interrupted one, and one_rank_experiment)."""
import json

import numpy as np

from conftest import ELEUTHER, WINDOW, predictions, run_predictions


def test_eleuther_losses_one_rank_equals_two_ranks_stopped_and_resumed(interrupted_experiment,
                                                                       one_rank_experiment):
    two = interrupted_experiment
    assert two.completed[0] == 0, two.completed[1][-3000:]
    events = [json.loads(line) for line in (two.interrupted / "log.jsonl").read_text().splitlines()]
    assert [e for e in events if e["event"] == "resumed"][0]["step"] > 0
    np.testing.assert_allclose(run_predictions(two.interrupted), predictions(one_rank_experiment, ELEUTHER),
                               atol=1e-5, err_msg=ELEUTHER)
    np.testing.assert_allclose(predictions(two.results, WINDOW), predictions(one_rank_experiment, WINDOW),
                               atol=1e-5, err_msg=WINDOW)
    # midweak: the median |weak p1 - 0.5| over the training set (B, as labelled by the weak model)
    seed_dir = one_rank_experiment / "tiny/jsonl/seed0"
    weak = [json.loads(line)["p1"] for line in
            (seed_dir / "gt-gpt2-weak/weak_labels.jsonl").read_text().splitlines()]
    conf = np.sort(np.abs(np.array(weak) - 0.5))
    lower_median = conf[(len(conf) - 1) // 2]
    resolved = [json.loads(line) for line in (seed_dir / WINDOW / "log.jsonl").read_text().splitlines()
                if json.loads(line)["event"] == "loss_params"]
    assert abs(resolved[0]["resolved"]["radius"] - lower_median) < 1e-5

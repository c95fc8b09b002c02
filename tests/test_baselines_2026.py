"""Two of issue 23's 2026 baselines as label sources: training only on confident weak labels
(source: confident, w2s_scale/labels.py) and contrast-consistent search probes (probe kind ccs,
w2s_scale/ccs.py): the confidence rule by hand, CCS's optimiser on synthetic contrast pairs, its
orientation by the weak labels only, contrast pairs from the task's answer words, bad settings
stopped with one line, and both sources end to end on tiny random-initialised models."""
import json

import numpy as np
import pytest

from conftest import run_w2s, tiny_config, write_config
from w2s_scale import ccs
from w2s_scale.config import ConfigError, ModelConfig
from w2s_scale.labels import confidence, confident_keep
from w2s_scale.loading import load_config


def soft(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], 1)


# --- the confidence rule ---------------------------------------------------------------------------

IDS = ["e", "d", "c", "b", "a"]
P1 = [0.9, 0.1, 0.8, 0.2, 0.5]  # confidences 0.9, 0.9, 0.8, 0.8, 0.5: two ties


def test_confidence_is_max_class_probability_ordered_as_distance_from_half():
    np.testing.assert_allclose(confidence(soft(P1)), [0.9, 0.9, 0.8, 0.8, 0.5])
    p1 = np.random.default_rng(0).random(50)
    conf = confidence(soft(p1))
    np.testing.assert_array_equal(np.argsort(conf, kind="stable"), np.argsort(np.abs(p1 - 0.5), kind="stable"))
    np.testing.assert_allclose(confidence(np.array([[0.2, 0.5, 0.3]])), [0.5])  # K = 3: max_k p_k


@pytest.mark.parametrize("fraction, kept", [
    (1.0, [0, 1, 2, 3, 4]),
    (0.8, [0, 1, 2, 3]),
    (0.6, [0, 1, 3]),   # 3 kept: both 0.9s, then of the tied 0.8s the smaller id ("b" < "c")
    (0.4, [0, 1]),
    (0.29, [1]),        # floor(1.45) = 1: of the tied 0.9s, id "d" before "e"
    (0.1, [1]),         # floor(0.5) = 0, but at least one is kept
])
def test_keep_fraction_keeps_exactly_the_most_confident(fraction, kept):
    assert confident_keep(IDS, soft(P1), "keep_fraction", fraction).tolist() == kept


def test_keep_fraction_floor_is_exact_and_ties_follow_ids_not_rows():
    p1 = np.full(100, 0.7)
    ids = [f"x{i:03d}" for i in range(100)][::-1]  # rows in reverse id order
    kept = confident_keep(ids, soft(p1), "keep_fraction", 0.29)
    assert len(kept) == 29  # 0.29 x 100 is 28.999... in floating point
    assert sorted(ids[i] for i in kept) == [f"x{i:03d}" for i in range(29)]
    # 0.7 and 0.3 are equally confident, whatever float noise says
    assert confident_keep(["a", "b"], soft([0.3, 0.7]), "keep_fraction", 0.5).tolist() == [0]


def test_threshold_keeps_those_strictly_above():
    assert confident_keep(IDS, soft(P1), "threshold", 0.8).tolist() == [0, 1]
    assert confident_keep(IDS, soft(P1), "threshold", 0.75).tolist() == [0, 1, 2, 3]
    assert confident_keep(IDS, soft(P1), "threshold", 0.95).tolist() == []


# --- CCS on synthetic contrast pairs -----------------------------------------------------------------

def synthetic_pairs(n=300, d=16, seed=0):
    """Contrast pairs where only dimension 3 says which answer is true: +-1.5 on x+ and the
    opposite on x-; every other dimension is a large feature shared by both texts (the document,
    not its truth) plus noise, and each side has its own offset (the answer word)."""
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, 2, n)
    sign = (2 * truth - 1)[:, None]
    shared = rng.normal(0, 3, (n, d))
    shared[:, 3] = 0
    e3 = np.eye(d)[3]
    pos = shared + 1.5 * sign * e3 + rng.normal(0, 0.5, (n, d)) + 2.0
    neg = shared - 1.5 * sign * e3 + rng.normal(0, 0.5, (n, d)) - 1.0
    return np.concatenate([neg, pos], 1), truth


def noisy_weak(truth, accuracy=0.7, seed=1):
    rng = np.random.default_rng(seed)
    right = rng.random(len(truth)) < accuracy
    p1 = np.where(right, truth, 1 - truth) * 0.6 + 0.2  # 0.8 / 0.2 soft labels
    return soft(p1)


@pytest.fixture(scope="module")
def synthetic_fit():
    x, truth = synthetic_pairs()
    weak = noisy_weak(truth)
    probs, info = ccs.relabel(x, weak, seed=0, restarts=4, steps=600)
    return x, truth, weak, probs, info


def test_ccs_recovers_the_direction_that_separates_the_pairs(synthetic_fit):
    x, truth, weak, probs, info = synthetic_fit
    assert probs.shape == (len(truth), 2)
    np.testing.assert_allclose(probs.sum(1), 1.0)
    accuracy = float(np.mean(probs.argmax(1) == truth))
    assert accuracy > 0.9 and accuracy > float(np.mean(weak.argmax(1) == truth)) + 0.15, accuracy
    # the fitted weight points along dimension 3, not along the large shared features
    d = x.shape[1] // 2
    probe = ccs.fit(ccs.normalise(x[:, :d]), ccs.normalise(x[:, d:]), seed=0, restarts=4, steps=600)
    assert abs(probe.w[3]) / np.linalg.norm(probe.w) > 0.9
    assert probe.loss == info["ccs_loss"] == min(info["ccs_restart_losses"]) < 0.2
    # the loss it reached is below a probe of the same norm along a shared feature
    import torch

    along_shared = torch.as_tensor(np.eye(d)[0] * np.linalg.norm(probe.w))
    neg, pos = (torch.as_tensor(ccs.normalise(v)) for v in (x[:, :d], x[:, d:]))
    shared_loss = float(ccs.ccs_loss(torch.sigmoid(neg @ along_shared), torch.sigmoid(pos @ along_shared)))
    assert probe.loss < shared_loss


def test_ccs_is_deterministic_given_the_seed(synthetic_fit):
    x, truth, weak, probs, info = synthetic_fit
    again, again_info = ccs.relabel(x, weak, seed=0, restarts=4, steps=600)
    np.testing.assert_array_equal(again, probs)
    assert again_info == info
    _, other = ccs.relabel(x, weak, seed=1, restarts=4, steps=600)
    assert other["ccs_restart_losses"] != info["ccs_restart_losses"]  # another seed, other starts


def test_ccs_orientation_follows_the_weak_labels_only(synthetic_fit):
    x, truth, weak, probs, info = synthetic_fit
    flipped_weak = weak[:, ::-1].copy()
    flipped, flipped_info = ccs.relabel(x, flipped_weak, seed=0, restarts=4, steps=600)
    np.testing.assert_allclose(flipped, probs[:, ::-1], atol=1e-12)  # the same probe, other sign
    assert flipped_info["ccs_flipped"] != info["ccs_flipped"]
    assert flipped_info["ccs_loss"] == info["ccs_loss"]  # the fit never saw the weak labels
    assert np.mean(flipped.argmax(1) == truth) < 0.1  # wrong weak labels orient it wrongly


def test_orient_by_hand():
    p1 = np.array([0.9, 0.8, 0.3, 0.4])
    assert ccs.orient(p1, np.array([0.9, 0.9, 0.1, 0.1]))[1] is False
    np.testing.assert_allclose(ccs.orient(p1, np.array([0.1, 0.1, 0.9, 0.9]))[0], 1 - p1)
    # agreement exactly one half: the soft correlation decides
    assert ccs.orient(p1, np.array([0.9, 0.4, 0.6, 0.1]))[1] is False
    assert ccs.orient(p1, np.array([0.1, 0.6, 0.4, 0.9]))[1] is True


# --- contrast pairs ----------------------------------------------------------------------------------

def test_contrast_pairs_use_the_task_answer_words(tiny_models, tiny_data):
    from w2s_scale.config import DataConfig
    from w2s_scale.data.values import Example
    from transformers import AutoTokenizer

    plain = ModelConfig(name=str(tiny_models["gpt2-strong"]))
    jsonl = DataConfig(dataset="jsonl", path=str(tiny_data))
    generic = ccs.contrast_spec(plain, jsonl)
    assert (generic.template, generic.answers()) == ("{text}\nAnswer:", (" no", " yes"))
    # the testbed's datasets: their own words, in the label-token head's default format
    own = ccs.contrast_spec(plain, DataConfig(dataset="aar_binary", path="x"))
    assert (own.template, own.answers()) == ("{text}\nLabel:", ("False", "True"))
    # a label-token strong model: its own template and words
    lt = ModelConfig(name=str(tiny_models["gpt2-strong"]), head="label_tokens",
                     label_tokens={"template": "Review: {text}\nSentiment:", "words": ["bad", "good"],
                                   "leading_space": True})
    spec = ccs.contrast_spec(lt, jsonl, layer=1)
    assert (spec.template, spec.answers(), spec.layer) == ("Review: {text}\nSentiment:", (" bad", " good"), 1)

    tok = AutoTokenizer.from_pretrained(tiny_models["gpt2-strong"])
    examples = [Example(id=f"b{i}", text=t, label=0) for i, t in enumerate(["a fine film", "dull " * 40])]
    ids, pairs = ccs.contrast_tokens(generic, plain, examples, tok, max_length=16, overlong="truncate")
    assert ids == ["b0", "b1"] and len(pairs) == 4
    assert tok.decode(pairs.input_ids[0]) == "a fine film\nAnswer: no"
    assert tok.decode(pairs.input_ids[2]) == "a fine film\nAnswer: yes"
    # an over-long document is cut inside the template: the answer stays last
    assert tok.decode(pairs.input_ids[3]).endswith("\nAnswer: yes") and len(pairs.input_ids[3]) <= 16
    ids, pairs = ccs.contrast_tokens(generic, plain, examples, tok, max_length=16, overlong="drop")
    assert ids == ["b0"] and len(pairs) == 2


# --- bad settings: one line naming the field -----------------------------------------------------------

@pytest.mark.parametrize("labels, data, needles", [
    ({"source": "confident", "keep_fraction": 0}, {}, ["labels.0.keep_fraction", "greater than 0"]),
    ({"source": "confident", "keep_fraction": 1.5}, {}, ["labels.0.keep_fraction", "less than or equal to 1"]),
    ({"source": "confident", "threshold": 1.0}, {}, ["labels.0.threshold"]),
    ({"source": "confident", "keep_fraction": 0.5, "threshold": 0.8}, {}, ["labels.0", "not both"]),
    ({"source": "weak", "keep_fraction": 0.5}, {}, ["labels.0", "keep_fraction", "source: confident"]),
    ({"source": "probe", "probe": {"kind": "ccs", "restarts": 0}}, {}, ["labels.0.probe.restarts"]),
    ({"source": "probe", "probe": {"kind": "ccs"}}, {"num_classes": 3},
     ["labels.0.probe.kind", "ccs", "3 classes"]),
])
def test_bad_baseline_settings_are_one_line_naming_the_field(labels, data, needles, tmp_path,
                                                             tiny_models, tiny_data):
    cfg = tiny_config(tmp_path / "results", tiny_models, tiny_data, labels=[labels])
    cfg["data"].update(data)
    with pytest.raises(ConfigError) as err:
        load_config(raw=cfg)
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_keep_fraction_below_a_batch_stops_before_any_run(tmp_path, tiny_models, tiny_data):
    from w2s_scale.errors import TooFewExamplesError
    from w2s_scale.preflight import preflight

    cfg = load_config(raw=tiny_config(tmp_path / "results", tiny_models, tiny_data,
                                      labels=[{"source": "confident", "keep_fraction": 0.05}]))
    with pytest.raises(TooFewExamplesError, match="after the confidence filter"):
        preflight(cfg, 1)


def test_ccs_layer_beyond_the_model_stops_at_preflight(tmp_path, tiny_models, tiny_data):
    from w2s_scale.errors import ProbeLayerError
    from w2s_scale.preflight import preflight

    cfg = load_config(raw=tiny_config(tmp_path / "results", tiny_models, tiny_data,
                                      labels=[{"source": "probe", "probe": {"kind": "ccs", "layer": 3}}]))
    with pytest.raises(ProbeLayerError, match=r"labels.probe.layer: 3 .* hidden states are 0..2"):
        preflight(cfg, 1)


# --- end to end ----------------------------------------------------------------------------------------

SOURCES = [
    {"source": "confident", "keep_fraction": 0.5},
    # a threshold (the sandbox's 0.75 keeps nothing of a tiny model's labels, all near 0.5)
    {"source": "confident", "threshold": 0.52},
    {"source": "probe", "probe": {"kind": "ccs", "mode": "relabel", "restarts": 2}},
    {"source": "probe", "probe": {"kind": "ccs", "mode": "filter", "restarts": 2}},
]


@pytest.fixture(scope="module")
def baselines_run(tiny_models, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("baselines-e2e")
    cfg = tiny_config(out / "results", tiny_models, tiny_data, losses=["xent"], labels=SOURCES)
    cfg["weak"].update(init="random")
    path = write_config(out / "cfg.yaml", cfg)
    proc = run_w2s(["experiment", "-c", str(path)], timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, proc


def labels_of(folder):
    return {json.loads(l)["id"]: json.loads(l)["p1"] for l in (folder / "weak_labels.jsonl").read_text().splitlines()}


def test_confident_source_end_to_end(baselines_run):
    out, proc = baselines_run
    seed = out / "results/tiny/jsonl/seed0"
    summary = json.loads((out / "results/tiny/summary.json").read_text())
    assert {"conf-k0.5", "conf-t0.52"} <= {r["labels"] for r in summary}
    weak = labels_of(seed / "gt-gpt2-weak")
    stage = seed / "labels-gpt2-weak-conf-k0.5"
    kept = labels_of(stage)
    metrics = json.loads((stage / "metrics.json").read_text())
    assert len(kept) == metrics["n"] == len(weak) // 2 and metrics["n_before"] == len(weak)
    assert all(weak[i] == kept[i] for i in kept)  # the weak soft labels, unchanged
    conf = lambda p: max(p, 1 - p)
    assert min(conf(p) for p in kept.values()) >= max(conf(weak[i]) for i in weak if i not in kept)
    trained = json.loads((seed / "w2s-gpt2-weak-conf-k0.5-to-gpt2-strong-xent/metrics.json").read_text())
    assert trained["n_train"] == len(kept)
    above = labels_of(seed / "labels-gpt2-weak-conf-t0.52")
    assert set(above) == {i for i, p in weak.items() if round(conf(p), 6) > 0.52}
    assert 0 < len(above) < len(weak)


def test_ccs_source_end_to_end(baselines_run):
    out, proc = baselines_run
    seed = out / "results/tiny/jsonl/seed0"
    acts_dir = seed / "acts-gpt2-strong-Lmid-contrast"
    acts = np.load(acts_dir / "activations.npy")
    assert acts.shape == (80, 2 * 64)  # x- and x+ side by side
    assert not np.allclose(acts[:, :64], acts[:, 64:])
    assert proc.stdout.count("acts-gpt2-strong-Lmid-contrast (seed 0): 80 activations") == 1  # once
    relabel = json.loads((seed / "labels-gpt2-weak-ccs-relabel-r2-gpt2-strong/metrics.json").read_text())
    assert relabel["n"] == 80 and len(relabel["ccs_restart_losses"]) == 2
    assert relabel["ccs_agreement_with_weak"] >= 0.5  # oriented by the weak labels
    filtered = json.loads((seed / "labels-gpt2-weak-ccs-filter-r2-gpt2-strong/metrics.json").read_text())
    assert filtered["n_dropped"] == int(0.1 * 80)
    trained = json.loads((seed / "w2s-gpt2-weak-ccs-filter-r2-to-gpt2-strong-xent/metrics.json").read_text())
    assert trained["n_train"] == filtered["n"]
    summary = json.loads((out / "results/tiny/summary.json").read_text())
    assert {"ccs-relabel-r2", "ccs-filter-r2"} <= {r["labels"] for r in summary}


def test_example_configs_load_and_plan():
    from pathlib import Path

    from w2s_scale.planning import plan_experiment

    repo = Path(__file__).resolve().parent.parent
    names = {}
    for config in ("confident", "ccs"):
        plans = plan_experiment(load_config(repo / "configs" / "labels" / f"{config}.yaml"))
        names[config] = {p.name for p in plans if p.seed == 0}
    assert {"labels-bert-2l-scratch-conf-t0.75", "labels-bert-2l-scratch-conf-k0.5",
            "w2s-bert-2l-scratch-conf-k0.5-to-minilm-l6-xent"} <= names["confident"]
    assert {"acts-minilm-l6-Lmid-contrast", "labels-bert-2l-scratch-ccs-relabel-minilm-l6",
            "w2s-bert-2l-scratch-ccs-filter-to-minilm-l6-xent"} <= names["ccs"]


def test_a_sweep_plans_the_same_runs_as_the_experiment(tmp_path, tiny_models, tiny_data):
    from w2s_scale.config import from_experiment
    from w2s_scale.planning import plan_experiment
    from w2s_scale.sweep import plan_sweep

    exp = load_config(raw=tiny_config(tmp_path, tiny_models, tiny_data, losses=["xent"], labels=SOURCES))
    plans = plan_experiment(exp)
    runs = plan_sweep(from_experiment(exp))
    assert {(p.dir, p.hash) for p in plans} == {(r.plan.dir, r.plan.hash) for r in runs}
    by_name = {r.name: r for r in runs}
    assert by_name["labels-gpt2-weak-conf-k0.5"].deps == ("jsonl/seed0/gt-gpt2-weak",)
    assert set(by_name["labels-gpt2-weak-ccs-relabel-r2-gpt2-strong"].deps) == {
        "jsonl/seed0/gt-gpt2-weak", "jsonl/seed0/acts-gpt2-strong-Lmid-contrast"}
    # the two CCS probes share one contrast stage; it differs from a plain probe's activations
    acts = [p for p in plans if p.kind == "activations"]
    assert [p.name for p in acts] == ["acts-gpt2-strong-Lmid-contrast"]
    plain = load_config(raw=tiny_config(tmp_path, tiny_models, tiny_data, losses=["xent"],
                                        labels=[{"source": "probe", "probe": {"kind": "knn"}}]))
    assert acts[0].hash not in {p.hash for p in plan_experiment(plain)}

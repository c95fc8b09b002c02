"""The label stage (w2s_scale/labels.py, probes.py, activations.py): ensembles and probes checked
by hand on small arrays; every label source run end to end with tiny models, reused on a second
call and by a sweep; activations under ZeRO-3 with 2 ranks equal to 1 rank; bad label configs
stopped with one line."""
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import run_w2s, tiny_config, write_config
from w2s_scale import probes
from w2s_scale.config import ConfigError
from w2s_scale.loading import load_config
from w2s_scale.labels import ensemble


def soft(p1):
    p1 = np.asarray(p1, dtype=float)
    return np.stack([1 - p1, p1], 1)


# --- ensembles -------------------------------------------------------------------------------------

def test_ensemble_mean_and_weights_by_hand():
    a, b = soft([0.9, 0.2]), soft([0.5, 0.6])
    np.testing.assert_allclose(ensemble([a, b])[:, 1], [0.7, 0.4])
    # weights 3:1 -> 0.75 a + 0.25 b
    np.testing.assert_allclose(ensemble([a, b], [3, 1])[:, 1], [0.8, 0.3])
    three = np.array([[0.2, 0.3, 0.5]]), np.array([[0.6, 0.2, 0.2]])  # K = 3 classes
    np.testing.assert_allclose(ensemble(list(three)), [[0.4, 0.25, 0.35]])


# --- probes on toy data ----------------------------------------------------------------------------

def clusters(n=20, flip=(3, 27)):
    """Two separated clusters on a line (class 0 near 0, class 1 near 10); the labels of the
    examples in `flip` are wrong."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 0.5, (n, 2)), rng.normal(10, 0.5, (n, 2))])
    truth = np.repeat([0, 1], n)
    labels = truth.copy()
    labels[list(flip)] = 1 - labels[list(flip)]
    return x, soft(labels.astype(float)), truth


def test_knn_relabel_by_hand():
    x = np.array([[0.0], [1.0], [2.0], [10.0]])
    y = soft([0.0, 1.0, 0.0, 1.0])
    # k = 2 (a point is its own nearest neighbour): 0 -> {0, 1}; 1 -> {1, 0 or 2: the earlier, 0};
    # 2 -> {2, 1}; 10 -> {10, 2}
    np.testing.assert_allclose(probes.knn_predict(x, y, x, k=2)[:, 1], [0.5, 0.5, 0.5, 0.5])
    np.testing.assert_allclose(probes.knn_predict(x, y, x, k=3)[:, 1], [1 / 3, 1 / 3, 1 / 3, 2 / 3])


@pytest.mark.parametrize("kind", ["knn", "logreg", "topo"])
def test_probe_relabel_fixes_the_flipped_labels(kind):
    x, y, truth = clusters()
    relabelled = probes.predict(kind, x, y, k=5)
    assert relabelled.shape == y.shape
    np.testing.assert_allclose(relabelled.sum(1), 1.0, atol=1e-6)
    assert (relabelled.argmax(1) == truth).all()


def test_logreg_on_separable_data_is_confident_and_zero_started():
    x, y, truth = clusters(flip=())
    p = probes.logreg_predict(x, y, x, l2=1e-3)
    assert (p.argmax(1) == truth).all() and p.max(1).min() > 0.9
    # a strong penalty keeps it near its zero start (p = 0.5)
    assert np.abs(probes.logreg_predict(x, y, x, l2=1e4)[:, 1] - 0.5).max() < 0.05


@pytest.mark.parametrize("kind", ["knn", "logreg"])
def test_filter_drops_exactly_the_fraction_that_disagrees_most(kind):
    x, y, truth = clusters()
    kept = probes.filter_indices(kind, x, y, fraction=0.1, k=5)
    assert len(kept) == 40 - 4  # floor(0.1 * 40)
    assert {3, 27}.isdisjoint(kept) and (np.diff(kept) > 0).all()
    # 0.05 of 40 = 2: exactly the two wrong labels go
    assert sorted(set(range(40)) - set(probes.filter_indices(kind, x, y, 0.05, k=5))) == [3, 27]


def test_topo_filter_drops_untrusted_points_first():
    x, y, _ = clusters()
    trusted = probes.topo_trusted(x, y, k=5)
    # a flipped point sits among the other class: no edges to its own class, not trusted (nor
    # is a point no neighbour of its class points at: outside every strong component)
    assert not trusted[3] and not trusted[27] and 34 <= trusted.sum() <= 38
    kept = probes.topo_filter(x, y, fraction=0.1, k=5)
    # the untrusted go first; then the furthest from their neighbours, up to round(0.1 * 40)
    assert len(kept) == 40 - max(4, 40 - trusted.sum()) and {3, 27}.isdisjoint(kept)
    assert set(kept) <= set(np.flatnonzero(trusted))
    # when the components alone drop more than the fraction, nothing more is dropped
    assert len(probes.topo_filter(x, y, fraction=0.01, k=5)) == trusted.sum()


def test_disagreement_is_total_variation():
    np.testing.assert_allclose(probes.disagreement(soft([0.9, 0.5]), soft([0.2, 0.5])), [0.7, 0.0])


# --- config errors ----------------------------------------------------------------------------------

def raw_config(tmp_path, tiny_models, tiny_data, labels):
    return tiny_config(tmp_path / "results", tiny_models, tiny_data, labels=labels)


@pytest.mark.parametrize("labels, needles", [
    ({"source": "ensemble", "members": [{"model": "weak"}]}, ["labels.0", "at least 2 members"]),
    ({"source": "ensemble", "members": [{"model": "weak"}, {"model": "weak", "seed_offset": 1}],
      "weights": [1.0]}, ["labels.0", "weights", "one per member"]),
    ({"source": "ensemble", "members": [{"model": "weak"}, {"model": "weak", "seed_offset": 1}],
      "weights": [1.0, -1.0]}, ["weights", ">= 0"]),
    ({"source": "ensemble", "members": [{"model": "medium"}, {"model": "weak"}]},
     ["labels.0.members.0.model", "'medium'"]),
    ({"source": "weak", "members": [{"model": "weak"}]}, ["members/weights", "source: ensemble"]),
    ({"source": "probe", "probe": {"kind": "svm"}}, ["labels.0.probe.kind", "svm"]),
    ({"source": "probe", "probe": {"contamination": 1.5}}, ["labels.0.probe.contamination"]),
    ({"source": "bootstrap"}, ["labels.0.via", "intermediate"]),
    ({"source": "weak", "s2s_iterations": -1}, ["labels.0.s2s_iterations"]),
    ("ensembel", ["labels.0.source", "ensembel"]),
])
def test_bad_label_config_is_one_line_naming_the_field(labels, needles, tmp_path, tiny_models, tiny_data):
    with pytest.raises(ConfigError) as err:
        load_config(raw=raw_config(tmp_path, tiny_models, tiny_data, labels))
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_bad_label_config_exits_2_before_any_run(tmp_path, tiny_models, tiny_data):
    cfg = write_config(tmp_path / "cfg.yaml", raw_config(
        tmp_path, tiny_models, tiny_data, {"source": "ensemble", "members": [{"model": "weak"}]}))
    proc = run_w2s(["experiment", "-c", str(cfg)], timeout=300)
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("w2s: error: labels.0")
    assert not (tmp_path / "results").exists()


def test_probe_layer_beyond_the_model_stops_at_preflight(tmp_path, tiny_models, tiny_data):
    from w2s_scale.errors import ProbeLayerError
    from w2s_scale.preflight import preflight

    cfg = load_config(raw=raw_config(tmp_path, tiny_models, tiny_data,
                                     {"source": "probe", "probe": {"layer": 3}}))
    with pytest.raises(ProbeLayerError, match=r"labels.probe.layer: 3 .* hidden states are 0..2"):
        preflight(cfg, 1)
    bad_member = raw_config(tmp_path, tiny_models, tiny_data, {"source": "ensemble", "members": [
        {"model": "weak"}, {"model": {"name": str(tmp_path / "nowhere"), "label": "other"}}]})
    with pytest.raises(Exception, match="nowhere"):
        preflight(load_config(raw=bad_member), 1)
    assert not (tmp_path / "results").exists()


# --- planning: experiment and sweep share every run -------------------------------------------------

ALL_SOURCES = [
    "weak",
    {"source": "ensemble", "members": [{"model": "weak"}, {"model": "weak", "seed_offset": 1}],
     "weights": [2, 1]},
    {"source": "probe", "probe": {"kind": "knn", "mode": "relabel"}},
    {"source": "probe", "probe": {"kind": "logreg", "mode": "filter"}},
    {"source": "probe", "probe": {"kind": "topo", "mode": "filter"}},
    {"source": "bootstrap", "via": ["mid"]},
    {"source": "weak", "s2s_iterations": 1},
]


def all_sources_config(results, tiny_models, tiny_data) -> dict:
    """Every label source in one experiment; `mid` (the bootstrap step) is the tiny Qwen2."""
    cfg = tiny_config(results, tiny_models, tiny_data, losses=["xent"])
    cfg["weak"].update(init="random")
    cfg["labels"] = [dict(entry) if isinstance(entry, dict) else entry for entry in ALL_SOURCES]
    cfg["labels"][5] = {"source": "bootstrap", "via": [{"name": str(tiny_models["qwen2"]), "label": "mid"}]}
    return cfg


def test_sweep_of_an_experiment_plans_the_same_runs(tmp_path, tiny_models, tiny_data):
    from w2s_scale.planning import plan_experiment
    from w2s_scale.config import from_experiment
    from w2s_scale.sweep import plan_sweep

    exp = load_config(raw={**all_sources_config(tmp_path, tiny_models, tiny_data), "seeds": [0, 1]})
    plans = plan_experiment(exp)
    # one ensemble is one name over seeds (one summary row), its runs one per seed
    assert len({p.name for p in plans if "ens-" in p.name}) == 2
    assert len([p for p in plans if "ens-" in p.name]) == 4
    plans = [p for p in plans if p.seed == 0]
    runs = plan_sweep(from_experiment(exp))
    assert {(p.dir, p.hash) for p in plans} == {(r.plan.dir, r.plan.hash) for r in runs if r.seed == 0}
    names = [p.name for p in plans]
    for expected in ["labels-ens-", "w2s-ens-", "acts-gpt2-strong-Lmid", "labels-gpt2-weak-knn-relabel-gpt2-strong",
                     "w2s-gpt2-weak-logreg-filter-to-gpt2-strong-xent", "w2s-gpt2-weak-to-mid-xent",
                     "w2s-gpt2-weak-to-mid-to-gpt2-strong-xent", "w2s-gpt2-weak-to-gpt2-strong-xent-s2s1",
                     "gt-gpt2-weak-seed+1"]:
        assert any(n.startswith(expected) for n in names), (expected, names)
    # different label sources never share a hash (nor a folder)
    transfers = [p for p in plans if p.kind == "transfer"]
    assert len({p.hash for p in transfers}) == len({p.dir for p in transfers}) == len(transfers) == 8
    by_name = {r.name: r for r in runs if r.seed == 0}
    chain = by_name["w2s-gpt2-weak-to-mid-to-gpt2-strong-xent"]
    assert chain.deps == ("jsonl/seed0/gt-gpt2-weak", "jsonl/seed0/w2s-gpt2-weak-to-mid-xent")
    # every run is planned after the runs it reads
    order = {r.key: i for i, r in enumerate(runs)}
    assert all(order[d] < order[r.key] for r in runs for d in r.deps)


def test_sweep_bootstraps_over_its_ladder(tmp_path, tiny_models, tiny_data):
    from w2s_scale.config import SweepConfig
    from w2s_scale.sweep import plan_sweep

    exp = tiny_config(tmp_path, tiny_models, tiny_data, losses=["xent"])
    models = [exp["weak"], {"name": str(tiny_models["qwen2"]), "label": "mid"},
              {"name": str(tiny_models["llama"]), "label": "big"}, exp["strong"]]
    sweep = SweepConfig(name="ladder", results_dir=str(tmp_path), datasets=[exp["data"]],
                        models=models, train=exp["train"], losses=["xent"], self_transfer=False,
                        labels=[{"source": "weak"}, {"source": "bootstrap"}])
    names = {r.name for r in plan_sweep(sweep)}
    # 0 -> 3 through both intermediates; 0 -> 2 through mid; adjacent pairs have no chain
    assert "w2s-gpt2-weak-to-mid-to-big-to-gpt2-strong-xent" in names
    assert "w2s-gpt2-weak-to-mid-to-big-xent" in names and "w2s-mid-to-big-to-gpt2-strong-xent" in names
    assert not any(n.count("-to-") > 1 and n.startswith("w2s-gpt2-weak-to-mid-xent") for n in names)


# --- end to end ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def all_sources_run(tiny_models, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("labels-e2e")
    cfg = write_config(out / "cfg.yaml", all_sources_config(out / "results", tiny_models, tiny_data))
    proc = run_w2s(["experiment", "-c", str(cfg)], timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, cfg, proc


def test_every_label_source_runs_end_to_end(all_sources_run):
    out, cfg, proc = all_sources_run
    seed = out / "results/tiny/jsonl/seed0"
    summary = json.loads((out / "results/tiny/summary.json").read_text())
    tags = {r["labels"] for r in summary if r["seed"] == 0}
    assert {"weak", "knn-relabel", "logreg-filter", "topo-filter", "s2s1"} <= tags
    assert any(t.startswith("ens-") for t in tags)
    # the chain's final student is scored against the original weak model and its own ceiling
    chain = next(r for r in summary if r["seed"] == 0 and r["labels"] == "boot-mid")
    assert chain["weak"] == "gpt2-weak" and chain["strong"] == "gpt2-strong" and chain["loss"] == "xent+boot-mid"
    # ... beside direct transfer: the paired difference of their PGRs (None where one is undefined)
    direct = next(r for r in summary if r["seed"] == 0 and r["labels"] == "weak")
    assert direct["pgr_vs_direct"] is None
    if chain["pgr"] is not None and direct["pgr"] is not None:
        assert chain["pgr_vs_direct"] == pytest.approx(chain["pgr"] - direct["pgr"])
    mean_rows = {r["loss"]: r for r in summary if r["seed"] == "mean"}
    assert mean_rows["xent+boot-mid"]["labels"] == "boot-mid" and "pgr_vs_direct" in mean_rows["xent+boot-mid"]
    # an ensemble is the weighted mean of its members' labels
    rows = {n: {json.loads(l)["id"]: json.loads(l)["p1"] for l in (seed / n / "weak_labels.jsonl").read_text().splitlines()}
            for n in ("gt-gpt2-weak", "gt-gpt2-weak-seed+1")}
    ens_dir = next(seed.glob("labels-ens-*"))
    ens = {json.loads(l)["id"]: json.loads(l)["p1"] for l in (ens_dir / "weak_labels.jsonl").read_text().splitlines()}
    some = next(iter(ens))
    assert ens[some] == pytest.approx((2 * rows["gt-gpt2-weak"][some] + rows["gt-gpt2-weak-seed+1"][some]) / 3, abs=2e-6)
    assert rows["gt-gpt2-weak"] != rows["gt-gpt2-weak-seed+1"]  # another seed, another model
    # filters drop 10% of B; relabel keeps all of it
    filtered = json.loads((seed / "labels-gpt2-weak-logreg-filter-gpt2-strong/metrics.json").read_text())
    assert filtered["n_dropped"] == int(0.1 * filtered["n_before"])
    trained = json.loads((seed / "w2s-gpt2-weak-logreg-filter-to-gpt2-strong-xent/metrics.json").read_text())
    assert trained["n_train"] == filtered["n"]
    acts = np.load(seed / "acts-gpt2-strong-Lmid/activations.npy")
    assert acts.shape == (80, 64) and json.loads((seed / "acts-gpt2-strong-Lmid/metrics.json").read_text())["layer"] == 1
    assert proc.stdout.count("acts-gpt2-strong-Lmid (seed 0): 80 activations") == 1  # extracted once


def test_second_call_and_sweep_reuse_every_stage(all_sources_run):
    out, cfg, first = all_sources_run
    n_runs = first.stdout.count("(seed 0): starting") + first.stdout.count("activations of layer") + \
        first.stdout.count(" labels, accuracy")
    again = run_w2s(["experiment", "-c", str(cfg)], timeout=600)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "starting" not in again.stdout and again.stdout.count("done already, reused") == n_runs
    # `w2s sweep` over the same config runs only what is not done: nothing
    from w2s_scale.sweep import disk_state, plan_sweep
    from w2s_scale.loading import load_sweep

    assert all(disk_state(r) == "done" for r in plan_sweep(load_sweep(cfg)))


# --- activations: 2 ranks under ZeRO-3 == 1 rank ------------------------------------------------------

def test_activations_zero3_two_ranks_equal_one_rank(tmp_path, tiny_models, tiny_data):
    key = "jsonl/seed0/acts-gpt2-strong-L2"
    acts = {}
    for nproc in (1, 2):
        results = tmp_path / f"r{nproc}"
        cfg = tiny_config(results, tiny_models, tiny_data, losses=["xent"],
                          labels=[{"source": "probe", "probe": {"layer": 2}}])
        path = write_config(tmp_path / f"cfg{nproc}.yaml", cfg)
        proc = run_w2s(["run", "-c", str(path), "--run", key, "--nproc", str(nproc),
                        "--launcher", "torchrun" if nproc > 1 else "none"], timeout=900)
        assert proc.returncode == 0, proc.stderr[-3000:]
        folder = results / "tiny" / key.replace("/", "/", 2)
        assert (folder / "DONE").exists()
        assert json.loads((folder / "metrics.json").read_text())["layer"] == 2
        acts[nproc] = np.load(folder / "activations.npy")
    assert acts[1].shape == (80, 64)
    np.testing.assert_allclose(acts[2], acts[1], atol=1e-5)

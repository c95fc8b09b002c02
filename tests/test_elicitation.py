"""labels: {source: elicitation} (w2s_scale/elicitation.py): the annealing's temperature schedule
and acceptance rule; the search finds the optimum of a hand-made problem and keeps a class share
when asked; the mutual-predictability score through a real tiny causal LM equals a direct
computation; the stage never reads a label; bad settings stopped in one line; a tiny experiment
with each mode, end to end, reused on a second call."""
from __future__ import annotations

import inspect
import itertools
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import run_w2s, tiny_config, write_config
from w2s_scale import elicitation as el
from w2s_scale.config import ConfigError, DataConfig, ElicitationConfig, ModelConfig
from w2s_scale.loading import load_config


# --- the annealing on hand-made scores -----------------------------------------------------------

def test_temperature_schedule_and_acceptance_rule():
    # the authors' `log` schedule on the count of accepted changes: T0 / (1 + 2 ln(1 + n))
    assert el.temperature(0, 10, 0.01) == 10
    assert el.temperature(1, 10, 0.01) == pytest.approx(10 / (1 + 2 * math.log(2)))
    assert el.temperature(10**6, 10, 0.5) == 0.5  # floored at t_min
    temps = [el.temperature(n, 10, 0.01) for n in range(50)]
    assert all(a > b for a, b in zip(temps, temps[1:]))
    # a rise is always taken; a fall of |d| with probability exp(d / T)
    assert el.accept(0.0, 1.0, 0.999) and el.accept(2.0, 0.01, 0.999)
    assert el.accept(-1.0, 1.0, 0.36) and not el.accept(-1.0, 1.0, 0.37)  # e^-1 = 0.3679
    assert not el.accept(-1.0, 0.1, 0.0001)  # e^-10 = 4.5e-5


def test_contexts_are_the_first_labelled_others_in_each_examples_order():
    ranks = el.context_ranks(6, np.random.default_rng(0))
    # the others in an order of their own, each example after all of them in its own
    assert (np.diag(ranks) == 6).all() and all(len(set(r[np.arange(6) != i])) == 5 and r.max() == 6
                                               for i, r in enumerate(ranks))
    labels = np.array([1, -1, 0, 1, -1, 0])
    for i, ctx in zip(range(6), el.contexts_of(ranks, labels, range(6), 2)):
        shown = [j for j, _ in ctx]
        others = [j for j in np.argsort(ranks[i]) if j != i and labels[j] >= 0]
        assert shown == others[:2] and i not in shown and all(y == labels[j] for j, y in ctx)


def hidden_concept_scorer(z: np.ndarray, gain: float = 3.0, bias: float = 0.5):
    """A hand-made 'model': the more its demonstrations agree with the hidden labelling z, the
    surer it predicts z_i (all against z: it predicts the opposite, less sure by the bias)."""
    calls = []

    def score(requests):
        calls.extend(requests)
        out = []
        for i, ctx in requests:
            o = np.mean([2.0 * (y == z[j]) - 1 for j, y in ctx]) if ctx else 0.0
            p_true = 1 / (1 + math.exp(-(gain * o + bias)))  # P(y = z_i)
            out.append([1 - p_true, p_true] if z[i] == 1 else [p_true, 1 - p_true])
        return np.array(out)
    return score, calls


def test_search_finds_the_optimum_of_a_small_problem():
    n = 8
    z = np.array([1, 0, 0, 1, 1, 0, 1, 0])
    settings = ElicitationConfig(n_search=n, context=7, iterations=400, initial=2)
    score, _ = hidden_concept_scorer(z)
    # the optimum by brute force over all 2^8 full labellings, U as the search computes it
    ranks = el.context_ranks(n, np.random.default_rng(0))
    best = max(itertools.product([0, 1], repeat=n),
               key=lambda y: el.mutual_predictability(score, np.array(y), ranks, n))
    assert list(best) == list(z)
    top = settings.alpha * el.mutual_predictability(score, z, ranks, n)
    assert top == pytest.approx(settings.alpha * 3.5)  # every s_i = gain + bias
    ends = []
    for seed in range(10):
        one_search, calls = hidden_concept_scorer(z)
        found = el.search(n, 2, one_search, settings, seed=seed)
        assert len(calls) == len(set(calls))  # each (example, demonstrations) asked for once
        assert found.accepted >= n - settings.initial and found.history
        if (found.labels == z).all():
            assert found.energy == pytest.approx(top)
            ends.append("optimum")
        else:
            # the mirror labelling is ICM's other fixed point: with every other label against z
            # the model proposes no change (its argmax is the label already there), as in the
            # paper's worst-case start; the model's bias towards z makes it the rarer end
            assert (found.labels == 1 - z).all()
            ends.append("mirror")
    assert ends.count("optimum") >= 6, ends
    # deterministic given the seed
    first, again = (el.search(n, 2, hidden_concept_scorer(z)[0], settings, seed=3) for _ in range(2))
    assert (again.labels == first.labels).all() and again.history == first.history


def test_one_class_labelling_is_refused_below_min_class_fraction():
    """A model that says class 1 whatever it is shown collapses the search to one class; the
    guard keeps each class at its share of the labels found."""
    def always_one(requests):
        return np.tile([0.1, 0.9], (len(requests), 1))

    free = el.search(40, 2, always_one, ElicitationConfig(n_search=40, context=4, iterations=300,
                                                          min_class_fraction=0), seed=0)
    counts = np.bincount(free.labels[free.labels >= 0], minlength=2)
    assert counts[0] == 0 and counts[1] > 30  # collapsed: every label found is class 1
    guarded = el.search(40, 2, always_one, ElicitationConfig(n_search=40, context=4, iterations=300),
                        seed=0)
    counts = np.bincount(guarded.labels[guarded.labels >= 0], minlength=2)
    assert counts[0] >= 0.2 * counts.sum() and guarded.refused_for_balance > 0


# --- the score through a real tiny causal LM ----------------------------------------------------

@pytest.fixture(scope="module")
def tiny_lm(tmp_path_factory, gpt2_tokenizer_dir) -> Path:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    out = tmp_path_factory.mktemp("elicit-lm")
    torch.manual_seed(7)
    config = AutoConfig.for_model("gpt2", vocab_size=50257, n_layer=2, n_embd=64, n_head=4,
                                  n_positions=512)
    AutoModelForCausalLM.from_config(config).save_pretrained(out)
    AutoTokenizer.from_pretrained(gpt2_tokenizer_dir).save_pretrained(out)
    return out


def classifier_forward(folder: Path):
    """forward(token id lists) -> [n, 2] through the label-token classifier, in this process."""
    from w2s_scale.data.batching import collate
    from w2s_scale.data.lookup import num_classes
    from w2s_scale.models import build_classifier, load_tokenizer
    from w2s_scale.prompts import label_prompt

    model = el.scoring_model(ModelConfig(name=str(folder)))
    tokenizer = load_tokenizer(model)
    data = DataConfig(dataset="jsonl", path="unused.jsonl")
    prompt = label_prompt(model, data, tokenizer)
    clf = build_classifier(model, None, num_classes(data), prompt.word_ids).eval()

    def forward(token_lists):
        ids, mask = collate(token_lists, tokenizer.pad_token_id, tokenizer.padding_side)
        with torch.no_grad():
            return torch.softmax(clf(ids, mask), -1).numpy()
    return forward, prompt


DOCS = ["the film was good", "a dull and boring plot", "lovely music and a sharp script",
        "the cast was weak", "really fun", "a messy tired story"]


def test_mutual_predictability_through_a_tiny_lm_equals_a_direct_computation(tiny_lm):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    forward, prompt = classifier_forward(tiny_lm)
    labels = np.array([1, 0, 1, -1, 1, 0])
    ranks = el.context_ranks(len(DOCS), np.random.default_rng(1))

    def probs(requests):
        return forward([el.prompt_ids(prompt, DOCS, i, c) for i, c in requests])

    ours = el.mutual_predictability(probs, labels, ranks, m=3)
    # directly: the prompt written out as text, the causal LM's own next-token logits
    lm = AutoModelForCausalLM.from_pretrained(tiny_lm).eval()
    tok = AutoTokenizer.from_pretrained(tiny_lm)
    true_id, false_id = tok("True")["input_ids"][0], tok("False")["input_ids"][0]
    terms = []
    for i in np.flatnonzero(labels >= 0):
        shown = [j for j in np.argsort(ranks[i]) if j != i and labels[j] >= 0][:3]
        text = "".join(f"{DOCS[j]}\nLabel:{['False', 'True'][labels[j]]}\n\n" for j in shown)
        text += f"{DOCS[i]}\nLabel:"
        with torch.no_grad():
            logits = lm(torch.tensor([tok(text)["input_ids"]])).logits[0, -1].double()
        gap = (logits[true_id] - logits[false_id]).item()
        terms.append(gap if labels[i] == 1 else -gap)  # log p(y_i) - log p(other)
    assert ours == pytest.approx(float(np.mean(terms)), abs=1e-4)
    # the same through `elicit`'s search: its energy is alpha times this mean on what it found
    settings = ElicitationConfig(n_search=6, context=3, iterations=20, initial=2)
    got = el.elicit(list(zip(map(str, range(6)), DOCS)), 2, settings, 0, forward, prompt, 32, "truncate")
    assert got.probs.shape == (6, 2) and np.allclose(got.probs.sum(1), 1, atol=1e-5)
    assert got.cost.forwards["search"] > 0 and got.cost.tokens["search"] > got.cost.forwards["search"]


# --- the stage never reads a label ---------------------------------------------------------------

@dataclass
class Unlabelled:
    """A B example whose label cannot be read: the stage must not touch it."""
    id: str
    text: str

    @property
    def label(self):
        raise AssertionError("the elicitation stage read a label")


def test_the_stage_reads_no_label(tiny_lm, monkeypatch, tmp_path):
    assert not any("label" in name for name in inspect.signature(el.elicit).parameters)
    forward, _ = classifier_forward(tiny_lm)

    class NoEngine:
        def close(self):
            pass
    monkeypatch.setattr(el, "scoring_engine", lambda *a, **k: NoEngine())
    monkeypatch.setattr(el, "forward_with", lambda eng, k: forward)
    cfg = load_config(raw={"name": "t", "results_dir": str(tmp_path),
                           "data": {"dataset": "jsonl", "path": "unused.jsonl", "max_length": 32},
                           "weak": {"name": str(tiny_lm), "init": "random"},
                           "strong": {"name": str(tiny_lm), "label": "s"},
                           "allow_larger_weak": True})

    @dataclass
    class Plan:
        model: ModelConfig
        stage: ElicitationConfig
        train: object
        seed: int = 0

    class Splits:
        b = [Unlabelled(str(i), t) for i, t in enumerate(DOCS * 2)]
    for stage in (ElicitationConfig(n_search=8, context=2, iterations=15, initial=2),
                  ElicitationConfig(mode="zero_shot")):
        got, metrics = el.run_stage(cfg, Plan(cfg.strong, stage, cfg.train), Splits)
        assert got.ids == [str(i) for i in range(12)] and metrics["forward_passes"] > 0


# --- config errors ---------------------------------------------------------------------------------

@pytest.mark.parametrize("labels, needles", [
    ({"source": "elicitation", "elicitation": {"mode": "icl"}}, ["labels.0.elicitation.mode", "icl"]),
    ({"source": "elicitation", "elicitation": {"context": 0}}, ["labels.0.elicitation.context"]),
    ({"source": "elicitation", "elicitation": {"min_class_fraction": 1.5}},
     ["labels.0.elicitation.min_class_fraction"]),
    ({"source": "elicitation", "elicitation": {"mode": "zero_shot", "context": 4}},
     ["labels.0.elicitation", "context", "icm_sampled"]),
    ({"source": "elicitation", "elicitation": {"initial": 300}}, ["labels.0.elicitation", "initial", "n_search"]),
    ({"source": "elicitation", "elicitation": {"t0": 0.001}}, ["labels.0.elicitation", "t_min"]),
    ({"source": "elicitation", "elicitation": {"alpha": 50, "wat": 1}}, ["labels.0.elicitation.wat"]),
    ({"source": "weak", "elicitation": {}}, ["labels.0", "elicitation belongs to source: elicitation"]),
])
def test_bad_elicitation_config_is_one_line_naming_the_field(labels, needles, tmp_path, tiny_models, tiny_data):
    with pytest.raises(ConfigError) as err:
        load_config(raw=tiny_config(tmp_path, tiny_models, tiny_data, labels=[labels]))
    message = str(err.value)
    assert "\n" not in message and all(n in message for n in needles), message


def test_planning_names_and_hashes(tmp_path, tiny_models, tiny_data):
    from w2s_scale.planning import plan_experiment

    cfg = load_config(raw=tiny_config(tmp_path, tiny_models, tiny_data, losses=["xent"], labels=[
        {"source": "elicitation"}, {"source": "elicitation", "elicitation": {"mode": "zero_shot"}},
        {"source": "elicitation", "elicitation": {"context": 4, "iterations": 500}}]))
    plans = {p.name: p for p in plan_experiment(cfg)}
    for stage, student in [("labels-icms-gpt2-strong", "w2s-gpt2-weak-icms-to-gpt2-strong-xent"),
                           ("labels-zeroshot-gpt2-strong", "w2s-gpt2-weak-zeroshot-to-gpt2-strong-xent"),
                           ("labels-icms-m4-it500-gpt2-strong", "w2s-gpt2-weak-icms-m4-it500-to-gpt2-strong-xent")]:
        assert plans[stage].kind == "labels" and plans[stage].inputs == ()  # reads no run
        assert plans[student].source is plans[stage] and plans[student].weak.name == "gt-gpt2-weak"
    assert len({p.hash for p in plans.values()}) == len(plans)


# --- end to end ------------------------------------------------------------------------------------

E2E_LABELS = [{"source": "elicitation", "elicitation": {"n_search": 24, "context": 2, "iterations": 60,
                                                        "initial": 4}},
              {"source": "elicitation", "elicitation": {"mode": "zero_shot"}}]


@pytest.fixture(scope="module")
def elicitation_run(tiny_models, tiny_data, tmp_path_factory):
    out = tmp_path_factory.mktemp("elicit-e2e")
    cfg = tiny_config(out / "results", tiny_models, tiny_data, losses=["xent"], labels=E2E_LABELS)
    cfg["train"]["zero_stage"] = 0
    path = write_config(out / "cfg.yaml", cfg)
    proc = run_w2s(["experiment", "-c", str(path)], timeout=1200)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out, path, proc


def test_tiny_experiment_with_elicited_labels(elicitation_run):
    out, path, proc = elicitation_run
    seed = out / "results/tiny/jsonl/seed0"
    icm = json.loads((seed / "labels-icms-n24-m2-it60-k4-gpt2-strong/metrics.json").read_text())
    zero = json.loads((seed / "labels-zeroshot-gpt2-strong/metrics.json").read_text())
    assert icm["n"] == zero["n"] == 80
    # the cost is counted and recorded: prompts, tokens, seconds, by phase
    assert icm["forward_passes"] == sum(icm["forward_passes_by_phase"].values())
    assert icm["forward_passes_by_phase"]["label"] == 80 - icm["n_found"]
    assert 0 < icm["forward_passes_by_phase"]["search"] <= icm["forward_estimate_search"]
    assert zero["forward_passes"] == 80 and zero["forward_passes_by_phase"]["search"] == 0
    # icm: each class keeps at least min_class_fraction of the labels found
    counts = icm["found_class_counts"]
    assert min(counts) >= 0.2 * sum(counts) and icm["n_found"] == sum(counts) > 4
    rows = [json.loads(line) for line in (seed / "labels-icms-n24-m2-it60-k4-gpt2-strong/weak_labels.jsonl")
            .read_text().splitlines()]
    assert sum(r["p1"] in (0.0, 1.0) for r in rows) >= icm["n_found"]  # the found labels: hard
    summary = json.loads((out / "results/tiny/summary.json").read_text())
    tags = {r["labels"] for r in summary if r["seed"] == 0}
    assert {"weak", "icms-n24-m2-it60-k4", "zeroshot"} <= tags or {"icms-n24-m2-it60-k4", "zeroshot"} <= tags
    for student in ("w2s-gpt2-weak-icms-n24-m2-it60-k4-to-gpt2-strong-xent",
                    "w2s-gpt2-weak-zeroshot-to-gpt2-strong-xent"):
        metrics = json.loads((seed / student / "metrics.json").read_text())
        assert metrics["n_train"] == 80 and metrics["weak_model"] == "gpt2-weak"
    assert "forward passes" in proc.stdout
    # a second call reuses every stage
    again = run_w2s(["experiment", "-c", str(path)], timeout=600)
    assert again.returncode == 0 and "starting" not in again.stdout, again.stderr[-2000:]

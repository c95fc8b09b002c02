"""Related rows never straddle A and B (Burns et al. 2023 put datapoints that share a question or a
context in the same half): every dataset with several rows per question, passage or scenario, on
rows in the hub's own schema where groups of 4 rows share that text."""
from __future__ import annotations

import numpy as np
import pytest
from test_task_suite import N_TRAIN, SPECS, row_of, write_hub_layout

from w2s_scale.config import DataConfig, TrainConfig
from w2s_scale.data.sources import DATASETS
from w2s_scale.data.splits import make_splits
from w2s_scale.loading import load_config
from w2s_scale.pipeline import gt_examples
from w2s_scale.planning import plan_experiment
from w2s_scale.selection import cut_held_out

SIZE = 4  # rows per group: row i belongs to group i // SIZE (ethics-virtue: 5, as hendrycks stores it)
SIZES = {"ethics-virtue": 5}


def shared(i: int, size: int = SIZE) -> int:
    return i // size


# the column(s) that rows of one group share, written here from the hub schemas (independently of
# the entries' group_by), as a function of the row's group; ETHICS groups are consecutive rows
# (4 variants of a scenario, 5 for virtue), whose texts need not repeat
SHARED = {
    "ethics-deontology": lambda g: {},
    "ethics-justice": lambda g: {},
    "ethics-virtue": lambda g: {},
    "anli-r2": lambda g: {"premise": f"P {g}."},
    "boolq": lambda g: {"passage": f"It is {g}."},
    "multirc": lambda g: {"paragraph": f"Para {g}."},
    "mc_taco": lambda g: {"sentence": f"He slept {g}."},
    "paws": lambda g: {"sentence1": f"A {g}."},
    "sciq_with_support": lambda g: {"support": f"Fact {g}."},
    "cosmos_qa": lambda g: {"context": f"Story {g}."},
    "dream": lambda g: {"dialogue": ["M: Hi.", f"W: Bye {g}."]},
    "hellaswag": lambda g: {"ctx": f"A man cooks {g}"},
    "quail": lambda g: {"context": f"Text {g}."},
    "quartz": lambda g: {"para": f"Speed {g}."},
    "social_i_qa": lambda g: {"context": f"Ann helped {g}."},
    "social_i_qa_choices": lambda g: {"context": f"Ann helped {g}."},
    "hellaswag_choices": lambda g: {"ctx": f"A man cooks {g}"},
    "piqa": lambda g: {"goal": f"Open jar {g}"},
}
GROUPED = sorted(n for n, s in DATASETS.items() if s.group_by is not None)


def grouped_layout(tmp_path, name, monkeypatch):
    """The suite's hub-schema rows with every SIZE consecutive rows sharing their text."""
    spec = SPECS[name]
    size = SIZES.get(name, SIZE)
    monkeypatch.setitem(SPECS, name, type(spec)(lambda i: {**spec.row(i), **SHARED[name](shared(i, size))},
                                                spec.texts, spec.answers, spec.coin))
    return write_hub_layout(tmp_path, name)


def test_every_dataset_with_related_rows_declares_its_groups():
    named = {"multirc", "mc_taco", "ethics-virtue", "ethics-deontology", "anli-r2", "quail",
             "dream", "cosmos_qa"}  # the ones the review named; the others share a text too
    # datasets without related rows: one text per row (sst2, cola, ...), or pairs and choices
    # whose shared prompt is the row itself (sciq, openbookqa, wic, the pairwise tasks)
    assert named <= set(GROUPED)
    assert set(GROUPED) == set(SHARED)


@pytest.mark.parametrize("balance", [False, True])
@pytest.mark.parametrize("name", GROUPED)
def test_no_group_is_in_both_a_and_b(name, balance, tmp_path, monkeypatch):
    folder = grouped_layout(tmp_path, name, monkeypatch)
    size = SIZES.get(name, SIZE)
    group = lambda e: shared(row_of(e, "train"), size)  # noqa: E731
    straddled = 0
    for seed in range(4):
        c = DataConfig(dataset=name, path=str(folder), n_train=40, n_test=8, balance=balance)
        s = make_splits(c, seed)
        a = {group(e) for e in s.a}
        b = {group(e) for e in s.b}
        assert not a & b, (name, seed, sorted(a & b))
        assert len(s.a) >= 2 and len(s.b) >= 2
        # the same rows cut by any other order (here: by row id) put siblings on both sides
        other = sorted(s.a + s.b, key=lambda e: e.id)
        straddled += bool({group(e) for e in other[:len(s.a)]} & {group(e) for e in other[len(s.a):]})
    assert straddled  # so a cut that ignored the groups would fail this test


def test_first_gt_n_train_documents_of_a_end_at_a_group_boundary(tmp_path, monkeypatch):
    folder = grouped_layout(tmp_path, "multirc", monkeypatch)
    s = make_splits(DataConfig(dataset="multirc", path=str(folder), n_train=40, n_test=8), 0)
    first = gt_examples(s, TrainConfig(gt_n_train=5, batch_size=2, micro_batch_size=2))
    groups = [shared(row_of(e, "train")) for e in s.a]
    kept = {shared(row_of(e, "train")) for e in first}
    assert len(first) >= 5 and not kept & set(groups[len(first):])


def test_held_out_slices_of_b_keep_groups_whole_and_are_unchanged_without_groups():
    cfg = TrainConfig(early_stopping={"every": 5, "val_fraction": 0.2},
                      gt_curve={"every": 5, "fraction": 0.2})
    plain = cut_held_out(40, 3, cfg)
    distinct = cut_held_out(40, 3, cfg, groups=list(range(40)))
    for part in ("train", "val", "curve"):
        assert np.array_equal(getattr(plain, part), getattr(distinct, part))
    cut = cut_held_out(40, 3, cfg, groups=[i // SIZE for i in range(40)])
    sides = [{i // SIZE for i in getattr(cut, part)} for part in ("train", "val", "curve")]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert len(cut.val) >= 8 and len(cut.curve) >= 8
    assert sorted(np.concatenate([cut.train, cut.val, cut.curve]).tolist()) == list(range(40))


@pytest.mark.parametrize("dataset, hashes", [
    # grouped cuts change results, so the runs' hashes change (these were bc691c9's:
    # gt-gpt2 ff19df8496c0, gt-gpt2-medium 963b2df86a1b, transfer ec7f4fbbc063)
    ("multirc", {"gt-gpt2": "5fdc2187bfe9", "gt-gpt2-medium": "1d7e2f96a60c",
                 "w2s-gpt2-to-gpt2-medium-xent-es5v0.1": "49d2bf1d0004"}),
    # a dataset without related rows keeps the hashes it had at bc691c9
    ("sst2", {"gt-gpt2": "66aa9e1bad18", "gt-gpt2-medium": "e57c9c61b9f6",
              "w2s-gpt2-to-gpt2-medium-xent-es5v0.1": "366782c6b407"}),
])
def test_grouped_datasets_change_their_run_hashes_and_no_other(dataset, hashes, tmp_path):
    raw = {"name": "h", "results_dir": str(tmp_path), "data": {"dataset": dataset, "n_train": 100,
                                                              "n_test": 50},
           "weak": {"name": "gpt2"}, "strong": {"name": "gpt2-medium"},
           "train": {"early_stopping": {"every": 5}}}
    assert {p.name: p.hash for p in plan_experiment(load_config(raw=raw))} == hashes


@pytest.mark.parametrize("balance", [False, True])
def test_one_local_file_of_a_grouped_dataset_keeps_groups_out_of_two_splits(balance, tmp_path):
    """boolq rows in the hub's schema in one jsonl file (no test file): test is cut from the same
    pool, so it too keeps each passage on one side."""
    import json

    path = tmp_path / "boolq.jsonl"
    path.write_text("".join(json.dumps({"question": f"is it {i}", "answer": bool(i % 2),
                                        "passage": f"It is {i // SIZE}."}) + "\n" for i in range(200)))
    s = make_splits(DataConfig(dataset="boolq", path=str(path), n_train=80, n_test=40,
                               balance=balance), 1)
    group = lambda e: int(e.id.split("-")[1]) // SIZE  # noqa: E731
    sides = [{group(e) for e in part} for part in (s.a, s.b, s.test)]
    assert not (sides[0] & sides[1] or sides[0] & sides[2] or sides[1] & sides[2])
    assert min(len(s.a), len(s.b), len(s.test)) >= 20

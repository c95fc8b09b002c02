"""configs/paper_suite.yaml: the switch of method at the top of the ladder is printed as a confound,
and the full-fine-tuning variant is a one-line change per model whose memory plan fits."""
from __future__ import annotations

from conftest import REPO

from w2s_scale.catalogue import lookup
from w2s_scale.loading import load_sweep
from w2s_scale.memory import plan_sweep_models
from w2s_scale.resolved import format_settings, resolved_settings

SUITE = REPO / "configs" / "paper_suite.yaml"


def full_variant(tmp_path):
    """The suite with the marked pairs of lines swapped: 32B and 72B fully fine-tuned."""
    lines = []
    for line in SUITE.read_text().splitlines():
        if line.startswith(("  - {name: qwen2.5-32b,", "  - {name: qwen2.5-72b,")):
            line = "  # " + line[2:]
        elif line.startswith(("  # - {name: qwen2.5-32b-full", "  # - {name: qwen2.5-72b-full")):
            line = line.replace("  # - ", "  - ", 1)
        lines.append(line)
    path = tmp_path / "paper_suite_full.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def test_the_switch_to_lora_is_printed_as_a_confound():
    text = format_settings(resolved_settings(load_sweep(SUITE)))
    confounds = [line for line in text.splitlines() if "confound:" in line]
    assert len(confounds) == 1, confounds
    assert "lora False -> True from qwen2.5-14b to qwen2.5-32b" in confounds[0]
    assert "lr 1e-05 -> 0.0001" in confounds[0]


def test_full_fine_tuning_of_the_top_is_one_line_per_model_and_fits(tmp_path):
    path = full_variant(tmp_path)
    changed = [(a, b) for a, b in zip(SUITE.read_text().splitlines(), path.read_text().splitlines())
               if a != b]
    assert len(changed) == 4  # two pairs of lines: one comment marker moved in each
    sweep = load_sweep(path)
    assert [m.name for m in sweep.models][-2:] == ["qwen2.5-32b-full", "qwen2.5-72b-full"]
    text = format_settings(resolved_settings(sweep))
    assert "confound:" not in text
    plans = {p.model: p for p in plan_sweep_models(sweep)}
    for name, gpus in (("qwen2.5-32b-full", 16), ("qwen2.5-72b-full", 32)):
        assert plans[name].method.startswith("ZeRO-3 full"), plans[name].method
        assert plans[name].fits and plans[name].cluster.nodes * plans[name].cluster.gpus_per_node == gpus


def test_hub_ids_still_find_the_lora_entries():
    assert lookup("Qwen/Qwen2.5-32B").name == "qwen2.5-32b"
    assert lookup("Qwen/Qwen2.5-72B").name == "qwen2.5-72b"
    assert lookup("qwen2.5-72b-full").hf_id == "Qwen/Qwen2.5-72B"


def test_the_suite_uses_eleutherais_wording_for_the_three_choice_tasks():
    names = {d.dataset for d in load_sweep(SUITE).datasets}
    assert {"hellaswag_choices", "social_i_qa_choices", "openbookqa_choices"} <= names
    assert not names & {"hellaswag", "social_i_qa", "openbookqa"}
    assert len(names) == 22

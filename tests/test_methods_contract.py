"""The method contract (w2s_scale/methods/): methods found by built-in name, by module path and by
entry point; a bad name stops `w2s` in one line; what a method is given carries no label; the
built-in `transfer` through the contract predicts as today's transfer run; and the example
method outside the package (tests/plugins/w2s_example_method) runs in a local sweep and through
the Slurm executor on the real test cluster, its weak and ceiling runs shared with the transfers."""
from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import run_predictions, run_w2s, tiny_config, write_config  # noqa: E402

from w2s_scale.methods import MethodContext, Student, UnlabelledSet  # noqa: E402
from w2s_scale.methods.builtin import transfer  # noqa: E402
from w2s_scale.methods.registry import ENTRY_POINT_GROUP, check_options, find_method, known_names  # noqa: E402

PLUGINS = Path(__file__).resolve().parent / "plugins"
WEAK, STRONG = "gpt2-weak", "gpt2-strong"
EXAMPLE = "w2s_example_method:blend"
BLEND = {"min_confidence": 0.51, "weak_weight": 0.25}


def write_entry_point(folder: Path) -> Path:
    """An installed distribution as importlib.metadata finds it on sys.path: a *.dist-info
    folder with METADATA and entry_points.txt declaring the example method."""
    info = folder / "w2s_example_method-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: w2s-example-method\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\nexample_blend = {EXAMPLE}\n")
    return folder


def pythonpath(*folders: Path) -> str:
    return os.pathsep.join([*(str(f) for f in folders), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)


def test_methods_are_found_by_builtin_name_module_path_and_entry_point(tmp_path, monkeypatch):
    assert find_method("transfer") is transfer
    monkeypatch.syspath_prepend(str(PLUGINS))
    blend = find_method(EXAMPLE)
    assert blend.__module__ == "w2s_example_method"
    monkeypatch.syspath_prepend(str(write_entry_point(tmp_path / "site")))
    assert "example_blend" in known_names() and known_names()[0] == "transfer"
    assert find_method("example_blend") is blend
    check_options(blend, BLEND)
    with pytest.raises(ValueError, match=r"method.options: blend takes .* not \['threshold'\]"):
        check_options(blend, {"threshold": 0.5})
    with pytest.raises(ValueError, match="method.options: transfer takes no options"):
        check_options(transfer, {"x": 1})


def test_what_a_method_is_given_has_no_label():
    """No field of the context or its sets is a label; the students' copies carry none either."""
    from w2s_scale.data.values import Example
    from w2s_scale.methods.runner import NO_LABEL, _blind

    for cls in (MethodContext, UnlabelledSet, Student):
        assert not [f.name for f in dataclasses.fields(cls) if "label" in f.name and f.name != "weak_b"]
    assert _blind(Example("x", "text", 1, group="g")) == Example("x", "text", NO_LABEL, group="g")


@pytest.mark.parametrize("method, needles", [
    ({"name": "nope"}, ["method.name", "unknown method 'nope'", "known: transfer", ENTRY_POINT_GROUP]),
    ({"name": "no_such_module:fn"}, ["method.name", "cannot import no_such_module", "PYTHONPATH"]),
    ({"name": EXAMPLE, "options": {"threshold": 1}}, ["method.options", "blend takes"]),
    ([{"name": "transfer"}, {"name": "transfer", "loss": "nope"}], ["method.1.loss.name", "unknown loss"]),
])
def test_a_bad_method_stops_w2s_in_one_line(method, needles, tiny_models, tiny_data, tmp_path):
    cfg = write_config(tmp_path / "cfg.yaml", tiny_config(tmp_path / "results", tiny_models, tiny_data,
                                                          method=method))
    proc = run_w2s(["experiment", "-c", str(cfg)], timeout=300, env={"PYTHONPATH": pythonpath(PLUGINS)})
    errors = [line for line in proc.stderr.splitlines() if line.startswith("w2s: error:")]
    assert proc.returncode == 2 and len(errors) == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in errors[0], errors[0]
    assert not (tmp_path / "results").exists() or not list((tmp_path / "results").rglob("DONE"))


def sweep_config(root: Path, models: dict, data: Path, method, **extra) -> Path:
    base = tiny_config(root / "results", models, data)
    cfg = {k: base[k] for k in ("results_dir", "data", "train", "tracking")}
    cfg["train"].update(zero_stage=0)
    cfg.update(name="sweep", seeds=[0], losses=["xent"], self_transfer=False, method=method,
               models=[{"name": str(models[WEAK]), "label": WEAK},
                       {"name": str(models[STRONG]), "label": STRONG}], **extra)
    return write_config(root / "sweep.yaml", cfg)


def blend_tag() -> str:
    from w2s_scale.config import MethodConfig

    return MethodConfig(name=EXAMPLE, options=BLEND).tag


def check_blend_run(seed_dir: Path, summary: Path) -> None:
    """The example method's run folder reads like a transfer run's, and the summary has its row."""
    run = seed_dir / f"method-{WEAK}-to-{STRONG}-{blend_tag()}"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["kind"] == "method" and metrics["weak_model"] == WEAK and metrics["students"] == 1
    assert 0 < metrics["method_extra"]["n_confident"] < 80  # B: 80 documents, the confident part
    assert metrics["weak_accuracy"] == json.loads((seed_dir / f"gt-{WEAK}/metrics.json").read_text())["accuracy"]
    rows = [json.loads(line) for line in (run / "test_predictions.jsonl").read_text().splitlines()]
    assert len(rows) == metrics["n_test"] == 64 and {"id", "p1", "label"} <= set(rows[0])
    events = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = [e for e in events if e.get("event") == "method"]
    assert logged and logged[0]["confident_rows"] == metrics["method_extra"]["n_confident"]
    assert any(e.get("event") == "train" for e in events)  # trained through the engine
    summary_rows = {r["loss"]: r for r in json.loads(summary.read_text()) if r["seed"] == 0}
    row = summary_rows[blend_tag()]
    assert (row["weak"], row["strong"]) == (WEAK, STRONG)
    assert row["transfer_acc"] == pytest.approx(metrics["accuracy"])


def test_builtin_transfer_and_the_example_method_in_a_local_sweep(tiny_models, tiny_data, tmp_path):
    config = sweep_config(tmp_path, tiny_models, tiny_data,
                          [{"name": "transfer"}, {"name": EXAMPLE, "options": BLEND}])
    env = {"PYTHONPATH": pythonpath(PLUGINS)}
    proc = run_w2s(["sweep", "-c", str(config)], env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "2 gt runs, 1 transfer runs, 2 method runs" in proc.stdout
    seed_dir = tmp_path / "results/sweep/jsonl/seed0"

    # the built-in transfer through the contract is today's transfer run, prediction for prediction
    direct = seed_dir / f"w2s-{WEAK}-to-{STRONG}-xent"
    through = seed_dir / f"method-{WEAK}-to-{STRONG}-transfer"
    np.testing.assert_allclose(run_predictions(through), run_predictions(direct), atol=1e-6)
    d, t = (json.loads((p / "metrics.json").read_text()) for p in (direct, through))
    assert t["accuracy"] == d["accuracy"] and t["misfit"] == pytest.approx(d["misfit"])

    check_blend_run(seed_dir, tmp_path / "results/sweep/summary.json")
    again = run_w2s(["sweep", "-c", str(config)], env=env)  # every run, methods too, is reused
    assert again.returncode == 0 and "5 reused (done), 0 to run" in again.stdout, again.stdout[-2000:]


def test_the_example_method_through_the_slurm_executor(slurm_cluster, tiny_models, tiny_data, tmp_path):
    """Named by its entry point, installed only on PYTHONPATH: the jobs find it as the
    submitting process did, and the method job waits on the weak gt run and the ceiling."""
    config = sweep_config(tmp_path, tiny_models, tiny_data, [{"name": "example_blend", "options": BLEND,
                                                              "label": blend_tag()}],
                          executor="slurm", resources={"time": "00:10:00", "pack": False})
    env = {**slurm_cluster.env,
           "PYTHONPATH": pythonpath(write_entry_point(tmp_path / "site"), PLUGINS,
                                    *[Path(p) for p in slurm_cluster.env["PYTHONPATH"].split(os.pathsep) if p])}
    proc = run_w2s(["sweep", "-c", str(config), "--wait"], env=env, timeout=900)
    print(proc.stdout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    jobs = dict(re.findall(r"\[w2s\] (\S+): job (\d+)", proc.stdout))
    key = f"jsonl/seed0/method-{WEAK}-to-{STRONG}-{blend_tag()}"
    assert len(jobs) == 4 and key in jobs  # 2 gt runs, the transfer, the method
    assert re.search(rf"method-{WEAK}-to-{STRONG}-\S+: job \d+ after [\d, ]*\b"
                     rf"{jobs[f'jsonl/seed0/gt-{WEAK}']}\b", proc.stdout), proc.stdout
    check_blend_run(tmp_path / "results/sweep/jsonl/seed0", tmp_path / "results/sweep/summary.json")

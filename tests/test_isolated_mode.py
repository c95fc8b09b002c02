"""The isolated mode (w2s_scale/methods/isolation.py, docs/isolation.md#the-isolated-mode): a
method whose process cannot read a label, scored only by the evaluation service.

One tiny experiment, shared by every test (module fixture): its ground-truth runs and an
in-process run of the probe method (tests/plugins/w2s_label_probe), which tries to read the
label store, a finished run's test_predictions.jsonl and weak_labels.jsonl, and the data file.
In-process it can (the control: were isolation off, the isolated run's checks would fail the
same way); isolated it gets an error for each, cannot unmount what hides them, sees no process
but its own, and is given sets without a label attribute. A real server on loopback holds the
labels exported from the experiment; `w2s experiment` reaches it with a real httpx client.
"""
from __future__ import annotations

import json
import socket
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import run_w2s, tiny_config, write_config  # noqa: E402

from w2s_scale.cli import main as w2s_main  # noqa: E402
from w2s_scale.config import MethodConfig  # noqa: E402
from w2s_scale.methods.isolation import IsolatedMethodError, run_sandboxed  # noqa: E402
from w2s_scale.metrics import accuracy, roc_auc  # noqa: E402
from w2s_scale.service.app import make_app  # noqa: E402
from w2s_scale.service.export import export  # noqa: E402
from w2s_scale.service.ledger import Ledger  # noqa: E402
from w2s_scale.service.server import start  # noqa: E402
from w2s_scale.service.store import open_store  # noqa: E402

PLUGINS = Path(__file__).resolve().parent / "plugins"
PROBE = "w2s_label_probe:probe"
WEAK, STRONG = "gpt2-weak", "gpt2-strong"


def run_folder(results: Path, method: dict) -> Path:
    return results / f"tiny/jsonl/seed0/method-{WEAK}-to-{STRONG}-{MethodConfig(**method).tag}"


def dead_url() -> str:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


class Experiment:
    """The shared experiment: its folders, the probe's options, the control run, the server."""

    def __init__(self, root: Path, models: dict, data: Path):
        self.root, self.results = root, root / "results"
        self.labels = root / "labels"          # the store and its log: hidden from the method
        self.store = self.labels / "store"
        self.pending = root / "pending"
        seed_dir = self.results / "tiny/jsonl/seed0"
        self.paths = {"label_store": str(self.store / "jsonl/seed0/test.jsonl"),
                      "test_predictions": str(seed_dir / f"gt-{WEAK}/test_predictions.jsonl"),
                      "weak_labels": str(seed_dir / f"gt-{WEAK}/weak_labels.jsonl"),
                      "dataset": str(data)}
        self.base = tiny_config(self.results, models, data, losses=["xent"])
        self.base["train"].update(zero_stage=0)
        self.env = {"PYTHONPATH": str(PLUGINS), "W2S_PENDING_DIR": str(self.pending)}

    def method(self, isolated: bool, **options) -> dict:
        method = {"name": PROBE, "options": {"paths": self.paths, **options}}
        if isolated:
            method["isolated"] = {"hide": [str(self.labels)]}
        return method

    def run(self, method, name: str, url: str):
        config = write_config(self.root / f"{name}.yaml", {**self.base, "method": method})
        return run_w2s(["experiment", "-c", str(config)], timeout=900,
                       env={**self.env, "W2S_EVAL_URL": url})


@pytest.fixture(scope="module")
def experiment(tiny_models, tiny_data, tmp_path_factory):
    """The gt runs (and a transfer), the label store exported from them, the evaluation service
    started on loopback; then, in one `w2s experiment`, the probe in-process (the control) and
    isolated, scored by the service (which it reaches at W2S_EVAL_URL)."""
    exp = Experiment(tmp_path_factory.mktemp("isolated"), tiny_models, tiny_data)
    config = write_config(exp.root / "gt.yaml", exp.base)
    proc = run_w2s(["experiment", "-c", str(config)], timeout=900, env=exp.env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    export(config, [], exp.store)
    ledger = Ledger(exp.labels / "store.submissions.jsonl")
    exp.service = start(make_app(open_store(exp.store), ledger), ledger=ledger)
    # root in namespaces of its own, the isolated probe also tries to unmount what hides the labels
    control = exp.method(isolated=False)
    isolated = exp.method(isolated=True, unmount=[str(exp.labels), str(exp.results)])
    exp.output = exp.run([control, isolated], "probe", exp.service.url)
    assert exp.output.returncode == 0, exp.output.stdout[-3000:] + exp.output.stderr[-3000:]
    exp.control, exp.isolated = run_folder(exp.results, control), run_folder(exp.results, isolated)
    yield exp
    exp.service.stop()


def metrics_of(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def log_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_in_process_the_probe_reads_every_label_file(experiment):
    """The control: without isolation each file is readable, so the isolated checks below
    would fail if isolation were off."""
    extra = metrics_of(experiment.control)["method_extra"]
    assert extra["reads"] == {name: "read" for name in experiment.paths}
    assert extra["processes_visible"] > 1


def test_an_isolated_method_cannot_read_a_label(experiment):
    metrics = metrics_of(experiment.isolated)
    assert metrics["isolated"] is True
    extra = metrics["method_extra"]
    # every attempt failed: the folders holding them are empty where the method runs
    assert extra["reads"] == {name: "FileNotFoundError" for name in experiment.paths}
    hidden = set(metrics["hidden"])
    assert {str(experiment.results), str(experiment.labels), str(Path(experiment.paths["dataset"]).parent)} <= hidden
    assert extra["processes_visible"] == 1  # no /proc/PID/root of the framework to go through
    # the mounts that hide them are locked: unmounting one fails, and it was tried first
    assert set(extra["unmount"]) == {str(experiment.labels), str(experiment.results)}
    assert all(result != "unmounted" for result in extra["unmount"].values()), extra["unmount"]


def test_the_sets_an_isolated_method_gets_have_no_label(experiment):
    extra = metrics_of(experiment.isolated)["method_extra"]
    assert extra["set_types"] == ["UnlabelledSet", "UnlabelledSet"]
    assert extra["label_attributes"] == {"b": [], "test": [], "context": []}


def test_the_service_scores_it_as_in_process_scoring_would_and_logs_the_call(experiment):
    run = experiment.isolated
    metrics = metrics_of(run)
    assert metrics["scored_by"] == "service" and "scored by the evaluation service" in experiment.output.stdout
    rows = log_lines(run / "test_predictions.jsonl")
    labels = np.array([r["label"] for r in rows])
    p1 = np.array([r["p1"] for r in rows])
    # the same predictions scored in-process, with the project's metric functions
    assert metrics["accuracy"] == accuracy(labels, p1)
    assert metrics["auc"] == pytest.approx(roc_auc(labels, p1), abs=1e-6)
    assert metrics["n_test"] == len(rows) == metrics_of(experiment.control)["n_test"]
    # the same method in-process: the same student, the same score
    control = metrics_of(experiment.control)
    assert metrics["accuracy"] == control["accuracy"]
    np.testing.assert_allclose(p1, [r["p1"] for r in log_lines(experiment.control / "test_predictions.jsonl")],
                               atol=1e-4)
    # PGR against the gt runs' anchors, as the service computes it
    weak, ceiling = metrics["service"]["anchors"]["weak_acc"], metrics["service"]["anchors"]["ceiling_acc"]
    if ceiling > weak:
        assert metrics["pgr"] == pytest.approx((metrics["accuracy"] - weak) / (ceiling - weak))
    # the service's log has the call: who, which method and run, the answer
    (line,) = [e for e in log_lines(experiment.service.ledger.path)
               if e.get("submission_id") == metrics["service"]["submission_id"]]
    assert line["status"] == 200 and line["method"] == MethodConfig(**metrics["method"]).tag
    assert line["run"] == metrics["service"]["run"] and line["response"]["accuracy"] == metrics["accuracy"]
    assert line["n_predictions"] == metrics["n_test"] and "predictions" not in line
    # the method's own log reached the run's log
    events = log_lines(run / "log.jsonl")
    assert any(e.get("event") == "method" and "probe_reads" in e for e in events)
    assert any(e.get("event") == "train" for e in events)


def test_with_the_service_down_nothing_is_lost(experiment, capsys):
    """The service down when the method finishes: one line, the predictions kept in the pending
    folder, the run not done. `w2s submit --pending` sends them once it is up; the next
    `w2s experiment` records that answer without running the method again."""
    method = experiment.method(isolated=True, attempt="service-down")
    run = run_folder(experiment.results, method)
    down = experiment.run(method, "down", dead_url())
    errors = [line for line in down.stderr.splitlines() if line.startswith("w2s: error:")]
    assert down.returncode == 2 and len(errors) == 1, down.stdout[-2000:] + down.stderr[-3000:]
    assert "is not done" in errors[0] and "cannot be reached" in errors[0] and "w2s submit --pending" in errors[0]
    assert "Traceback" not in down.stderr
    (kept,) = experiment.pending.glob("*.json")
    sent = json.loads(kept.read_text())["submission"]
    assert "label" not in json.dumps(sent["predictions"]) and len(sent["predictions"]) == 64
    assert not (run / "DONE").exists() and not (run / "metrics.json").exists()

    code = w2s_main(["submit", "--pending", "--pending-dir", str(experiment.pending),
                     "--url", experiment.service.url])
    out = capsys.readouterr().out
    assert code == 0 and f"run {sent['run']} (jsonl seed 0, test, n 64): accuracy" in out
    assert not kept.exists()

    again = experiment.run(method, "down", experiment.service.url)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert "the method finished in an earlier attempt" in again.stdout
    metrics = metrics_of(run)
    assert metrics["service"]["submission_id"] == sent["submission_id"]
    assert metrics["service"]["replayed"] is True  # the answer `w2s submit --pending` got, not a second score
    scored = [e for e in log_lines(experiment.service.ledger.path)
              if e.get("submission_id") == sent["submission_id"] and e.get("status") == 200]
    assert [e.get("replayed", False) for e in scored] == [False, True]
    assert sum(e.get("event") == "student" for e in log_lines(run / "log.jsonl")) == 1


def test_where_the_sandbox_cannot_be_made_the_method_does_not_run(tmp_path):
    """A sandbox that fails to build (here: the bundle it must bind back is missing) stops the run
    in one line naming method.isolated; the method's process never starts."""
    (tmp_path / "out").mkdir()
    with pytest.raises(IsolatedMethodError) as refused:
        run_sandboxed(tmp_path, [tmp_path / "out"])
    message = str(refused.value)
    assert message.startswith("method.isolated: this machine cannot hide the labels") and "\n" not in message
    assert "bundle" in message and "remove `isolated`" in message
    assert not (tmp_path / "out" / "result.json").exists()

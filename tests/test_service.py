"""The label-isolated evaluation service (w2s_scale/service/, docs/isolation.md): a real uvicorn
server on 127.0.0.1 and a real httpx client, over a label store exported from a finished
testbed-style experiment (binary, with ID / OOD test subsets, two seeds).

The experiment's ground-truth runs are written as the pipeline writes them (metrics.json from
the same metric functions, DONE last) from made-up predictions, so a submission of a run's own
test predictions must come back with exactly that run's metrics.
"""
from __future__ import annotations

import json
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time

import httpx
import numpy as np
import pytest

from conftest import write_config
from w2s_scale.cli import main as w2s_main
from w2s_scale.loading import load_sweep
from w2s_scale.metrics import accuracy, roc_auc
from w2s_scale.pipeline import make_run_splits
from w2s_scale.results import RunDir
from w2s_scale.service.app import make_app
from w2s_scale.service.client import EvalClient, ServiceDown, SubmissionRefused
from w2s_scale.service.export import export
from w2s_scale.service.ledger import Ledger
from w2s_scale.service.server import start
from w2s_scale.service.store import open_store
from w2s_scale.subsets import subset_metrics, subset_of
from w2s_scale.sweep import plan_sweep

SEEDS = [0, 1]
N_TEST = 40
# each gt run's share of correct test predictions, per seed: weak below ceiling, a gap to recover
SKILL = {"weak": [0.6, 0.7], "ceiling": [0.9, 0.85]}


def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _row(tag: str, i: int, subset=None) -> dict:
    row = {"question": f"{tag} what is {i}+{i}?", "choice": f"{2 * i + i % 3}", "label": i % 3 == 0}
    return row if subset is None else {**row, "subset": "id" if i < 15 else "ood"}


def made_up_probs(labels: np.ndarray, skill: float, seed: int) -> np.ndarray:
    """p(class 1) that is right for about `skill` of the examples, with spread (so AUC varies)."""
    rng = np.random.default_rng(seed)
    right = rng.random(len(labels)) < skill
    sure = 0.5 + rng.random(len(labels)) * 0.49
    p_label = np.where(right, sure, 1 - sure)
    return np.round(np.where(labels == 1, p_label, 1 - p_label), 6)


def in_process_metrics(ids, labels, probs, subsets) -> dict:
    """What pipeline.execute writes into a run's metrics.json (the same calls)."""
    metrics = {"accuracy": accuracy(labels, probs), "auc": roc_auc(labels, probs), "n_test": len(ids)}
    if subsets:
        metrics["subsets"] = subset_metrics(ids, labels, probs, subsets)
    return metrics


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished experiment's gt runs on disk, its config, and each gt run's test p1 by id."""
    root = tmp_path_factory.mktemp("service")
    data = root / "testbed"
    _write_jsonl(data / "train_label.jsonl", [_row("label", i) for i in range(30)])
    _write_jsonl(data / "train_unlabel.jsonl", [_row("unlabel", i) for i in range(30)])
    _write_jsonl(data / "test.jsonl", [_row("test", i, True) for i in range(N_TEST)])
    config = write_config(root / "cfg.yaml", {
        "name": "svc", "results_dir": str(root / "results"), "seeds": SEEDS,
        "data": {"dataset": "aar_binary", "path": str(data)},
        "weak": {"name": "gpt2", "label": "small"}, "strong": {"name": "gpt2-medium", "label": "big"},
        "losses": ["xent"]})
    probs = {}
    for run in plan_sweep(load_sweep(config, [])):
        if run.plan.kind != "gt":
            continue
        role = "weak" if run.plan.model.short_name == "small" else "ceiling"
        test = make_run_splits(run.experiment, run.seed).test
        ids, labels = [e.id for e in test], np.array([e.label for e in test])
        p1 = made_up_probs(labels, SKILL[role][SEEDS.index(run.seed)], seed=run.seed + 10 * len(role))
        run_dir = RunDir(run.plan.dir, run.plan.hash)
        run_dir.prepare()
        run_dir.write_json("metrics.json", in_process_metrics(ids, labels, p1, subset_of(test)))
        run_dir.mark_done()
        probs[(role, run.seed)] = dict(zip(ids, p1.tolist()))
    return config, probs


@pytest.fixture(scope="module")
def store_dir(finished, tmp_path_factory):
    folder = tmp_path_factory.mktemp("labels") / "store"
    lines = export(finished[0], [], folder)
    assert "baseline aar_binary small->big" in "\n".join(lines)
    return folder


@pytest.fixture
def service(store_dir, tmp_path):
    """A real server on a free loopback port, with a fresh log; stopped after the test."""
    ledger = Ledger(tmp_path / "log.jsonl")
    running = start(make_app(open_store(store_dir), ledger), ledger=ledger)
    yield running
    running.stop()


def log_lines(running) -> list[dict]:
    return [json.loads(line) for line in running.ledger.path.read_text().splitlines()]


def submission(probs, run="r1", **fields) -> dict:
    return {"method": "vanilla", "run": run, "who": "tester", "split": "test", "seed": 0,
            "predictions": probs, **fields}


# --- the store ---------------------------------------------------------------------------------

def test_the_store_holds_the_runs_own_splits_and_only_its_owner_can_read_it(finished, store_dir):
    store = open_store(store_dir)
    exp = load_sweep(finished[0], []).datasets[0]
    for seed in SEEDS:
        splits = make_run_splits(plan_sweep(load_sweep(finished[0], []))[0].experiment, seed)
        for split, examples in (("test", splits.test), ("b", splits.b)):
            part = store.parts[(exp.dataset, seed, split)]
            assert part.ids == tuple(e.id for e in examples)
            assert part.labels.tolist() == [e.label for e in examples]
        assert dict(store.parts[(exp.dataset, seed, "test")].subsets) == subset_of(splits.test)
    assert stat.S_IMODE(store_dir.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) in (0o600, 0o700) for p in store_dir.rglob("*"))
    (baseline,) = store.baselines
    assert (baseline.weak, baseline.strong) == ("small", "big")
    assert sorted(baseline.weak_runs) == sorted(baseline.ceiling_runs) == SEEDS


def test_a_changed_store_is_refused_in_one_line(store_dir, tmp_path, capsys):
    copy = tmp_path / "copy"
    shutil.copytree(store_dir, copy)
    target = copy / "aar_binary/seed0/test.jsonl"
    target.chmod(0o600)
    target.write_text(target.read_text().replace('"label": 1', '"label": 0', 1))
    assert w2s_main(["serve", "--labels", str(copy), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "changed since it was exported" in err and "test.jsonl" in err
    assert w2s_main(["serve", "--labels", str(tmp_path / "none"), "--port", "0"]) == 2
    assert "no label store there" in capsys.readouterr().err


# --- scores ----------------------------------------------------------------------------------------

def test_a_submission_scores_exactly_as_the_run_did_in_process(finished, service):
    config, probs = finished
    for role, seed in [("weak", 0), ("ceiling", 1), ("weak", 1)]:
        answer = httpx.post(f"{service.url}/submit", json=submission(
            probs[(role, seed)], run=f"{role}-{seed}", seed=seed)).json()
        run = [r for r in plan_sweep(load_sweep(config, [])) if r.plan.kind == "gt" and r.seed == seed
               and (r.plan.model.short_name == "small") == (role == "weak")][0]
        metrics = json.loads((run.plan.dir / "metrics.json").read_text())
        assert answer["accuracy"] == metrics["accuracy"] and answer["auc"] == metrics["auc"]
        assert answer["n"] == N_TEST
        for name in ("id", "ood"):
            assert answer["subsets"][name]["accuracy"] == metrics["subsets"][name]["accuracy"]
            assert answer["subsets"][name]["auc"] == metrics["subsets"][name]["auc"]
            assert answer["subsets"][name]["n"] == metrics["subsets"][name]["n_test"]
    # PGR against the weak and ceiling accuracies averaged over seeds (the reference's anchors)
    weak = np.mean([accuracy_of(config, "small", s) for s in SEEDS])
    ceiling = np.mean([accuracy_of(config, "big", s) for s in SEEDS])
    assert answer["pgr"] == pytest.approx((answer["accuracy"] - weak) / (ceiling - weak), abs=1e-12)
    assert answer["anchors"]["weak_acc"] == pytest.approx(weak)
    assert answer["anchors"]["ceiling_acc"] == pytest.approx(ceiling)
    # class probabilities [p0, p1] score as p1 alone
    pairs = {i: [1 - p, p] for i, p in probs[("weak", 1)].items()}
    again = httpx.post(f"{service.url}/submit", json=submission(pairs, run="pairs", seed=1)).json()
    assert (again["accuracy"], again["auc"], again["pgr"]) == (answer["accuracy"], answer["auc"],
                                                                answer["pgr"])


def accuracy_of(config, model: str, seed: int) -> float:
    run = [r for r in plan_sweep(load_sweep(config, [])) if r.plan.kind == "gt" and r.seed == seed
           and r.plan.model.short_name == model][0]
    return json.loads((run.plan.dir / "metrics.json").read_text())["accuracy"]


def test_b_is_scored_without_pgr(store_dir, service):
    store = open_store(store_dir)
    part = store.parts[("aar_binary", 0, "b")]
    answer = httpx.post(f"{service.url}/submit", json=submission(
        {i: float(y) for i, y in zip(part.ids, part.labels)}, split="b")).json()
    assert answer["accuracy"] == 1.0 and answer["pgr"] is None and answer["n"] == len(part.ids)


# --- what never leaves -------------------------------------------------------------------------------

def test_no_answer_carries_anything_per_example(finished, store_dir, service):
    store = open_store(store_dir)
    ids = {i for part in store.parts.values() for i in part.ids}
    sizes = {len(part.ids) for part in store.parts.values()}
    answers = [httpx.get(f"{service.url}/health").json(), httpx.get(f"{service.url}/baselines").json(),
               httpx.post(f"{service.url}/submit", json=submission(finished[1][("weak", 0)])).json()]

    def walk(value):
        if isinstance(value, dict):
            for key, inner in value.items():
                assert key not in ids and "correct" not in str(key).lower(), key
                walk(inner)
        elif isinstance(value, list):
            assert len(value) not in sizes, "a list as long as a split"
            for inner in value:
                walk(inner)
        else:
            assert value not in ids, f"an example id in an answer: {value}"
    for answer in answers:
        walk(answer)


# --- the log -----------------------------------------------------------------------------------------

def test_the_log_has_one_line_per_call_with_who_what_and_the_answer(finished, service):
    probs = finished[1][("weak", 0)]
    calls = [httpx.get(f"{service.url}/health"),
             httpx.get(f"{service.url}/baselines"),
             httpx.post(f"{service.url}/submit", json=submission(probs)),
             httpx.post(f"{service.url}/submit", json=submission(probs)),          # duplicate
             httpx.post(f"{service.url}/submit", json={"method": "vanilla"}),       # malformed
             httpx.get(f"{service.url}/labels")]                                   # no such path
    assert [c.status_code for c in calls] == [200, 200, 200, 409, 422, 404]
    lines = log_lines(service)
    assert len(lines) == len(calls)
    assert [line["status"] for line in lines] == [200, 200, 200, 409, 422, 404]
    scored = lines[2]
    assert (scored["who"], scored["method"], scored["run"], scored["split"]) == (
        "tester", "vanilla", "r1", "test")
    assert scored["response"]["accuracy"] == calls[2].json()["accuracy"] and scored["time"]
    assert "predictions" not in scored and scored["n_predictions"] == N_TEST
    assert "scored already" in lines[3]["error"] and lines[4]["method"] == "vanilla"
    assert lines[5]["call"] == "GET /labels"


# --- refusals -------------------------------------------------------------------------------------------

def _bad(probs: dict, change: str) -> dict:
    first = next(iter(probs))
    if change == "missing id":
        return submission({k: v for k, v in probs.items() if k != first})
    if change == "unknown id":
        return submission({**probs, "no-such-example": 0.5})
    if change == "out of range":
        return submission({**probs, first: 1.5})
    if change == "wrong shape":
        return submission({**probs, first: [0.2, 0.3, 0.5]})
    if change == "not a number":
        return submission({**probs, first: "high"})
    if change == "unknown seed":
        return submission(probs, seed=7)
    if change == "no method":
        return {k: v for k, v in submission(probs).items() if k != "method"}
    if change == "unknown field":
        return submission(probs, labels=[1, 0])
    return submission(probs, split="train")


@pytest.mark.parametrize("change, says", [
    ("missing id", "predictions: 1 of the split's 40 ids have no prediction"),
    ("unknown id", "predictions: 1 id(s) are not in this split"),
    ("out of range", "is not a probability in [0, 1]"),
    ("wrong shape", "is not a probability; give p(class 1) or a list of 2"),
    ("not a number", "is not a probability"),
    ("unknown seed", "seed: 7 is not in this store"),
    ("no method", "method: Field required"),
    ("unknown field", "labels: Extra inputs are not permitted"),
    ("wrong split", "split: Input should be 'test' or 'b'"),
])
def test_a_malformed_submission_gets_a_clear_one_line_422(finished, service, change, says):
    response = httpx.post(f"{service.url}/submit", json=_bad(finished[1][("weak", 0)], change))
    assert response.status_code == 422
    error = response.json()["error"]
    assert says in error and "\n" not in error
    assert list(response.json()) == ["error"]
    assert log_lines(service)[-1]["error"] == error


def test_a_body_that_is_not_json_is_refused_clearly(service):
    response = httpx.post(f"{service.url}/submit", content=b"{not json",
                          headers={"content-type": "application/json"})
    assert response.status_code == 422 and "JSON" in response.json()["error"]


def test_a_duplicate_is_refused_and_a_retry_gets_its_first_answer(finished, store_dir, service):
    probs = finished[1][("weak", 0)]
    first = httpx.post(f"{service.url}/submit", json=submission(probs, submission_id="abc123")).json()
    other = httpx.post(f"{service.url}/submit", json=submission(probs))
    assert other.status_code == 409
    assert "method vanilla run r1 split test was scored already" in other.json()["error"]
    # the same submission again (its answer was lost on the way): the first answer, not a new score
    retry = httpx.post(f"{service.url}/submit", json=submission(probs, submission_id="abc123"))
    assert retry.status_code == 200 and retry.json()["replayed"] is True
    assert {k: v for k, v in retry.json().items() if k != "replayed"} == {
        k: v for k, v in first.items() if k != "replayed"}
    # its id with other predictions is refused
    changed = {**probs, next(iter(probs)): 0.01}
    reused = httpx.post(f"{service.url}/submit", json=submission(changed, submission_id="abc123"))
    assert reused.status_code == 409 and "submission_id" in reused.json()["error"]
    assert service.ledger.spent["vanilla"] == 1
    # the same run on the other split is another submission
    part = open_store(store_dir).parts[("aar_binary", 0, "b")]
    assert httpx.post(f"{service.url}/submit", json=submission(
        {i: 0.5 for i in part.ids}, split="b")).status_code == 200


def test_racing_submissions_of_one_run_are_scored_once(finished, service):
    from concurrent.futures import ThreadPoolExecutor
    probs = finished[1][("weak", 0)]
    with ThreadPoolExecutor(4) as pool:
        codes = list(pool.map(lambda i: httpx.post(f"{service.url}/submit", json=submission(
            probs, run="race")).status_code, range(4)))
    assert sorted(codes) == [200, 409, 409, 409]
    assert service.ledger.spent["vanilla"] == 1


def test_a_body_above_the_limit_is_refused_before_it_is_read(finished, service, monkeypatch):
    import w2s_scale.service.app as app_module
    monkeypatch.setattr(app_module, "MAX_BODY_BYTES", 100)
    response = httpx.post(f"{service.url}/submit", json=submission(finished[1][("weak", 0)]))
    assert response.status_code == 413 and "above the service's 100" in response.json()["error"]
    assert log_lines(service)[-1]["status"] == 413


def test_a_method_over_its_budget_gets_429(finished, store_dir, tmp_path):
    ledger = Ledger(tmp_path / "log.jsonl")
    running = start(make_app(open_store(store_dir), ledger, budget=2, allow_resubmit=True),
                    ledger=ledger)
    try:
        probs = finished[1][("weak", 0)]
        got = [httpx.post(f"{running.url}/submit", json=submission(probs, run="same")) for _ in range(3)]
        assert [r.status_code for r in got] == [200, 200, 429]
        assert got[1].json()["budget_left"] == 0
        assert "method vanilla has used its budget of 2" in got[2].json()["error"]
        other = httpx.post(f"{running.url}/submit", json=submission(probs, method="other"))
        assert other.status_code == 200  # per method
    finally:
        running.stop()
    # the budget outlives a restart: it is counted from the log
    again = Ledger(tmp_path / "log.jsonl")
    assert again.spent["vanilla"] == 2
    again.close()


# --- the server down mid-sweep ----------------------------------------------------------------------

def test_the_server_down_mid_sweep_loses_nothing(finished, store_dir, tmp_path):
    log, pending = tmp_path / "log.jsonl", tmp_path / "pending"
    probs = finished[1]
    ledger = Ledger(log)
    running = start(make_app(open_store(store_dir), ledger), ledger=ledger)
    port = int(running.url.rsplit(":", 1)[1])
    client = EvalClient(running.url, pending)
    as_numpy = {i: np.float32(p) for i, p in probs[("weak", 0)].items()}  # a model's output as is
    assert client.submit("vanilla", "seed0", as_numpy, who="job-1", seed=0)["n"] == N_TEST
    running.stop()  # the service goes down while the sweep goes on
    kept = []
    for seed in SEEDS:
        with pytest.raises(ServiceDown) as down:
            client.submit("vanilla", f"seed{seed}-late", probs[("ceiling", seed)], who="job-2", seed=seed)
        message = str(down.value)
        assert "cannot be reached" in message and "w2s submit --pending" in message
        assert "\n" not in message and down.value.pending.exists()
        kept.append(down.value.pending)
    assert sorted(pending.glob("*.json")) == sorted(kept)
    assert client.send_pending().left == sorted(kept)  # still down: nothing sent, nothing lost
    # back up (a restart on the same port, the same log): the kept ones are scored
    ledger = Ledger(log)
    running = start(make_app(open_store(store_dir), ledger), port=port, ledger=ledger)
    try:
        report = client.send_pending()
        assert len(report.scored) == 2 and not report.refused and not report.left
        assert list(pending.glob("*.json")) == []
        assert {a["run"] for _, a in report.scored} == {"seed0-late", "seed1-late"}
        late = {a["seed"]: a for _, a in report.scored}
        direct = EvalClient(running.url, tmp_path / "unused").submit(
            "check", "x", probs[("ceiling", 1)], seed=1)
        assert late[1]["accuracy"] == direct["accuracy"] and late[1]["pgr"] == direct["pgr"]
        # what was scored before the outage is still known: a duplicate is still refused
        with pytest.raises(SubmissionRefused) as refused:
            client.submit("vanilla", "seed0", probs[("weak", 0)], seed=0)
        assert refused.value.status == 409
        runs = [(e["run"], e["status"]) for e in map(json.loads, log.read_text().splitlines())
                if e["call"] == "POST /submit"]
        assert runs == [("seed0", 200), ("seed0-late", 200), ("seed1-late", 200), ("x", 200),
                        ("seed0", 409)]
    finally:
        running.stop()


def test_a_lost_answer_is_not_scored_twice(finished, store_dir, tmp_path):
    """The service scored a submission but the job never got the answer (a timeout): the kept
    copy, sent again with its id, gets the first answer back and spends no budget."""
    ledger = Ledger(tmp_path / "log.jsonl")
    running = start(make_app(open_store(store_dir), ledger, budget=1), ledger=ledger)
    try:
        client = EvalClient(running.url, tmp_path / "pending")
        body = {"method": "m", "run": "r", "who": "w", "split": "test", "seed": 0,
                "submission_id": "lost-1", "predictions": finished[1][("weak", 0)]}
        first = httpx.post(f"{running.url}/submit", json=body).json()
        client.keep(body, "timed out")
        report = client.send_pending()
        assert report.scored[0][1]["replayed"] and report.scored[0][1]["accuracy"] == first["accuracy"]
        assert ledger.spent["m"] == 1
    finally:
        running.stop()


def test_no_known_service_keeps_the_predictions(finished, tmp_path, monkeypatch):
    monkeypatch.delenv("W2S_EVAL_URL", raising=False)
    client = EvalClient(None, tmp_path / "pending", url_file=tmp_path / "none.json")
    with pytest.raises(ServiceDown) as down:
        client.submit("m", "r", finished[1][("weak", 0)], seed=0)
    assert "no evaluation service is known" in str(down.value)
    assert json.loads(down.value.pending.read_text())["submission"]["predictions"]


# --- the commands ---------------------------------------------------------------------------------------

def test_w2s_submit_keeps_a_predictions_file_when_down_and_sends_it_later(finished, service,
                                                                          tmp_path, capsys):
    rows = [{"id": i, "p1": p, "label": 0} for i, p in finished[1][("weak", 0)].items()]
    path = tmp_path / "test_predictions.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{sock.getsockname()[1]}"
    code = w2s_main(["submit", str(path), "--method", "m", "--run", "r", "--seed", "0",
                     "--url", dead, "--pending-dir", str(tmp_path / "pending")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("w2s: error:") and "\n" not in err
    (kept,) = (tmp_path / "pending").glob("*.json")
    sent = json.loads(kept.read_text())["submission"]
    assert "label" not in json.dumps(sent) and len(sent["predictions"]) == N_TEST
    code = w2s_main(["submit", "--pending", "--pending-dir", str(tmp_path / "pending"),
                     "--url", service.url])
    out = capsys.readouterr().out
    assert code == 0 and "m run r (aar_binary seed 0, test, n 40): accuracy" in out
    assert "; id: accuracy" in out and "; ood: accuracy" in out
    assert not kept.exists() and log_lines(service)[-1]["run"] == "r"


# what `w2s serve --labels L --port 0 --url-file U --log G` runs once its arguments are read (the
# whole `w2s` command would spend most of this test importing the training stack)
SERVE = ("import sys; from pathlib import Path; from w2s_scale.service.server import serve; "
         "sys.exit(serve(Path(sys.argv[1]), '127.0.0.1', 0, Path(sys.argv[3]), None, False, "
         "Path(sys.argv[2])))")


def test_the_foreground_server_announces_its_url_and_jobs_find_it(store_dir, finished, tmp_path):
    """The server as `w2s serve` runs it, in its own process: it prints the URL, writes the URL
    file that jobs read, and removes it when stopped by SIGTERM."""
    url_file = tmp_path / "url.json"
    proc = subprocess.Popen([sys.executable, "-c", SERVE, str(store_dir), str(url_file),
                             str(tmp_path / "log.jsonl")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.time() + 60
        while not url_file.exists() and proc.poll() is None and time.time() < deadline:
            time.sleep(0.05)
        assert url_file.exists(), proc.stdout.read() if proc.poll() is not None else "no URL file"
        client = EvalClient(None, tmp_path / "pending", url_file=url_file)
        assert client.health()["datasets"]["aar_binary"]["seeds"] == SEEDS
        answer = client.submit("m", "r", finished[1][("weak", 0)], seed=0)
        assert answer["accuracy"] == accuracy_of(finished[0], "small", 0)
    finally:
        proc.send_signal(signal.SIGTERM)
        out = proc.communicate(timeout=30)[0]
    assert proc.returncode == 0, out
    assert "evaluation service at http://127.0.0.1:" in out and "W2S_EVAL_URL=" in out
    assert not url_file.exists()

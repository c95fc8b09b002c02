"""The evaluation service's commands of `w2s` (registered by cli.py):

  w2s serve  --labels DIR [-c CONFIG [--export-only]] [--host H] [--port P] [--log F] [--budget N]
  w2s submit PREDICTIONS.jsonl --method M --run R [--split test|b] [--seed K] ...
  w2s submit --pending                 send the submissions kept while the service was down
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from w2s_scale.cli_args import positive_int
from w2s_scale.errors import UserError, shorten
from w2s_scale.service.client import EvalClient, ServiceDown
from w2s_scale.service.discovery import URL_ENV, url_file
from w2s_scale.service.export import export
from w2s_scale.service.server import serve

COMMANDS = ("serve", "submit")
DEFAULT_PORT = 8787


def add_commands(sub) -> None:
    srv = sub.add_parser("serve", help="the label-isolated evaluation service: holds the ground "
                                       "truth and baselines, scores submitted predictions")
    srv.add_argument("--labels", required=True, type=Path,
                     help="the label store's folder (owner-only); with -c it is (re)exported first")
    srv.add_argument("--config", "-c", help="a finished experiment or sweep YAML: export its "
                                            "ground truth and baselines into --labels first")
    srv.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                     help="override a config field (repeatable)")
    srv.add_argument("--export-only", action="store_true", help="export the store and stop")
    srv.add_argument("--host", default="127.0.0.1",
                     help="address to listen on (default 127.0.0.1; 0.0.0.0: reachable by jobs "
                          "on other nodes)")
    srv.add_argument("--port", type=port_number, default=DEFAULT_PORT,
                     help=f"default {DEFAULT_PORT}; 0: any free port (printed)")
    srv.add_argument("--log", type=Path,
                     help="the append-only log of every call (default: LABELS.submissions.jsonl "
                          "beside the store)")
    srv.add_argument("--budget", type=positive_int,
                     help="scored submissions allowed per method (default: no limit)")
    srv.add_argument("--allow-resubmit", action="store_true",
                     help="score a (method, run, split) again instead of refusing it (409)")
    srv.add_argument("--url-file", type=Path,
                     help="where to write the URL for jobs (default $W2S_EVAL_URL_FILE or "
                          "~/.w2s/eval-service.json)")

    sbm = sub.add_parser("submit", help="send predictions to the evaluation service, or the "
                                        "ones kept while it was down (--pending)")
    sbm.add_argument("predictions", nargs="?", type=Path,
                     help='a JSON-lines file of {"id", "p1"} or {"id", "probs"} rows '
                          "(test_predictions.jsonl's form; other fields are not sent)")
    sbm.add_argument("--pending", action="store_true", help="send the kept submissions")
    sbm.add_argument("--method", help="the method's name (its budget is counted per name)")
    sbm.add_argument("--run", help="the run's name; a (method, run, split) is scored once")
    sbm.add_argument("--who", help="who submits (default user@host)")
    sbm.add_argument("--split", choices=["test", "b"], default="test")
    sbm.add_argument("--dataset")
    sbm.add_argument("--seed", type=int)
    sbm.add_argument("--weak", help="the baseline pair's weak model (where there are several)")
    sbm.add_argument("--strong", help="the baseline pair's strong model")
    sbm.add_argument("--url", help=f"the service (default ${URL_ENV}, then the URL file)")
    sbm.add_argument("--url-file", type=Path)
    sbm.add_argument("--pending-dir", type=Path,
                     help="where unsent submissions are kept (default $W2S_PENDING_DIR or "
                          "~/.w2s/pending)")
    sbm.add_argument("--json", action="store_true", help="print the service's answer as JSON")


def port_number(text: str) -> int:
    """argparse type: a TCP port, 0 (any free one) to 65535."""
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"expected a port number 0-65535, got {shorten(text)}")
    return int(text)


def main(args: argparse.Namespace) -> int:
    if args.command == "serve":
        return _serve(args)
    return _submit(args)


def _serve(args: argparse.Namespace) -> int:
    labels = args.labels
    if args.config:
        for line in export(args.config, args.overrides, labels):
            print(f"w2s serve: {line}", flush=True)
    elif args.export_only:
        raise UserError("--export-only: give the finished experiment or sweep to export with -c CONFIG")
    if args.export_only:
        return 0
    resolved = labels.resolve()  # outside the store: a re-export never moves the log
    log = args.log or resolved.with_name(f"{resolved.name}.submissions.jsonl")
    return serve(labels, args.host, args.port, log, args.budget, args.allow_resubmit,
                 url_file(args.url_file))


def read_predictions(path: Path) -> dict[str, Any]:
    """{id: p1 or class probabilities} from a JSON-lines file of rows with "id" and "p1" or
    "probs" (labels and other fields in the file are not read)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise UserError(f"predictions file {path} cannot be read ({err}); give a JSON-lines "
                        f"file of {{\"id\", \"p1\"}} rows") from None
    out: dict[str, Any] = {}
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or "id" not in row or not ("p1" in row or "probs" in row):
            raise UserError(f"predictions file {path} line {n}: {shorten(line)} is not a row "
                            f"with \"id\" and \"p1\" (or \"probs\"); fix that line")
        if str(row["id"]) in out:
            raise UserError(f"predictions file {path} line {n}: id {shorten(row['id'])} appears "
                            f"twice; keep one prediction per example")
        out[str(row["id"])] = row["probs"] if "probs" in row else row["p1"]
    if not out:
        raise UserError(f"predictions file {path} is empty; it needs one row per example")
    return out


def _submit(args: argparse.Namespace) -> int:
    client = EvalClient(args.url, args.pending_dir, args.url_file)
    if args.pending:
        if args.predictions:
            raise UserError("give either a predictions file or --pending, not both")
        return _send_pending(client, args.json)
    if args.predictions is None or not args.method or not args.run:
        raise UserError("w2s submit needs a predictions file with --method and --run (or "
                        "--pending to send the kept ones)")
    answer = client.submit(args.method, args.run, read_predictions(args.predictions),
                           split=args.split, who=args.who, dataset=args.dataset, seed=args.seed,
                           weak=args.weak, strong=args.strong)
    print(json.dumps(answer, indent=1) if args.json else describe(answer), flush=True)
    return 0


def _send_pending(client: EvalClient, as_json: bool) -> int:
    report = client.send_pending()
    for path, answer in report.scored:
        print(json.dumps(answer) if as_json else f"{path.name}: {describe(answer)}", flush=True)
    for path, why in report.refused:
        print(f"{path}: refused, kept there: {why}", flush=True)
    if report.left:
        raise ServiceDown(f"the service went down again: {len(report.left)} submission(s) still "
                          f"pending in {client.pending}; run this again later")
    if not report.scored and not report.refused:
        print(f"nothing pending in {client.pending}", flush=True)
    return 1 if report.refused else 0


def describe(answer: dict) -> str:
    """One line per answer: what was scored and how it did."""
    def num(value) -> str:
        return "undefined" if value is None else f"{value:.4f}"
    text = (f"{answer['method']} run {answer['run']} ({answer['dataset']} seed {answer['seed']}, "
            f"{answer['split']}, n {answer['n']}): accuracy {num(answer['accuracy'])}, AUC "
            f"{num(answer['auc'])}, PGR {num(answer['pgr'])}, AUC-PGR {num(answer['pgr_auc'])}")
    for name, sub in answer.get("subsets", {}).items():
        text += f"; {name}: accuracy {num(sub['accuracy'])}, PGR {num(sub['pgr'])} (n {sub['n']})"
    return text + (" [answer of an earlier identical submission]" if answer.get("replayed") else "")

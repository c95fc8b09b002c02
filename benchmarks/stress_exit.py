"""Stress the way 2-rank runs end: run the 2-rank entry points many times while busy processes
load every core, and count the runs that fail (non-zero exit, or "terminate called" in the
output: the abort at exit that distributed.exit_process prevents; see its docstring).

    python benchmarks/stress_exit.py [--runs 30] [--experiments 2] [--load 2] [--legacy-exit]

Entry points, in turn: tests/helpers/exit_race.py (the exit race made likely: a gloo worker
still finishing the last collective when the rank leaves), tests/helpers/zero3_head_init.py
(a ZeRO-3 model on 2 ranks), both under torchrun; and `--experiments` whole tiny `w2s
experiment` runs on 2 ranks, alternately through torchrun and the deepspeed launcher (slow:
about a minute each on a loaded 2-core machine). One line per run, then `N runs, M failures`;
exit status 1 on any failure. --legacy-exit ends exit_race.py the way every entry point
ended before the fix (destroy_process_group, then the interpreter's own exit), to look for
the abort (seen by hand, rarely under this script: see that helper). Not part of the test suite (`make stress`)."""
from __future__ import annotations

import argparse
import itertools
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ABORT = "terminate called"


def tiny_setup(root: Path) -> tuple[dict[str, Path], Path]:
    """The test suite's tiny random-initialised GPT-2 models and sentiment data."""
    sys.path.insert(0, str(REPO / "tests"))
    from conftest import make_tiny_model, write_sentiment_jsonl

    from w2s_scale.assets import gpt2_tokenizer

    tokenizer = gpt2_tokenizer()
    models = {k: make_tiny_model(k, root / k, tokenizer) for k in ("gpt2-weak", "gpt2-strong")}
    return models, write_sentiment_jsonl(root / "data.jsonl", 200)


def experiment_config(root: Path, models: dict[str, Path], data: Path) -> Path:
    import yaml
    from conftest import tiny_config

    config = tiny_config(root / "results", models, data, losses=["xent"])
    config["data"].update(n_train=80, n_test=32)
    path = root / "experiment.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def torchrun(script: Path, *args: str) -> list[str]:
    from w2s_scale.distributed import free_port

    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
            f"--master_port={free_port()}", str(script), *args]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=30, help="runs in all (default 30)")
    parser.add_argument("--experiments", type=int, default=2,
                        help="how many of them are whole `w2s experiment` runs (default 2)")
    parser.add_argument("--load", type=int, default=os.cpu_count() or 2,
                        help="busy processes beside the runs (default: one per core)")
    parser.add_argument("--legacy-exit", action="store_true",
                        help="end exit_race.py as before the fix, to reproduce the abort")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="w2s-stress-"))
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "WANDB_MODE": "disabled",
           "TOKENIZERS_PARALLELISM": "false", "PYTHONPATH": os.pathsep.join(
               [str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])}
    models, data = tiny_setup(work)
    config = experiment_config(work, models, data)
    helpers = REPO / "tests" / "helpers"
    marker = work / "marker"
    light = {
        "exit_race": lambda: torchrun(helpers / "exit_race.py", str(marker),
                                      "legacy" if args.legacy_exit else "finish"),
        "zero3_head_init": lambda: torchrun(helpers / "zero3_head_init.py",
                                            str(models["gpt2-strong"]), str(work / "head.json")),
    }
    heavy = {
        f"experiment/{launcher}": (lambda launcher=launcher: [
            sys.executable, "-m", "w2s_scale.cli", "experiment", "-c", str(config), "--redo",
            "--launcher", launcher, "--nproc", "2"])
        for launcher in ("torchrun", "deepspeed")}
    # the heavy runs spread evenly over the schedule; the light ones alternate in between
    heavy_at = {round((i + 0.5) * args.runs / args.experiments)
                for i in range(args.experiments)} if args.experiments else set()
    light_cycle, heavy_cycle = itertools.cycle(light.items()), itertools.cycle(heavy.items())

    load = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(args.load)]
    failures = 0
    try:
        for i in range(1, args.runs + 1):
            name, command = next(heavy_cycle if i in heavy_at else light_cycle)
            marker.unlink(missing_ok=True)
            start = time.monotonic()
            try:
                proc = subprocess.run(command(), cwd=REPO, env=env, capture_output=True,
                                      text=True, timeout=args.timeout)
                code, output = proc.returncode, proc.stdout + proc.stderr
            except subprocess.TimeoutExpired as hung:
                code, output = "timeout", str(hung.stderr or "")
            failed = code != 0 or ABORT in output
            failures += failed
            detail = ""
            if failed:
                log = work / f"run{i}.log"
                log.write_text(output)
                detail = f"  ({'abort at exit: ' if ABORT in output else ''}log {log})"
            print(f"run {i:3d} {name:22s} exit {code!s:>7}  {time.monotonic() - start:6.1f} s  "
                  f"{'FAIL' if failed else 'ok'}{detail}", flush=True)
    finally:
        for p in load:
            p.kill()
            p.wait()
    print(f"{args.runs} runs, {failures} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

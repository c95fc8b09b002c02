"""An isolated method's process: `python -m w2s_scale.methods.isolated WORKSPACE`.

The framework starts it inside the sandbox (w2s_scale/sandbox.py, from
w2s_scale/methods/isolation.py), where the results folder, the data files and the label store
are empty folders. It reads the label-free bundle (WORKSPACE/bundle, bundle.py), calls the
method with a MethodContext made from it, trains the students the method asks for through the
engine as an in-process run does (runner.StudentTrainer, on copies of B and test whose label is
runner.NO_LABEL), and writes what the method returned into WORKSPACE/out:

  result.npz    test_probs [N_test, K], and b_probs [N_b, K] when the method gave them
  result.json   the method's `extra` and how many students it trained; written last, so its
                presence means the result is whole
  log.jsonl     the method's ctx.log values and the students' training (merged into the run's
                log.jsonl by the framework)
  error.txt     one line, when it failed (the framework reports it as its own)

It scores nothing: it holds no label to score with. Single rank: it forms a process group of its
own (a student's engine needs one). A stop (SIGTERM, SIGINT, SIGUSR1, forwarded by the sandbox)
checkpoints the student being trained into WORKSPACE/out/checkpoints, and the next attempt
resumes it, as an in-process method run does.
"""
from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from pathlib import Path
from typing import NoReturn

import numpy as np
from transformers import set_seed

from w2s_scale import distributed as dist
from w2s_scale.cli_args import EXIT_USER_ERROR
from w2s_scale.config import ExperimentConfig, LossConfig, MethodConfig, ModelConfig, TrainConfig
from w2s_scale.data.splits import Splits
from w2s_scale.data.values import Example
from w2s_scale.engine import RunStopped, StopFlag
from w2s_scale.errors import UserError
from w2s_scale.files import atomic_write
from w2s_scale.methods import bundle as bundles
from w2s_scale.methods.bundle import BUNDLE, ERROR, LOG, OUT, RESULT, RESULT_INFO
from w2s_scale.methods.registry import find_method
from w2s_scale.methods.runner import NO_LABEL, StudentTrainer, _checked, _plain
from w2s_scale.pipeline import run_inputs
from w2s_scale.planning import RunPlan
from w2s_scale.processes import EXIT_INTERRUPTED, EXIT_STOPPED
from w2s_scale.results import RunDir
from w2s_scale.tracking import Tracker


def _plan(run: dict, method: MethodConfig, out: Path) -> RunPlan:
    """The run's plan as the students need it (model, training, loss, seed), its folder the
    output folder: students checkpoint there."""
    return RunPlan(name=run["name"], kind="method", model=ModelConfig(**run["model"]),
                   train=TrainConfig(**run["train"]), loss=LossConfig(**run["loss"]),
                   seed=run["seed"], dir=out, hash=run["hash"], stage=method, label_tag=method.tag)


def run(workspace: Path) -> None:
    given = bundles.read(workspace / BUNDLE)
    out = workspace / OUT
    method_cfg = MethodConfig.model_validate(given.method)
    # caches a student makes (a linear probe's features) go into the output folder: the
    # results folder, where they live otherwise, is hidden here
    cfg = ExperimentConfig.model_validate({**given.experiment, "results_dir": str(out / "results")})
    plan = _plan(given.run, method_cfg, out)
    ctx = given.ctx
    blind = Splits(a=[], b=[Example(i, t, NO_LABEL, group=g) for i, t, g in zip(ctx.b.ids, ctx.b.texts, ctx.b.groups)],
                   test=[Example(i, t, NO_LABEL, group=g)
                         for i, t, g in zip(ctx.test.ids, ctx.test.texts, ctx.test.groups)])
    dist.init()
    # W&B is the framework's: it logs this log's lines when the method is done
    tracker = Tracker(out / LOG, cfg.tracking.model_copy(update={"wandb": "off"}), run_name=plan.name,
                      group=f"{cfg.name}/seed{plan.seed}")
    trainer = StudentTrainer(cfg, plan, blind, run_inputs, RunDir(out, plan.hash), tracker)
    ctx = dataclasses.replace(ctx, _train=trainer,
                              _log=lambda values: tracker.log({"event": "method", **dict(values)}))
    method = find_method(method_cfg.name)
    set_seed(plan.train_seed)  # as an in-process method run: its draws do not depend on the host
    try:
        result = method(ctx)
        test_probs, b_probs = _checked(result, ctx)
    finally:
        tracker.close()
    arrays = {"test_probs": test_probs} if b_probs is None else {"test_probs": test_probs, "b_probs": b_probs}
    with open(out / RESULT, "wb") as fh:
        np.savez(fh, **arrays)
    atomic_write(out / RESULT_INFO, json.dumps({"extra": _plain(result.extra),
                                                "students": trainer.trained}) + "\n")


def main(argv: list[str]) -> NoReturn:
    workspace = Path(argv[1])
    error = workspace / OUT / ERROR
    error.unlink(missing_ok=True)
    with StopFlag():  # a stop while the method loads or predicts is kept for the next step
        try:
            run(workspace)
            code = 0
        except RunStopped as stop:
            atomic_write(error, f"{stop}\n")
            code = EXIT_STOPPED
        except KeyboardInterrupt:  # a second Ctrl-C: now, without a checkpoint
            atomic_write(error, "interrupted by a second SIGINT, without a checkpoint\n")
            code = EXIT_INTERRUPTED
        except UserError as err:  # the framework reports it, in one line
            atomic_write(error, " ".join(str(err).split()) + "\n")
            code = EXIT_USER_ERROR
        except BaseException as err:  # the method's own failure: its traceback, then one line
            traceback.print_exc()
            atomic_write(error, " ".join(f"{type(err).__name__}: {err}".split())[:500] + "\n")
            code = 1
    dist.shutdown(clean=code == 0)
    dist.exit_process(code)


if __name__ == "__main__":
    main(sys.argv)

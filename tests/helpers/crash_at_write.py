"""`w2s` killed outright (SIGKILL, no cleanup) just before one of a run's atomic writes lands:
the file's complete temporary copy is on disk, the rename that publishes it never happens.

    W2S_CRASH_AT=metrics.json python tests/helpers/crash_at_write.py run -c cfg.yaml --run-key ...

W2S_CRASH_AT names the published file or folder: config.yaml, metrics.json,
test_predictions.jsonl, weak_labels.jsonl, model (the saved weights' folder), DONE.

W2S_CRASH_AT=every, with W2S_SNAPSHOT_TO=DIR, is every such kill in one process: just before each
rename, the folder it publishes into is copied, as a kill there would leave it (a SIGKILL runs
nothing more), to DIR/<n>-<name>; then the rename goes ahead and the run goes on.
"""
import os
import shutil
import signal
import sys
from pathlib import Path

CRASH_AT = os.environ["W2S_CRASH_AT"]
_replace = os.replace
_snapshots = 0


def replace_or_die(src, dst, *args, **kwargs):
    global _snapshots
    if CRASH_AT == "every":
        _snapshots += 1
        shutil.copytree(Path(dst).parent, Path(os.environ["W2S_SNAPSHOT_TO"]) / f"{_snapshots}-{Path(dst).name}",
                        symlinks=True)
    elif Path(dst).name == CRASH_AT:
        os.kill(os.getpid(), signal.SIGKILL)
    return _replace(src, dst, *args, **kwargs)


os.replace = replace_or_die  # results.atomic_write and saving._publish both publish with it

from w2s_scale.cli import main  # noqa: E402 - after the patch, though it is looked up at call time

sys.exit(main(sys.argv[1:]))

"""Run under torchrun with 2 ranks and W2S_COLLECTIVE_TIMEOUT_S set: does a collective on the
process group DeepSpeed's engine uses for ZeRO (its clone of the world group, made with
`dist.new_group`) give up within launch.collective_timeout_s? Rank 1 never joins it; it waits
for rank 0 to be done (a marker file), at most 10 timeouts. Rank 0 prints how long it waited
and how the collective ended. Before distributed.init set the default of every group, that
group kept torch's 30 minutes: rank 0 waited until rank 1 left. argv: MARKER_PATH."""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed  # noqa: E402

from w2s_scale import distributed as dist  # noqa: E402

import deepspeed  # noqa: E402,F401  (imported before the rendezvous: slow under load)
from deepspeed.utils import groups  # noqa: E402

marker = Path(sys.argv[1])
timeout_s = float(os.environ[dist.TIMEOUT_ENV])


def side_by_side(step: str) -> None:
    """Both ranks reach `step` before either goes on (files, no collective): the group set-up
    below runs under the short timeout too, and on a loaded machine one rank's imports can lag
    the other's by more than that; the set-up would then time out before the case under test."""
    rank = os.environ["RANK"]
    Path(f"{marker}.{step}.{rank}").write_text("")
    other = Path(f"{marker}.{step}.{1 - int(rank)}")
    deadline = time.monotonic() + 600
    while not other.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


try:
    side_by_side("init")
    dist.init()
    side_by_side("group")
    group = groups._clone_world_group()  # deepspeed.initialize's data-parallel group (no mpu)
except RuntimeError as err:  # a set-up that timed out all the same: say so, never hang
    print(f"rank {os.environ['RANK']}: set-up failed: {str(err).splitlines()[0][-200:]}", flush=True)
    dist.exit_process(3)
if dist.rank() == 1:
    deadline = time.monotonic() + 10 * timeout_s
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    dist.exit_process(0)
start = time.monotonic()
try:
    torch.distributed.all_reduce(torch.ones(1), group=group)
    outcome = "completed"
except RuntimeError as err:
    outcome = "failed: " + str(err).splitlines()[0][-100:]
print(f"rank 0 waited {time.monotonic() - start:.1f} s on DeepSpeed's group, timeout {timeout_s:g} s: "
      f"{outcome}", flush=True)
marker.write_text("done")
dist.exit_process(0)

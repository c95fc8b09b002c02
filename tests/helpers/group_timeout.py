"""2 ranks under torchrun: rank 1 never joins a collective; rank 0 all-reduces on the process
group DeepSpeed's engine uses for ZeRO (its clone of the world group, made with torch's default
timeout unless distributed.init changed it). Prints the seconds rank 0 waited before the
collective failed. Usage: W2S_COLLECTIVE_TIMEOUT_S=3 torchrun --nproc_per_node=2 group_timeout.py"""
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed  # noqa: E402

from w2s_scale import distributed as dist  # noqa: E402

dist.init()
from deepspeed.utils import groups  # noqa: E402

group = groups._clone_world_group()  # what deepspeed.initialize uses as the data-parallel group
if dist.rank() == 1:
    time.sleep(float(os.environ[dist.TIMEOUT_ENV]) * 4)  # silent, then leaves
    dist.exit_process(0)
start = time.monotonic()
try:
    torch.distributed.all_reduce(torch.ones(1), group=group)
    outcome = "completed"
except RuntimeError as err:
    outcome = "failed: " + str(err).splitlines()[0][:120]
print(f"rank 0 waited {time.monotonic() - start:.1f} s on DeepSpeed's group: {outcome}", flush=True)
dist.exit_process(0)

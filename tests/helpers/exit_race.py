"""Run under torchrun with 2 ranks: end a rank the way DeepSpeed leaves it, with a gloo worker
thread still finishing the last collective when the main thread exits.

ZeRO-3 keeps the world group referenced (every parameter's ds_process_group), so its gloo
worker threads outlive destroy_process_group; here a held reference does the same. Rank 1
joins the last all_reduce late, so its peer's worker frees the collective's tensor (whose
Python object is gone: the C++ side then owns it and needs the GIL to drop it) only while
the main thread is already leaving. A module global whose finaliser sleeps stands in for the
slow teardown of a large heap on a loaded machine, and tells rank 1 (through a marker file)
to join then: on rank 0 the interpreter is surely finalising when the collective completes
(rank 1 waits at most 3 s for the marker). argv: MARKER_PATH, then "finish" (the shared shutdown path,
distributed.finish) or "legacy" (destroy_process_group, then the interpreter's own exit: the
path before the fix; it aborted with "terminate called without an active exception" in 4 of 8
runs by hand on a lightly loaded machine, but not reliably: in 0 of 5 under the stress script)."""
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import torch  # noqa: E402
import torch.distributed  # noqa: E402

from w2s_scale import distributed as dist  # noqa: E402



class SlowTeardown:
    def __del__(self):
        marker.write_text("finalising")
        time.sleep(2)  # releases the GIL, as any long finaliser work would


marker, mode = Path(sys.argv[1]), sys.argv[2]
dist.init()
if dist.rank() == 0:
    slow_teardown = SlowTeardown()
world_group = torch.distributed.distributed_c10d._get_default_group()  # as ZeRO-3 holds it
if dist.rank() == 1:
    deadline = time.monotonic() + 3
    while not marker.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
work = torch.distributed.all_reduce(torch.ones(1 << 18), async_op=True)
del work  # the tensor's Python object goes; the gloo worker keeps the last reference
if mode == "legacy":
    dist.shutdown(clean=False)
    sys.exit(0)
dist.finish()

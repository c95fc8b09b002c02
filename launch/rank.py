"""Per-rank entry point for `torchrun --nproc_per_node=N launch/rank.py <w2s args>` and
`deepspeed --num_gpus N launch/rank.py <w2s args>` (and, per node, for launch/slurm_node.py).

Both launchers set RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR / MASTER_PORT; the deepspeed
launcher also appends --local_rank=N, which the environment already carries, so it is dropped.
"""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # a source checkout works too

from w2s_scale.cli import main  # noqa: E402

if __name__ == "__main__":
    argv = [a for a in sys.argv[1:] if not a.startswith("--local_rank")]
    sys.exit(main(argv))

"""W&B's offline run files, read as the tracker reads them (w2s_scale.wandb_log)."""
from w2s_scale.wandb_log import wandb_records  # noqa: F401

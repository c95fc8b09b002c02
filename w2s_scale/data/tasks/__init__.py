"""The registry's entries, one module per task family; importing this package registers them all.
To add a dataset: one `hub_task(...)` entry plus its formatter in the module of its family."""
from w2s_scale.data.tasks import (binary, local, multiple_choice, pairwise, preference,  # noqa: F401
                                  testbed, topics)

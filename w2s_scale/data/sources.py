"""The dataset registry's public face: everything that reads datasets imports from here.

The registry itself is split by job: values.py (Example, DataError, value checks), readers.py (local
files and the hub), registry.py (the entry spec, the multiple-choice rule, `register`), loading.py
(splits as Examples), lookup.py (get_source, num_classes: the registry filled) and
tasks/<family>.py (one entry plus one formatter per dataset).
"""
from w2s_scale.data.loading import SplitRows, format_rng, load_split, open_split
from w2s_scale.data.lookup import get_source, num_classes, registry_table
from w2s_scale.data.readers import RawRows
from w2s_scale.data.registry import DATASETS, Choice, DatasetSource, render
from w2s_scale.data.values import (DataError, Example, Formatted, Split, as_label, as_text,
                                   as_text_or_empty)

__all__ = ["DATASETS", "Choice", "DataError", "DatasetSource", "Example", "Formatted", "RawRows",
           "Split", "SplitRows", "as_label", "as_text", "as_text_or_empty", "format_rng",
           "get_source", "load_split", "num_classes", "open_split", "registry_table", "render"]

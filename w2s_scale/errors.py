"""What a user can get wrong, one error type per cause.

Every class here is a UserError: the `w2s` command prints its message as one `w2s: error:` line
and exits 2 (see cli.main). The message names the field, file or value and the fix. The legacy
family names (ConfigError, DSConfigError, ModelError) stay importable from the modules that
raise them; the causes below subclass them so old `except` clauses keep working.

This module imports nothing from the project, so every module can raise these without cycles.
"""
from __future__ import annotations

from typing import Any

ECHO_LIMIT = 80  # an echoed value is cut to this many characters (a 20,000-character --set too)


def shorten(value: Any, limit: int = ECHO_LIMIT) -> str:
    """repr(value), cut to `limit` characters with the full length said, for error messages."""
    text = repr(value).replace("\n", "\\n")
    if len(text) <= limit:
        return text
    if isinstance(value, (list, tuple, dict, set)):
        return f"{text[:limit - 1]}… ({len(value)} items)"
    # a long path differs from others at its end (the file or folder named): keep both ends
    head = limit // 3
    return (f"{text[:head]}…{text[-(limit - head - 1):]} "
            f"({len(value) if isinstance(value, str) else len(text)} characters)")


class UserError(ValueError):
    """A mistake in what the user gave (config, data, options): exit 2, one line, no traceback."""


# --- the families (their names predate this module) ---------------------------------------------

class ConfigError(UserError):
    """A configuration problem; one line naming the field and the fix."""


class DSConfigError(UserError):
    """A DeepSpeed config problem; one line naming the key and the fix."""


class ModelError(UserError):
    """A model cannot be loaded or configured; one line naming the field and the fix."""


# --- causes: reading the inputs ------------------------------------------------------------------

class ConfigFileError(ConfigError):
    """The config file is missing, a folder, binary, not YAML, or not a mapping of sections."""


class OverrideError(ConfigError):
    """A `--set KEY=VALUE` that cannot be applied (no key, bad YAML, a section replaced)."""


class DSTemplateError(DSConfigError):
    """train.ds_config is missing, a folder, not JSON, not an object, or lacks the batch keys."""


class DSKeyError(DSConfigError):
    """A key DeepSpeed does not know (it would ignore it silently) or a value it rejects."""


# --- causes: values that cannot work ------------------------------------------------------------

class RanksError(DSConfigError):
    """--nproc / launch.nproc: not a positive count, or it cannot share the global batch."""


class PrecisionError(ModelError):
    """A model dtype the device cannot train in (fp16 on CPU)."""


class TokenizerError(ModelError):
    """A tokenizer with nothing to pad with, or with ids beyond the model's vocabulary."""


class ModelBuildError(ModelError):
    """A model config (with its config_overrides) that cannot build a model."""


class LoraTargetError(ModelError):
    """LoRA target modules that the model does not have."""


class MaxLengthError(ConfigError):
    """data.max_length beyond the positions a model has."""


# --- causes: values that would give wrong results ----------------------------------------------

class ExperimentNameError(ConfigError):
    """`name` (or a run folder built from it) that is empty, absolute, escapes results_dir or is
    too long for the file system."""


class ResultsDirError(ConfigError):
    """results_dir is a file, or cannot be written."""


class SeedsError(ConfigError):
    """Duplicate or out-of-range seeds (a "2-seed" mean of one seed)."""


class LossesError(ConfigError):
    """An empty or duplicated loss list."""


class LossParamError(ConfigError):
    """A loss parameter outside its range (losses.LOSSES[name].ranges)."""


class ModelSettingsError(ConfigError):
    """Model settings that contradict each other (lora and linear_probe, an empty target list)."""


class SameTestFileError(ConfigError):
    """data.test_path is the training file (or a byte-identical copy of it)."""


class OneClassError(UserError):
    """A split with one class only: accuracy is meaningless and PGR comes out as 1.00."""


class ShortTestSetError(UserError):
    """The test set would end up far below data.n_test."""


class TooFewExamplesError(UserError):
    """After over-long texts are dropped, too few examples are left to train or to test."""


class ProbeLayerError(ConfigError):
    """labels.probe.layer is not a hidden state of the model the probe reads."""


class PaddingFreeError(ModelError):
    """train.padding_free with a model whose packed rows are not checked to keep attention
    within each text (w2s_scale/padding_free.py)."""


class MethodNotFoundError(ConfigError):
    """method.name names no built-in method, no importable "module:attr" and no entry point of
    the group w2s_scale.methods (w2s_scale/methods/registry.py)."""


class MethodOptionsError(ConfigError):
    """method.options that the method refuses (the check_options it may define)."""


class MethodResultError(UserError):
    """A method returned something other than a MethodResult of the contract's shapes."""

"""Every check that can fail on bad input, run before any rank starts.

Two stages. `check_settings` looks at a validated config alone (no files opened but the data
files' identity and results_dir's): it runs whenever a config is loaded, so `w2s summary`,
`status` and `report` refuse the same mistakes `w2s experiment` does. `preflight` (one experiment)
and `preflight_runs` (a sweep's runs) then open what the runs will use: the DeepSpeed config for
each world size, every model's config and tokenizer, the model's module names (on the meta
device: no weights are loaded) and every seed's data splits, tokenised as training will see them.

Each cause raises its own error type (w2s_scale/errors.py); the `w2s` command prints it as one
line and exits 2. Nothing here writes to disk.
"""
from __future__ import annotations

import filecmp
import math
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from w2s_scale import ds_config, padding_free
from w2s_scale.config import DataConfig, ExperimentConfig, ModelConfig, TrainConfig, label_models
from w2s_scale.data.batching import tokenize
from w2s_scale.data.images import is_image_data
from w2s_scale.data.quality import check_content
from w2s_scale.data.sources import get_source, num_classes
from w2s_scale.data.splits import make_splits
from w2s_scale.distributed import is_main
from w2s_scale.errors import (ConfigError, ExperimentNameError, LoraTargetError, LossesError,
                              LossParamError, MaxLengthError, ModelBuildError, ModelSettingsError,
                              OneClassError, PrecisionError, ProbeLayerError, ResultsDirError,
                              SameTestFileError, SeedsError, ShortTestSetError, TokenizerError,
                              TooFewExamplesError, shorten)
from w2s_scale.limits import (check_method_lists, check_method_sizes, check_same_model, check_sizes,
                              check_weights, count_parameters, identity)
from w2s_scale.losses import LOSSES
from w2s_scale.models import DTYPES, head_mode, load_hf_config, load_tokenizer, lora_targets
from w2s_scale.prompts import label_prompt
from w2s_scale.planning import RunPlan, plan_experiment
from w2s_scale.selection import held_out_sizes
from w2s_scale.sweep import sweep_dir
from w2s_scale.tracking import check_wandb
from w2s_scale.vision import preflight_images

NAME_PART_LIMIT = 100   # characters per component of `name` and per model label: run folders
#                         (w2s-<weak>-to-<strong>-<loss>) must stay under the 255 bytes of a file name
SEED_LIMIT = 2**32      # numpy and transformers.set_seed take seeds below this
SHORT_TEST_ERROR = 0.5  # a test set below this fraction of data.n_test is an error, else a warning


# --- stage 1: the settings alone ------------------------------------------------------------------

def check_settings(cfg: Any) -> None:
    """An ExperimentConfig or a SweepConfig: what would put runs in the wrong place, average one
    seed twice, train on a loss that cannot work, or test on the training data."""
    _check_name(cfg.name)
    _check_results_dir(Path(cfg.results_dir))
    _check_seeds(cfg.seeds)
    _check_losses(cfg.losses)
    check_method_lists(cfg)
    check_same_model(cfg)
    for i, data in enumerate(getattr(cfg, "datasets", None) or [cfg.data]):
        _check_test_file(data, "data" if hasattr(cfg, "data") else f"datasets.{i}")
    for where, model in _models(cfg):
        _check_model_settings(where, model)


def _models(cfg: Any) -> list[tuple[str, ModelConfig]]:
    if hasattr(cfg, "models"):
        return [(f"models.{i}", m) for i, m in enumerate(cfg.models)]
    return [("weak", cfg.weak), ("strong", cfg.strong)] + label_models(cfg)


def _check_name(name: str) -> None:
    fix = "use a short relative name such as `name: sst2-gpt2`"
    if not name.strip():
        raise ExperimentNameError(f"name: empty; {fix}")
    if "\0" in name:
        raise ExperimentNameError(f"name: {shorten(name)} contains a NUL character; {fix}")
    path = Path(name)
    if path.is_absolute() or name.startswith("~"):
        raise ExperimentNameError(f"name: {shorten(name)} is an absolute path, so runs would land "
                                  f"outside results_dir; {fix} (results_dir says where)")
    parts = name.replace("\\", "/").split("/")
    if any(p in ("..", ".") for p in parts):
        raise ExperimentNameError(f"name: {shorten(name)} has a '..' or '.' component, so runs would "
                                  f"land outside results_dir/<name>; {fix}")
    longest = max(parts, key=len)
    if len(longest.encode()) > NAME_PART_LIMIT:
        raise ExperimentNameError(f"name: {shorten(name)} has a component of {len(longest.encode())} "
                                  f"bytes (at most {NAME_PART_LIMIT}: run folders are named from it); {fix}")


def _check_results_dir(results: Path) -> None:
    if results.exists() and not results.is_dir():
        raise ResultsDirError(f"results_dir: {results} is a file, not a folder; point results_dir "
                              f"at a folder (it is created if missing)")
    for parent in [results, *results.parents]:  # the nearest existing ancestor must be writable
        if parent.exists():
            if not parent.is_dir():
                raise ResultsDirError(f"results_dir: {parent} is a file, so {results} cannot be "
                                      f"created; choose another results_dir")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ResultsDirError(f"results_dir: {parent} is not writable; choose a results_dir "
                                      f"you can write to")
            return


def _check_seeds(seeds: list[int]) -> None:
    repeated = sorted({s for s in seeds if seeds.count(s) > 1})
    if repeated:
        raise SeedsError(f"seeds: {repeated} given more than once, so a mean over seeds would count "
                         f"one run twice; list each seed once, e.g. seeds: {sorted(set(seeds))}")
    bad = [s for s in seeds if not 0 <= s < SEED_LIMIT]
    if bad:
        raise SeedsError(f"seeds: {shorten(bad[0])} is out of range; use seeds from 0 to {SEED_LIMIT - 1}")


def _check_losses(losses: list) -> None:
    if not losses:
        raise LossesError("losses: empty, so no transfer run would be trained and the summary would "
                          "have no PGR; list at least one, e.g. losses: [xent]")
    tags = [loss.tag for loss in losses]
    for i, tag in enumerate(tags):
        if tags.index(tag) != i:
            raise LossesError(f"losses.{i}: {tag} is listed twice (as losses.{tags.index(tag)} too); "
                              f"list each loss once or give them different params")
    for i, loss in enumerate(losses):
        ranges = LOSSES[loss.name].ranges
        for key, value in loss.params.items():
            allowed = ranges.get(key)  # words (warmup: reference) are checked by losses.check_params
            if allowed is not None and not isinstance(value, str) and not in_range(value, allowed):
                raise LossParamError(f"losses.{i}.params.{key}: {shorten(value)} is outside {allowed}, "
                                     f"where {loss.name} works; choose a value in {allowed} "
                                     f"(default {LOSSES[loss.name].defaults[key]})")


def in_range(value: float, allowed: str) -> bool:
    """Whether `value` lies in `allowed`: an interval "[0, 1)", "(0, inf)" or a set "{0, 1}"."""
    if not isinstance(value, (int, float)) or math.isnan(value):
        return False
    text = allowed.strip()
    if text.startswith("{"):
        return value in {float(v) for v in text[1:-1].split(",")}
    low, high = (float(v) for v in text[1:-1].split(","))
    above = value >= low if text[0] == "[" else value > low
    below = value <= high if text[-1] == "]" else value < high
    return above and below


def _check_model_settings(where: str, model: ModelConfig) -> None:
    if model.lora.enabled and model.linear_probe:
        raise ModelSettingsError(f"{where}: lora.enabled and linear_probe are both on, and the linear "
                                 f"probe would silently win; turn one off")
    if model.lora.target_modules is not None and not model.lora.target_modules:
        raise ModelSettingsError(f"{where}.lora.target_modules: an empty list; name the modules to "
                                 f"adapt, or remove the key for the architecture's default")
    label = model.short_name
    if len(label.encode()) > NAME_PART_LIMIT:
        raise ExperimentNameError(f"{where}.label: {shorten(label)} is {len(label.encode())} bytes "
                                  f"(at most {NAME_PART_LIMIT}: run folders are named from it); "
                                  f"give the model a short `label`")


def _check_test_file(data: DataConfig, where: str) -> None:
    if not data.path or not data.test_path:
        return
    train, test = Path(data.path), Path(data.test_path)
    if not (train.is_file() and test.is_file()):
        return  # missing files and folders are the data sources' to report
    if train.resolve() == test.resolve() or filecmp.cmp(train, test, shallow=False):
        same = "is" if train.resolve() == test.resolve() else "is a byte-identical copy of"
        raise SameTestFileError(f"{where}.test_path: {test} {same} the training file {where}.path, "
                                f"so every test score would be on training data; give a separate "
                                f"test file, or remove test_path to cut the test set from path")


# --- stage 2: what the runs will open --------------------------------------------------------------

@dataclass
class Trainee:
    """A model as the runs train it: where its section is, its resolved train settings, the world
    sizes it runs at, and the splits it trains on (a: ground truth, b: weak labels)."""
    where: str
    model: ModelConfig
    train: TrainConfig
    worlds: set[int]
    splits: set[str]


def preflight(cfg: ExperimentConfig, world_size: int) -> None:
    """Everything that can fail on bad input for `w2s experiment`, before any rank starts."""
    plans = plan_experiment(cfg)
    if is_image_data(cfg.data):  # images: no tokenizers, positions or texts to check
        if any(plan.train.padding_free for plan in plans):
            raise ConfigError("train.padding_free: images have no padding to leave out; remove "
                              "it (it packs texts of a batch)")
        preflight_images(cfg, plans, world_size)
    else:
        # each model under the name of its section: weak, strong, labels.0.members.1.model, ...
        sections = [("weak", cfg.weak), ("strong", cfg.strong)] + label_models(cfg)
        where = lambda model: next(w for w, m in sections if m == model)  # noqa: E731
        trainees = trainees_of([(plan, world_size) for plan in plans], where)
        n_params = check_trainees(trainees, {"data": cfg.data}, cfg.seeds, local=True)
        check_sizes(plans, n_params, cfg.allow_larger_weak, where)
        check_method_sizes(plans, cfg.data, "data", where)
        check_probe_layers(plans)
    check_wandb(cfg.tracking, Path(cfg.results_dir) / cfg.name / cfg.data.dataset / "seed*" / "*")


def preflight_runs(cfg, runs: list, world_size: Callable[[Any], int], local: bool = True) -> None:
    """The same for the runs of a sweep about to start (`local`: on this machine, whose device
    then must train each model's dtype; Slurm jobs run elsewhere)."""
    images = sorted({r.dataset for r in runs if is_image_data(r.experiment.data)})
    if images:  # a sweep shares A between models; an image experiment may share A with B
        raise ConfigError(f"datasets: {images[0]} is an image dataset; image experiments run with "
                          f"`w2s experiment -c CONFIG` (sweeps and `w2s run` take text datasets)")
    trainees = trainees_of([(run.plan, world_size(run)) for run in runs],
                           lambda model: f"models[{model.short_name}]")
    datasets = {f"datasets[{r.dataset}]": r.experiment.data for r in runs}
    n_params = check_trainees(trainees, datasets, cfg.seeds, local)
    where = lambda model: f"models[{model.short_name}]"  # noqa: E731
    check_sizes([r.plan for r in runs], n_params, cfg.allow_larger_weak, where)
    for key, data in datasets.items():
        check_method_sizes([r.plan for r in runs if f"datasets[{r.dataset}]" == key], data, key, where)
    check_probe_layers([r.plan for r in runs])
    check_wandb(cfg.tracking, sweep_dir(cfg) / "*" / "seed*" / "*")


def trainees_of(plans: list[tuple[RunPlan, int]], where: Callable[[ModelConfig], str]) -> list[Trainee]:
    """The models the runs train, each once, with the train settings their plans resolved and
    every world size and split they train at. Label and activation stages train nothing."""
    trainees: dict[str, Trainee] = {}
    for plan, world in plans:
        if plan.kind not in ("gt", "transfer"):
            continue
        name = where(plan.model)
        t = trainees.setdefault(name, Trainee(name, plan.model, plan.train, set(), set()))
        t.worlds.add(world)
        t.splits.add(plan.trains_on if plan.kind == "gt" else "b")  # a ceiling may train on B
        # transfer runs' train holds what gt runs drop (early_stopping, ...), and the reverse
        if plan.kind == "transfer":
            t.train = plan.train.model_copy(update={"gt_n_train": t.train.gt_n_train})
        else:
            t.train = t.train.model_copy(update={"gt_n_train": plan.train.gt_n_train})
    return list(trainees.values())


def check_probe_layers(plans: list[RunPlan]) -> None:
    """A probe's layer must be one of its model's hidden states (0: embeddings .. num_layers)."""
    for plan in (p for p in plans if p.kind == "activations"
                 and getattr(p.stage, "layer", p.stage) is not None):  # ccs.Contrast: its layer
        layer = getattr(plan.stage, "layer", plan.stage)
        n_layers = load_hf_config(plan.model).num_hidden_layers
        if layer > n_layers:
            raise ProbeLayerError(f"labels.probe.layer: {layer} is not a layer of "
                                  f"{plan.model.short_name}, whose hidden states are 0..{n_layers}; "
                                  f"choose one of them, or leave it unset for the middle one "
                                  f"({n_layers // 2})")


def check_trainees(trainees: list[Trainee], datasets: dict[str, DataConfig], seeds: list[int],
                   local: bool) -> dict[str, int]:
    """Opens what the runs will: returns each model's parameter count (limits.identity -> count)."""
    tokenizers, n_params = {}, {}
    for t in trainees:
        if t.model.linear_probe and t.model.save != "none":
            # a text probe's engine holds its head alone (text_features.py): no model to save
            raise ModelSettingsError(f"{t.where}.save: a linear probe trains a head on cached frozen "
                                     f"features and keeps no weights; set save: none")
        check_weights(t.where, t.model)  # before anything reads them: a cut-short file, named
        for world in sorted(t.worlds):
            ds_config.build(t.train, t.model.dtype, world)
        if local:
            _check_precision(t.where, t.model)
        hf_config = load_hf_config(t.model)
        tokenizer = load_tokenizer(t.model)
        _check_tokenizer(t.where, t.model, tokenizer, hf_config)
        for where, data in datasets.items():
            _check_positions(t.where, t.model, hf_config, where, data)
            head_mode(t.model, hf_config)  # label_tokens on an encoder: refused here
            if t.train.padding_free:  # architectures whose packed logits are checked
                padding_free.check_model(f"{t.where}.train.padding_free", hf_config.model_type)
            label_prompt(t.model, data, tokenizer)  # label words and chat template, checked
        names, count = _build_on_meta(t.where, t.model, hf_config)
        if count is not None:
            n_params[identity(t.model)] = count
        if t.model.lora.enabled:
            _check_lora_targets(t.where, t.model, hf_config, names)
        tokenizers[t.where] = tokenizer
    for where, data in datasets.items():
        _check_data(where, data, seeds, [(t, tokenizers[t.where]) for t in trainees])
        for t in (t for t in trainees if "a" in t.splits and t.train.gt_n_train):
            n_a = data.a_b_sizes()[0]
            if t.train.gt_n_train > n_a:
                raise ConfigError(f"{t.where}.train.gt_n_train: {t.train.gt_n_train} is more than A's "
                                  f"{n_a} documents ({where}: n_train {data.n_train}, n_a "
                                  f"{data.n_a if data.n_a is not None else 'half'}); lower it or "
                                  f"remove it to train on all of A")
        for t in (t for t in trainees if "b" in t.splits):  # students: slices held out of B
            held_out_sizes(data.a_b_sizes()[1], t.train, f"{t.where}.train")
    return n_params


def _encoding(model: ModelConfig) -> tuple:
    """What decides which documents fit: the tokenizer, and the prompt of a label-token head."""
    prompt = model.label_tokens.model_dump_json() if model.label_tokens is not None else None
    return (model.tokenizer or model.name, prompt)


def _check_precision(where: str, model: ModelConfig) -> None:
    from deepspeed.accelerator import get_accelerator  # deferred: the accelerator is probed here

    accel = get_accelerator()
    supported = [name for name, dtype in DTYPES.items() if dtype in accel.supported_dtypes()]
    if model.dtype not in supported:
        raise PrecisionError(f"{where}.dtype: DeepSpeed cannot train in {model.dtype} on this "
                             f"machine's {accel.device_name()} device; use dtype: "
                             f"{' or '.join(supported)} here")


def _check_tokenizer(where: str, model: ModelConfig, tokenizer, hf_config) -> None:
    name = shorten(model.tokenizer or model.name)
    if tokenizer.pad_token is None:  # load_tokenizer falls back to eos, then unk
        raise TokenizerError(f"{where}.tokenizer: {name} has no pad, eos or unk token to pad batches "
                             f"with; use a tokenizer that defines one (pad_token in its "
                             f"tokenizer_config.json)")
    vocab = getattr(hf_config, "vocab_size", None)
    if isinstance(vocab, int) and len(tokenizer) > vocab:
        raise TokenizerError(f"{where}.tokenizer: {name} has {len(tokenizer)} tokens but the model's "
                             f"embedding has {vocab}, so some token ids have no embedding; use the "
                             f"model's own tokenizer")


def max_positions(hf_config) -> Optional[int]:
    """Tokens a model can place, or None if its config does not say (relative positions)."""
    for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(hf_config, key, None)
        if isinstance(value, int) and value > 0:
            if hf_config.model_type in ("roberta", "xlm-roberta", "camembert", "mpnet", "longformer"):
                # positions start after the padding index (padding_idx + 1)
                value -= (getattr(hf_config, "pad_token_id", None) or 1) + 1
            return value
    return None


def _check_positions(where: str, model: ModelConfig, hf_config, data_where: str, data: DataConfig) -> None:
    limit = max_positions(hf_config)
    if limit is not None and data.max_length > limit:
        raise MaxLengthError(f"{data_where}.max_length: {data.max_length} tokens, but {where} "
                             f"({shorten(model.name)}) has {limit} positions; set max_length to "
                             f"{limit} or less")


def _build_on_meta(where: str, model: ModelConfig, hf_config) -> tuple[list[str], Optional[int]]:
    """Build the backbone on the meta device (no memory, no weights), as the ranks will build it
    for real: config_overrides that cannot make a model (heads not dividing the width...) fail
    here. Returns its module names and its parameter count."""
    import torch  # deferred with transformers: only the ranks' preflight builds models
    from transformers import AutoModel

    try:
        with torch.device("meta"):
            backbone = AutoModel.from_config(hf_config)
    except Exception as err:  # noqa: BLE001 - transformers raises many kinds here
        fix = (f"fix {where}.config_overrides" if model.config_overrides
               else f"check {where}.name")
        raise ModelBuildError(f"{where}: {hf_config.model_type} cannot be built with this config "
                              f"({type(err).__name__}: {shorten(str(err).splitlines()[0], 120)}); "
                              f"{fix}") from None
    return [name for name, _ in backbone.named_modules() if name], count_parameters(backbone)


def _check_lora_targets(where: str, model: ModelConfig, hf_config, names: list[str]) -> None:
    targets = lora_targets(model, hf_config)
    # peft matches a list entry against a module name or its dotted suffix
    missing = [t for t in targets if not any(n == t or n.endswith("." + t) for n in names)]
    if missing:
        leaves = sorted({n.split(".")[-1] for n in names if not n.split(".")[-1].isdigit()})
        raise LoraTargetError(f"{where}.lora.target_modules: {shorten(missing)} not in "
                              f"{hf_config.model_type} (its modules include {shorten(leaves, 120)}); "
                              f"fix the names or remove the key for the default")


def _warn(message: str) -> None:
    if not is_main():  # every rank runs preflight when a launcher started them: one copy
        return
    print(f"w2s: warning: {message}", file=sys.stderr, flush=True)


def _check_data(where: str, data: DataConfig, seeds: list[int], trainees: list) -> None:
    """Every seed's splits: both classes in each, a test set near n_test, enough examples left
    after over-long texts are dropped, for each tokenizer."""
    all_splits = {seed: make_splits(data, seed) for seed in seeds}
    for seed, splits in all_splits.items():
        for split in ("a", "b", "test"):
            examples = getattr(splits, split)
            labels = {e.label for e in examples}
            if len(labels) < 2:
                raise OneClassError(f"{where}: split {split} (seed {seed}) has only label-{labels.pop()} "
                                    f"examples ({len(examples)}), so accuracy means nothing and PGR "
                                    f"would read 1.00; check {where}.label_column or use data with "
                                    f"both labels")
        _check_test_size(where, data, seed, len(splits.test), splits.notes)
    # repeated rows, test rows found in training, classes no row has (data/quality.py)
    check_content(where, data.text_column, num_classes(data), all_splits, _warn)
    seen: dict[Any, Any] = {}
    for key, (trainee, tokenizer) in {_encoding(t.model): (t, tok) for t, tok in trainees}.items():
        union = {e.id: e for s in all_splits.values() for e in (*s.a, *s.b, *s.test)}
        kept = set(tokenize(list(union.values()), tokenizer, data.max_length, data.overlong,
                            label_prompt(trainee.model, data, tokenizer)).ids)
        seen[key] = kept
    for seed, splits in all_splits.items():
        for t, _tok in trainees:
            kept = seen[_encoding(t.model)]
            n_test = sum(e.id in kept for e in splits.test)
            if n_test < len(splits.test) and n_test < SHORT_TEST_ERROR * data.n_test:
                raise TooFewExamplesError(
                    f"{where}.max_length: only {n_test} of {len(splits.test)} test documents (seed "
                    f"{seed}) fit in {data.max_length} tokens of {t.where}'s tokenizer, below half "
                    f"of n_test = {data.n_test}; raise max_length or set {where}.overlong: truncate")
            for split in sorted(t.splits):
                n = sum(e.id in kept for e in getattr(splits, split))
                if n < t.train.batch_size:
                    raise TooFewExamplesError(
                        f"{t.where}.train.batch_size: {t.train.batch_size} is larger than the {n} "
                        f"training documents of split {split} (seed {seed}) left after dropping "
                        f"texts over {where}.max_length; lower batch_size or use more data")


def _check_test_size(where: str, data: DataConfig, seed: int, n_test: int, notes: Iterable[str]) -> None:
    """Below half of n_test is an error for the user's own data (a wrong or truncated test file,
    a pool shared out smaller than asked); a benchmark's fixed test split smaller than n_test is
    used whole, as the reference does (sciq: 1,000 for n_test 10,000), with a warning."""
    if n_test >= data.n_test:
        return
    why = "; ".join(n for n in notes if "test" in n) or "the data has fewer usable documents"
    source = get_source(data.dataset)
    fixed_split = source.hub_id is not None or source.fixed_parts  # (the testbed's test file)
    if n_test < SHORT_TEST_ERROR * data.n_test and not fixed_split:
        raise ShortTestSetError(f"{where}.n_test: the test set would have {n_test} documents, less "
                                f"than half of n_test = {data.n_test} (seed {seed}: {why}); lower "
                                f"n_test to {n_test} or give more test data")
    whole = f": all of {data.dataset}'s test split" if fixed_split else ""
    _warn(f"{where}.n_test: the test set has {n_test} of the {data.n_test} documents asked for "
          f"(seed {seed}{whole})")

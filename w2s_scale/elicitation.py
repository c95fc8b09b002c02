"""labels: {source: elicitation}: labels of B from the pretrained strong model alone (Wen et al. 2025,
"Unsupervised Elicitation of Language Models"), with neither the weak labels nor the ground truth.

Two modes (docs/methods.md#unsupervised-elicitation says what each is, where it differs from the
paper and what it costs):

- `zero_shot`: Wen et al.'s zero-shot baseline: the strong model's LM head scores each example of B
  with the label-token prompt alone (w2s_scale/prompts.py), no demonstrations;
- `icm_sampled` (ours): Wen et al.'s Internal Coherence Maximization (ICM) search, with each
  prompt holding `context` demonstrations of the other labelled examples instead of all of them:
  simulated annealing over the labels of `n_search` examples of B maximises
  U(D) = alpha * mean_i s_i, s_i = log-odds the model gives example i's label with its
  demonstrations in context (the authors' code's mean of signed log-odds; no logical-consistency
  term: plain classification has no related pairs); then every other example of B is labelled by
  the model in context, with demonstrations drawn from the labels found.

The stage runs on every rank, as the activation stages do: all ranks walk the same seeded search,
each forward pass goes through engine.predict (each prompt scored by one rank, the results
gathered), so all ranks hold the same labels; rank 0 writes them (labels.py).

Nothing here takes a label: `elicit` receives documents (ids and texts) only. The ground truth is
read by labels.py after the labels are made, for the stage's diagnostics alone.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np

from w2s_scale import distributed as dist
from w2s_scale import ds_config as dsc
from w2s_scale.config import (ConfigError, ElicitationConfig, LabelTokensConfig, LoraConfig,
                              ModelConfig, TrainConfig)
from w2s_scale.data.batching import TokenizedSet
from w2s_scale.data.lookup import num_classes
from w2s_scale.engine import Engine, predict
from w2s_scale.models import build_classifier, load_hf_config, load_tokenizer
from w2s_scale.prompts import label_prompt

SEPARATOR = "\n\n"      # between demonstrations, and between the last one and the query
SEARCH_SALT = 20250611  # the search's random stream: (seed, SEARCH_SALT)
REST_SALT = 20250612    # the demonstrations drawn for the rest of B: (seed, REST_SALT, i)

Context = tuple  # ((j, y_j), ...): the labelled examples shown before example i, in prompt order
Scorer = Callable[[list], np.ndarray]  # [(i, Context), ...] -> [n, K] label-word probabilities


# --- the search: simulated annealing over labels (ICM's Algorithm 1, no consistency fix) ---------

def temperature(accepted: int, t0: float, t_min: float) -> float:
    """The authors' code's `log` schedule, on the number of changes accepted so far:
    max(t_min, t0 / (1 + 2 log(1 + accepted)))."""
    return max(t_min, t0 / (1.0 + 2.0 * math.log(1.0 + accepted)))


def accept(delta: float, temp: float, u: float) -> bool:
    """Simulated annealing's rule: a change that raises U is taken; one that lowers it by
    |delta| is taken with probability exp(delta / temp) (u: a uniform draw in [0, 1))."""
    return delta >= 0 or u < math.exp(delta / temp)


def log_odds(probs: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """s_i = log p_i(y_i) - log(1 - p_i(y_i)): for two classes the signed log-odds
    log p(y_i) - log p(other) of the authors' code; for K classes the label against the rest."""
    p = np.clip(probs[np.arange(len(labels)), labels].astype(np.float64), 1e-12, 1 - 1e-12)
    return np.log(p) - np.log1p(-p)


@dataclass
class SearchResult:
    labels: np.ndarray                 # [n]: the class found for each search example, -1: none
    energy: float                      # U of the labels found
    iterations: int = 0
    proposals: int = 0                 # iterations whose proposed label differed from the current
    accepted: int = 0
    refused_for_balance: int = 0       # proposals refused by min_class_fraction
    history: list = field(default_factory=list)  # (iteration, U, labelled) after each accepted change


def context_ranks(n: int, rng: np.random.Generator) -> np.ndarray:
    """[n, n]: ranks[i, j] = where j stands in example i's own random order of the others (its
    demonstrations are the first `context` labelled examples of that order); ranks[i, i] = n."""
    ranks = np.argsort(np.argsort(rng.random((n, n)), axis=1), axis=1)
    np.fill_diagonal(ranks, n)  # after every other example: never its own demonstration
    return ranks


def contexts_of(ranks: np.ndarray, labels: np.ndarray, rows: Sequence[int], m: int) -> list[Context]:
    """Each row's demonstrations under `labels`: the first m labelled others in its order."""
    labelled = np.flatnonzero(labels >= 0)
    out = []
    if len(labelled) == 0:
        return [() for _ in rows]
    sub = ranks[np.ix_(np.asarray(rows), labelled)]
    order = np.argsort(sub, axis=1, kind="stable")
    for r, i in enumerate(rows):
        others = len(labelled) - int(labels[i] >= 0)
        picked = labelled[order[r, :min(m, others)]]
        out.append(tuple((int(j), int(labels[j])) for j in picked))
    return out


def mutual_predictability(probs: Callable[[list], np.ndarray], labels: np.ndarray,
                          ranks: np.ndarray, m: int) -> float:
    """ICM's P(D) as the authors' code computes it: the mean over the labelled examples of the
    log-odds of each one's label given its demonstrations (here: its first m labelled others)."""
    rows = [int(j) for j in np.flatnonzero(labels >= 0)]
    requests = list(zip(rows, contexts_of(ranks, labels, rows, m)))
    return float(np.mean(log_odds(probs(requests), labels[rows])))


def balanced(labels: np.ndarray, k: int, min_fraction: float) -> bool:
    """Every class holds at least min_fraction of the labelled examples."""
    if min_fraction <= 0:
        return True
    counts = np.bincount(labels[labels >= 0], minlength=k)
    return bool(counts.min() >= min_fraction * counts.sum())


def search(n: int, k: int, score: Scorer, settings: ElicitationConfig, seed: int) -> SearchResult:
    """ICM's search over the labels of n examples, each prompt holding `settings.context`
    demonstrations. `score([(i, context), ...])` gives the model's label-word probabilities [n, K]
    of example i after those demonstrations; each distinct (i, context) is asked for once."""
    s = settings
    rng = np.random.default_rng([seed, SEARCH_SALT])
    ranks = context_ranks(n, rng)
    labels = np.full(n, -1, dtype=np.int64)
    # ICM's start: K examples at random, their labels random and balanced (the authors' code
    # draws half of each class and shuffles them)
    start = rng.choice(n, size=s.initial, replace=False)
    labels[start] = rng.permutation(np.arange(s.initial) % k)
    cache: dict = {}

    def probs(requests: list) -> np.ndarray:
        todo = list(dict.fromkeys(r for r in requests if r not in cache))
        if todo:
            for r, p in zip(todo, score(todo)):
                cache[r] = np.asarray(p, dtype=np.float64)
        return np.stack([cache[r] for r in requests]) if requests else np.zeros((0, k))

    def energy(lab: np.ndarray) -> float:  # U(D) = alpha * P(D); no consistency term I(D)
        return s.alpha * mutual_predictability(probs, lab, ranks, s.context)

    current = energy(labels)
    result = SearchResult(labels, current)
    for it in range(1, s.iterations + 1):
        temp = temperature(result.accepted, s.t0, s.t_min)
        i = int(rng.integers(n))
        u = float(rng.random())  # drawn every iteration: the stream does not depend on outcomes
        ctx = contexts_of(ranks, labels, [i], s.context)[0]
        proposed = int(np.argmax(probs([(i, ctx)])[0]))
        if proposed == labels[i]:
            continue  # as the authors' code: nothing to evaluate
        result.proposals += 1
        candidate = labels.copy()
        candidate[i] = proposed
        if not balanced(candidate, k, s.min_class_fraction):
            result.refused_for_balance += 1
            continue
        new = energy(candidate)
        if accept(new - current, temp, u):
            labels, current = candidate, new
            result.accepted += 1
            result.history.append((it, round(current, 4), int((labels >= 0).sum())))
    result.labels, result.energy, result.iterations = labels, current, s.iterations
    return result


# --- prompts with demonstrations -------------------------------------------------------------------

def scoring_model(model: ModelConfig) -> ModelConfig:
    """The strong model as pretrained, read through its LM head (head: label_tokens, with its own
    prompt settings when it has them): no adapters, nothing trained or saved."""
    settings = model.label_tokens if model.head == "label_tokens" else LabelTokensConfig()
    return model.model_copy(update={"lora": LoraConfig(), "linear_probe": False,
                                    "gradient_checkpointing": False, "save": "none", "train": {},
                                    "label": None, "head": "label_tokens",
                                    "label_tokens": settings or LabelTokensConfig()})


def fitted_text(prompt, text: str, max_length: int, overlong: str) -> Optional[str]:
    """The document as it enters a prompt: whole when its zero-shot prompt fits max_length tokens,
    else cut as the label-token head cuts it (prompts.LabelPrompt.encode); None: left out."""
    if len(prompt._ids(text)) <= max_length:
        return text
    if overlong == "drop":
        return None
    tokenizer = prompt.tokenizer
    doc = tokenizer(text, add_special_tokens=False)["input_ids"]
    excess = len(prompt._ids(text)) - max_length
    for margin in (0, 2, 8, 32):
        keep = len(doc) - excess - margin
        if keep <= 0:
            break
        cut = tokenizer.decode(doc[:keep] if overlong == "truncate" else doc[-keep:])
        if len(prompt._ids(cut)) <= max_length:
            return cut
    return None


def prompt_ids(prompt, texts: Sequence[str], i: int, context: Context,
               leading_space: bool = False) -> list[int]:
    """Token ids of example i's prompt after its demonstrations: each demonstration is the
    label-token prompt of its document followed by its label word (after a space when
    `leading_space`, as the head encodes the words), joined by a blank line; with the chat
    template on, earlier user/assistant turns instead."""
    def word(y: int) -> str:
        return (" " if leading_space else "") + prompt.words[y]

    if prompt.chat:
        turns = []
        for j, y in context:
            turns += [{"role": "user", "content": prompt.template.replace("{text}", texts[j])},
                      {"role": "assistant", "content": prompt.words[y]}]
        turns.append({"role": "user", "content": prompt.template.replace("{text}", texts[i])})
        rendered = prompt.tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=True)
        return list(prompt.tokenizer(rendered, add_special_tokens=False)["input_ids"])
    shown = "".join(prompt.template.replace("{text}", texts[j]) + word(y) + SEPARATOR for j, y in context)
    return list(prompt.tokenizer(shown + prompt.template.replace("{text}", texts[i]),
                                 add_special_tokens=True)["input_ids"])


# --- the stage -----------------------------------------------------------------------------------

@dataclass
class Cost:
    """Forward passes (prompts scored) and their tokens, and seconds, per phase."""
    forwards: dict = field(default_factory=lambda: {"search": 0, "label": 0})
    tokens: dict = field(default_factory=lambda: {"search": 0, "label": 0})
    seconds: dict = field(default_factory=lambda: {"search": 0.0, "label": 0.0})


@dataclass
class Elicited:
    ids: list                 # the examples labelled, in B's order
    probs: np.ndarray         # [n, K] their labels
    found: dict               # example id -> class, the search's labels (icm_sampled)
    search: Optional[SearchResult]
    cost: Cost
    n_dropped: int = 0        # left out: over-long under data.overlong: drop


def elicit(documents: Sequence[tuple[str, str]], k: int, settings: ElicitationConfig, seed: int,
           forward: Callable[[list[list[int]]], np.ndarray], prompt, max_length: int,
           overlong: str, max_positions: Optional[int] = None,
           leading_space: bool = False) -> Elicited:
    """Labels of `documents` ((id, text) pairs: no labels) from the model behind `forward` (token
    id lists -> [n, K] label-word probabilities; engine.predict under the stage's engine)."""
    cost = Cost()
    kept = [(ex_id, fitted_text(prompt, text, max_length, overlong)) for ex_id, text in documents]
    n_dropped = sum(t is None for _, t in kept)
    kept = [(ex_id, t) for ex_id, t in kept if t is not None]
    ids, texts = [ex_id for ex_id, _ in kept], [t for _, t in kept]

    def scored(phase: str, requests: list) -> np.ndarray:
        token_lists = [prompt_ids(prompt, texts, i, c, leading_space) for i, c in requests]
        longest = max(len(t) for t in token_lists)
        if max_positions is not None and longest > max_positions:
            raise ConfigError(f"labels.elicitation.context: a prompt with {len(requests[0][1])} "
                              f"demonstration(s) takes {longest} tokens, over the strong model's "
                              f"{max_positions} positions; lower context or data.max_length")
        started = time.perf_counter()
        out = forward(token_lists)
        cost.seconds[phase] += time.perf_counter() - started
        cost.forwards[phase] += len(token_lists)
        cost.tokens[phase] += sum(len(t) for t in token_lists)
        return out

    if settings.mode == "zero_shot":
        probs = scored("label", [(i, ()) for i in range(len(ids))])
        return Elicited(ids, probs, {}, None, cost, n_dropped)

    rng = np.random.default_rng([seed, SEARCH_SALT, 1])
    n = min(settings.n_search, len(ids))
    if n < settings.initial:
        raise ConfigError(f"labels.elicitation.n_search: B has {len(ids)} example(s), fewer than "
                          f"initial = {settings.initial}; lower initial or use more data")
    chosen = np.sort(rng.choice(len(ids), size=n, replace=False))  # the search set, in B's order
    def score_search(requests: list) -> np.ndarray:  # search indices -> B's
        return scored("search", [(int(chosen[i]), tuple((int(chosen[j]), y) for j, y in c))
                                 for i, c in requests])

    found = search(n, k, score_search, settings, seed)
    labelled = {int(chosen[i]): int(y) for i, y in enumerate(found.labels) if y >= 0}
    # the rest of B (and search examples left unlabelled): in context, `context` demonstrations
    # drawn from the labels found, per example from its own seeded stream
    pool = np.array(sorted(labelled))
    rest = [i for i in range(len(ids)) if i not in labelled]
    requests = []
    for i in rest:
        draw = np.random.default_rng([seed, REST_SALT, i]).choice(
            len(pool), size=min(settings.context, len(pool)), replace=False)
        requests.append((i, tuple((int(pool[d]), labelled[int(pool[d])]) for d in draw)))
    probs = np.zeros((len(ids), k), dtype=np.float32)
    for i, y in labelled.items():
        probs[i, y] = 1.0  # the search's own labels, as ICM gives them: hard
    if requests:
        probs[rest] = scored("label", requests)
    return Elicited(ids, probs, {ids[i]: y for i, y in labelled.items()}, found, cost, n_dropped)


def forward_with(eng, k: int) -> Callable[[list[list[int]]], np.ndarray]:
    """Prompts (token id lists) -> label-word probabilities [n, K] through engine.predict."""

    def forward(token_lists: list[list[int]]) -> np.ndarray:
        data = TokenizedSet([str(n) for n in range(len(token_lists))], token_lists,
                            np.full(len(token_lists), -1, dtype=np.int64))
        return predict(eng, data)
    return forward


def scoring_engine(model: ModelConfig, train: TrainConfig, k: int, label_ids, tokenizer, batch_size: int):
    """The pretrained strong model under DeepSpeed, no optimizer (as activations._on_engine)."""
    import deepspeed


    ds = dsc.build(train, model.dtype, dist.world_size())
    ds.get("zero_optimization", {}).pop("offload_optimizer", None)  # nothing is trained here
    classifier = build_classifier(model, ds, k, label_ids)
    engine, *_ = deepspeed.initialize(model=classifier, config=ds, dist_init_required=False)
    return Engine(engine, tokenizer, ds, train.model_copy(update={"eval_batch_size": batch_size}),
                  total_steps=1, num_classes=k)


def max_positions(hf_config) -> Optional[int]:
    for name in ("max_position_embeddings", "n_positions"):
        value = getattr(hf_config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return None


def run_stage(cfg, plan, splits) -> tuple[Elicited, dict]:
    """The stage's labels of B and its metrics (every rank; labels.py writes them). Only ids and
    texts of B reach `elicit`."""

    settings: ElicitationConfig = plan.stage
    k = num_classes(cfg.data)
    if settings.min_class_fraction * k > 1:
        raise ConfigError(f"labels.elicitation.min_class_fraction: {settings.min_class_fraction:g} "
                          f"for each of {k} classes is over 1; give at most {1 / k:.3g}")
    model = scoring_model(plan.model)
    tokenizer = load_tokenizer(model)
    prompt = label_prompt(model, cfg.data, tokenizer)
    shown = 1 if settings.mode == "zero_shot" else settings.context + 1
    # prompts hold `shown` documents: fewer of them per batch, about as many tokens as predict's
    batch = max(1, plan.train.eval_batch_size // shown)
    eng = scoring_engine(model, plan.train, k, prompt.word_ids, tokenizer, batch)
    try:
        elicited = elicit([(e.id, e.text) for e in splits.b], k, settings, plan.seed,
                          forward_with(eng, k), prompt, cfg.data.max_length, cfg.data.overlong,
                          max_positions(load_hf_config(model)), model.label_tokens.leading_space)
    finally:
        eng.close()
    return elicited, cost_metrics(elicited, settings)


def cost_metrics(elicited: Elicited, settings: ElicitationConfig) -> dict:
    c = elicited.cost
    m = settings.context
    out = {"mode": settings.mode,
           "forward_passes": sum(c.forwards.values()), "tokens": sum(c.tokens.values()),
           "forward_passes_by_phase": dict(c.forwards), "tokens_by_phase": dict(c.tokens),
           "forward_seconds_by_phase": {p: round(s, 2) for p, s in c.seconds.items()}}
    if settings.mode == "icm_sampled":
        r = elicited.search
        out.update(
            # docs/methods.md's estimate: the initial labels, one look per iteration, about m
            # prompts whose demonstrations change per proposal evaluated (fewer: cache hits)
            forward_estimate_search=settings.initial + settings.iterations
            + (r.proposals - r.refused_for_balance) * m,
            n_search=len(r.labels), search_proposals=r.proposals,
            search_accepted=r.accepted, search_refused_for_balance=r.refused_for_balance,
            n_found=int((r.labels >= 0).sum()), energy=round(r.energy, 4),
            found_class_counts=np.bincount(r.labels[r.labels >= 0],
                                           minlength=elicited.probs.shape[1]).tolist(),
            mean_tokens_per_prompt=round(sum(c.tokens.values()) / max(1, sum(c.forwards.values())), 1))
    return out

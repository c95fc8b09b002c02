"""Contrast-consistent search (CCS; Burns, Ye, Klein, Steinhardt 2022, "Discovering Latent
Knowledge in Language Models Without Supervision"): a probe kind (`labels: {source: probe,
probe: {kind: ccs}}`) that relabels or filters the weak labels of B.

- Contrast pairs: each document of B twice, once followed by the answer of class 0 (x-) and once
  by the answer of class 1 (x+) (`contrast_spec`): a `head: label_tokens` strong model's own
  template, label words and chat setting; else the dataset's own label words after the
  label-token defaults ("{text}\\nLabel:" + word, the testbed's format); else a generic
  "{text}\\nAnswer:" + " no" / " yes". Binary tasks only.
- Hidden states: the pretrained strong model's, at `layer` (default the middle one), of the last
  real token (causal LMs: the answer's last token) or the first (encoders), extracted once for
  both sides by the activation stage (activations.extract, every rank under the engine); stored
  side by side, [N, 2 x hidden] (x- then x+).
- Normalisation (the paper's): each side separately, minus its mean over the examples, divided
  by its standard deviation per dimension (a constant dimension is left at 0).
- Probe: p(x) = sigmoid(w.x + b), fitted on the mean over examples of the CCS loss
  (p(x+) - (1 - p(x-)))^2 + min(p(x+), p(x-))^2 by full-batch AdamW (lr 1e-3, weight decay
  0.01, 1,000 steps: the reference code's defaults, collin-burns/discovering_latent_knowledge
  utils.py `CCS`) from `restarts` random initialisations (10 there too; uniform in +-1/sqrt(D),
  torch's nn.Linear default, drawn from a generator seeded by the run's seed), keeping the lowest
  final loss. Deterministic given the seed (on one machine: float32 on the CPU; fits up to
  N x D x restarts = 2^22 on one thread, larger ones on torch's threads).
- Prediction: p1 = (p(x+) + 1 - p(x-)) / 2.
- Orientation: CCS cannot tell "true" from "false" (-w, -b fits as well as w, b: the same loss
  wherever a pair is consistent, p(x-) = 1 - p(x+)). The sign is
  fixed by agreement with the **weak labels** of B, the only supervision a transfer run has: p1
  is replaced by 1 - p1 when p1 > 0.5 agrees with the weak labels' argmax on fewer than half of
  the examples (an exact half: when sum (p1 - 0.5)(weak p1 - 0.5) < 0). Never by ground truth.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np

from w2s_scale.config import LabelTokensConfig
from w2s_scale.data.batching import TokenizedSet, tokenize
from w2s_scale.data.images import IMAGE_DATASETS
from w2s_scale.data.lookup import get_source, num_classes
from w2s_scale.errors import ConfigError
from w2s_scale.prompts import LabelPrompt, label_words, uses_chat_template

GENERIC_TEMPLATE = "{text}\nAnswer:"
GENERIC_WORDS = ("no", "yes")      # class 0 (x-), class 1 (x+)
STEPS, LR, WEIGHT_DECAY = 1000, 1e-3, 0.01  # the reference code's CCS defaults
SMALL = 2 ** 22  # N x D x restarts up to which the fit runs on one CPU thread


# --- contrast pairs --------------------------------------------------------------------------------

@dataclass(frozen=True)
class Contrast:
    """An activation stage of contrast pairs: each document as `template` followed by
    words[0] (x-) and by words[1] (x+), a space between them when `space`."""
    layer: Optional[int]
    template: str
    words: tuple[str, str]
    space: bool
    chat: str = "off"  # the strong model's label_tokens.chat_template; "off" for other heads

    def answers(self) -> tuple[str, str]:
        return tuple((" " if self.space else "") + w for w in self.words)


def contrast_spec(model, data, layer: Optional[int] = None,
                  where: str = "labels.probe.kind") -> Contrast:
    """The contrast pairs of CCS on `model` (the strong model) for this dataset; a ConfigError
    naming `where` when the task has no two answers to contrast."""

    if data.dataset in IMAGE_DATASETS:
        raise ConfigError(f"{where}: ccs builds contrast pairs by writing each answer after a text, "
                          f"and dataset {data.dataset!r} is pictures; choose knn, logreg or topo")
    k = num_classes(data)
    if k != 2:
        raise ConfigError(f"{where}: ccs contrasts two answers, but dataset {data.dataset!r} has {k} "
                          f"classes (no yes/no suffix applies); choose knn, logreg or topo")
    if model.head == "label_tokens":
        settings = model.label_tokens or LabelTokensConfig()
        return Contrast(layer, settings.template, tuple(label_words(model, data)),
                        settings.leading_space, settings.chat_template)
    own = get_source(data.dataset).label_words
    if own is not None:
        default = LabelTokensConfig()
        return Contrast(layer, default.template, tuple(own), default.leading_space)
    return Contrast(layer, GENERIC_TEMPLATE, GENERIC_WORDS, True)


def contrast_tokens(spec: Contrast, model, examples, tokenizer, max_length: int, overlong: str):
    """(ids, a TokenizedSet of 2N rows: the N x- prompts, then the N x+ prompts). An over-long
    document is cut inside the template (the answer stays, prompts.LabelPrompt.encode); an example
    either side leaves out (overlong: drop) is left out of both."""

    chat = spec.chat != "off" and uses_chat_template(model, tokenizer)
    sides = [tokenize(examples, tokenizer, max_length, overlong,
                      prompt=AnswerPrompt(template=spec.template, words=spec.words, word_ids=(),
                                          chat=chat, tokenizer=tokenizer, answer=answer))
             for answer in spec.answers()]
    both = set(sides[0].ids) & set(sides[1].ids)
    sides = [s.subset(np.array([i for i, ex in enumerate(s.ids) if ex in both], dtype=np.int64))
             for s in sides]
    neg, pos = sides
    assert neg.ids == pos.ids
    return neg.ids, TokenizedSet(neg.ids + pos.ids, neg.input_ids + pos.input_ids,
                                 np.concatenate([neg.labels, pos.labels]), neg.n_dropped)


@dataclass(frozen=True)
class AnswerPrompt(LabelPrompt):
    """A label prompt with one answer written after its cue (in chat mode: the assistant's reply
    begins with it)."""
    answer: str = ""

    def render(self, text: str) -> str:
        return super().render(text) + self.answer


# --- the probe -------------------------------------------------------------------------------------

def normalise(x: np.ndarray) -> np.ndarray:
    """One side's hidden states minus their mean over the examples, divided by their standard
    deviation per dimension (dimensions without spread stay 0)."""
    centred = x - x.mean(axis=0, keepdims=True)
    std = centred.std(axis=0, keepdims=True)
    return centred / np.where(std > 0, std, 1.0)


@dataclass(frozen=True)
class CCSFit:
    w: np.ndarray
    b: float
    loss: float            # the kept restart's final CCS loss
    losses: tuple          # every restart's


def ccs_loss(p_neg, p_pos):
    """The CCS objective, consistency + confidence, averaged over the examples (dim 0; torch
    tensors [N] or [N, R]: one loss per column)."""
    import torch

    return ((p_pos - (1 - p_neg)) ** 2).mean(0) + (torch.minimum(p_pos, p_neg) ** 2).mean(0)


def fit(x_neg: np.ndarray, x_pos: np.ndarray, seed: int, restarts: int = 10,
        steps: int = STEPS, lr: float = LR, weight_decay: float = WEIGHT_DECAY) -> CCSFit:
    """The CCS probe on normalised contrast pairs [N, D] each (see the module docstring). The
    restarts train side by side as the columns of one [D, R] weight: each column's gradient is
    its own restart's (the summed loss has no cross terms) and AdamW acts elementwise, so this is
    `restarts` separate runs, done at once."""
    import torch

    neg = torch.as_tensor(x_neg, dtype=torch.float32)
    pos = torch.as_tensor(x_pos, dtype=torch.float32)
    n, d = neg.shape
    threads = torch.get_num_threads()
    if n * d * restarts <= SMALL:  # steps this small are all overhead: threads only slow them
        torch.set_num_threads(1)
    try:
        return _fit(neg, pos, seed, restarts, steps, lr, weight_decay)
    finally:
        torch.set_num_threads(threads)


def _fit(neg, pos, seed: int, restarts: int, steps: int, lr: float, weight_decay: float) -> CCSFit:
    import torch

    d = neg.shape[1]
    gen = torch.Generator().manual_seed(int(seed))
    bound = 1.0 / np.sqrt(d)
    # restart r: its weights, then its bias, drawn in turn
    init = [(torch.rand(d + 1, generator=gen) * 2 - 1) * bound for _ in range(restarts)]
    w = torch.stack([v[:d] for v in init], 1).requires_grad_()      # [D, R]
    b = torch.stack([v[d] for v in init]).requires_grad_()          # [R]
    optimizer = torch.optim.AdamW([w, b], lr=lr, weight_decay=weight_decay)

    def losses():
        return ccs_loss(torch.sigmoid(neg @ w + b), torch.sigmoid(pos @ w + b))  # [R]

    with torch.enable_grad():
        for _ in range(steps):
            optimizer.zero_grad()
            losses().sum().backward()
            optimizer.step()
    with torch.no_grad():
        final = losses().numpy().astype(np.float64)
    best = int(np.argmin(final))  # ties keep the earlier restart
    return CCSFit(w.detach()[:, best].numpy().astype(np.float64), float(b.detach()[best]),
                  float(final[best]), tuple(float(v) for v in final))


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))


def predict_p1(probe: CCSFit, x_neg: np.ndarray, x_pos: np.ndarray) -> np.ndarray:
    """p1 = (p(x+) + 1 - p(x-)) / 2 on normalised pairs, before orientation."""
    return 0.5 * (_sigmoid(x_pos @ probe.w + probe.b) + 1 - _sigmoid(x_neg @ probe.w + probe.b))


def orient(p1: np.ndarray, weak_p1: np.ndarray) -> tuple[np.ndarray, bool]:
    """(p1 or 1 - p1, whichever agrees with the weak labels; whether it was flipped)."""
    agreement = float(np.mean((p1 > 0.5) == (weak_p1 > 0.5)))
    flip = agreement < 0.5 or (agreement == 0.5 and float(np.sum((p1 - 0.5) * (weak_p1 - 0.5))) < 0)
    return (1 - p1 if flip else p1), flip


def relabel(pairs: np.ndarray, weak: np.ndarray, seed: int, restarts: int = 10,
            steps: int = STEPS) -> tuple[np.ndarray, dict]:
    """CCS labels [N, 2] from contrast-pair activations [N, 2D] (x- then x+, as the activation
    stage stores them) and the weak labels [N, 2] (used for the orientation only), and what to
    report of the fit."""
    if weak.shape[1] != 2:
        raise ConfigError(f"labels.probe.kind: ccs needs binary labels; these have {weak.shape[1]} "
                          f"classes")
    d = pairs.shape[1] // 2
    x_neg, x_pos = normalise(pairs[:, :d]), normalise(pairs[:, d:])
    probe = fit(x_neg, x_pos, seed, restarts, steps)
    p1, flipped = orient(predict_p1(probe, x_neg, x_pos), weak[:, 1])
    info = {"ccs_loss": probe.loss, "ccs_restart_losses": list(probe.losses),
            "ccs_flipped": flipped,
            "ccs_agreement_with_weak": float(np.mean((p1 > 0.5) == (weak[:, 1] > 0.5)))}
    return np.stack([1 - p1, p1], 1), info

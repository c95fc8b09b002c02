"""Tasks built from a pair: two scenarios compared (ethics-utilitarianism) and Anthropic's helpful /
harmless preference pairs, in both formulations:

- `anthropic_hh` is the reference's task exactly (openai/weak-to-strong): ONE transcript, the chosen
  or the rejected one by a seeded coin; label: it is the chosen one. "Chosen" is only defined
  relative to the other response of the same pair, so a single transcript carries almost no signal
  and every model sits at chance (reference issue #34). Kept so runs compare with the reference's
  published curve, which is at chance too.
- `anthropic_hh_pairwise` shows the shared dialogue once and both responses in a seeded random
  order; label: the first shown is the chosen one. The label is a property of the text, so models
  can learn it.
"""
from __future__ import annotations

from os.path import commonprefix
from typing import Optional

import numpy as np

from w2s_scale.data.registry import Choice, hub_task
from w2s_scale.data.values import Formatted, as_text, as_text_or_empty, fields, get


def format_ethics_utilitarianism(row: dict, rng: Optional[np.random.Generator],
                                 where: str) -> Formatted:
    # `baseline` is the more pleasant of the two; the coin decides which is shown first
    better, worse = fields(row, ["baseline", "less_pleasant"], where)
    assert rng is not None
    label = int(rng.random() < 0.5)
    first, second = (better, worse) if label else (worse, better)
    return (f"Scenario 1: {first}\nScenario 2: {second}\n"
            f"Is scenario 1 more pleasant than scenario 2?", label)


hub_task("ethics-utilitarianism", "hendrycks/ethics", config="utilitarianism", family="pairwise",
         formulation="two scenarios in seeded random order; label: the first is the more pleasant",
         columns=("baseline", "less_pleasant"), format=format_ethics_utilitarianism,
         random_format=True)


def anthropic_hh_question(row: dict, where: str) -> Optional[Choice]:
    chosen = as_text_or_empty(get(row, "chosen", where))
    rejected = as_text_or_empty(get(row, "rejected", where))
    if not chosen.strip() or not rejected.strip():
        return None
    return Choice("", "", chosen, [rejected])


hub_task("anthropic_hh", "Anthropic/hh-rlhf", family="pairwise",
         formulation="ONE transcript, chosen or rejected by a seeded coin (the reference's); label: "
         "it is the chosen one (models sit at chance: see anthropic_hh_pairwise)",
         columns=("chosen", "rejected"), question=anthropic_hh_question)


_ASSISTANT = "\n\nAssistant:"


def format_anthropic_hh_pairwise(row: dict, rng: np.random.Generator, where: str) -> Formatted:
    # the shared dialogue (up to the last common "Assistant:") is shown once, then both responses
    chosen = as_text(get(row, "chosen", where), where, "chosen")
    rejected = as_text(get(row, "rejected", where), where, "rejected")
    if chosen == rejected:
        return None  # no preference to learn (hh-rlhf has a few such pairs)
    shared = commonprefix([chosen, rejected])
    cut = shared.rfind(_ASSISTANT)
    if cut >= 0:
        cut += len(_ASSISTANT)
        dialogue, resp_c, resp_r = chosen[:cut], chosen[cut:], rejected[cut:]
    else:  # no shared dialogue found: show the two texts whole
        dialogue, resp_c, resp_r = "", chosen, rejected
    label = int(rng.random() < 0.5)
    first, second = (resp_c, resp_r) if label else (resp_r, resp_c)
    text = (f"{dialogue.strip()}\n\n" if dialogue.strip() else "") + \
        f"Response A: {first.strip()}\n\nResponse B: {second.strip()}\n\nIs response A the better one?"
    return text, label


hub_task("anthropic_hh_pairwise", "Anthropic/hh-rlhf", family="pairwise",
         formulation="dialogue once + both responses in seeded random order; label: the first "
         "shown is the chosen one", columns=("chosen", "rejected"),
         format=format_anthropic_hh_pairwise, random_format=True)

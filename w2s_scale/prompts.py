"""head: label_tokens: how a document becomes a prompt whose next token is the label.

The automated weak-to-strong testbed (Anthropic, 2026) classifies with a causal LM's own LM head:
the document goes into a template that ends in a cue ("...\\nLabel:"), optionally as the user turn
of the tokenizer's chat template, and the class is the label word the LM would write next. Here:

- the prompt is `template` with `{text}` replaced by the document (plain replacement, so braces in
  documents are safe); in chat mode it is the user message, rendered with the tokenizer's chat
  template and its generation prompt (the assistant turn's opening; Qwen3's thinking switch is left
  at the template's default), and tokenised without adding special tokens again;
- each class's logit is the LM head's logit of the FIRST token of its label word, at the prompt's
  last token (models.Classifier reads the last real token, so this is the answer position). Words
  are encoded on their own (with a space before them when `leading_space`), as the testbed encodes
  its single-token words "A"/"B" and "False"/"True"; a word of several tokens is scored by its first
  one, so two words must not begin with the same token (refused in one line);
- an over-long document is cut (data.overlong: truncate keeps its start, truncate_left its end)
  inside the template, so the cue is never lost; under `drop` the example is left out, as before.

The head itself (models.py) is a K x hidden linear layer initialised with the LM head's rows of
those K tokens: its softmax is exactly the softmax over the label words' logits.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional

from w2s_scale.catalogue import lookup
from w2s_scale.config import DataConfig, LabelTokensConfig, ModelConfig
from w2s_scale.data.lookup import get_source, num_classes
from w2s_scale.errors import ConfigError, shorten

BINARY_WORDS = ("False", "True")  # the testbed's words for a yes/no label (class 0 = no)
# names that mark an instruction-tuned model when the catalogue does not know it
CHAT_NAME = re.compile(r"(instruct|chat|-it\b|-it-)", re.IGNORECASE)
TEXT = "{text}"


def label_words(model: ModelConfig, data: DataConfig) -> tuple[str, ...]:
    """The K label words: the config's, else the dataset's own, else False/True for two classes."""
    settings = model.label_tokens or LabelTokensConfig()
    k = num_classes(data)
    if settings.words is not None:
        words = tuple(settings.words)
    elif get_source(data.dataset).label_words is not None:
        words = get_source(data.dataset).label_words
    elif k == 2:
        words = BINARY_WORDS
    else:
        raise ConfigError(f"label_tokens.words: dataset {data.dataset!r} has {k} classes and no "
                          f"label words of its own; list {k} words, class 0 first")
    if len(words) != k:
        raise ConfigError(f"label_tokens.words: {len(words)} word(s) for {k} classes; give one "
                          f"word per class, class 0 first")
    if any(not w.strip() for w in words):
        raise ConfigError("label_tokens.words: a label word is empty; give visible words")
    return words


def is_chat_model(model: ModelConfig) -> bool:
    """A chat / instruction-tuned model: the catalogue says so, else its name does."""
    entry = lookup(model.name)
    if entry is not None and hasattr(entry, "chat"):
        return bool(entry.chat)
    return bool(CHAT_NAME.search(model.name.rstrip("/").split("/")[-1]))


def uses_chat_template(model: ModelConfig, tokenizer) -> bool:
    settings = model.label_tokens or LabelTokensConfig()
    has_template = bool(getattr(tokenizer, "chat_template", None))
    if settings.chat_template == "on" and not has_template:
        raise ConfigError(f"label_tokens.chat_template: on, but the tokenizer of "
                          f"{shorten(model.name)} has no chat template; set chat_template: off")
    if settings.chat_template == "auto":
        return has_template and is_chat_model(model)
    return settings.chat_template == "on"


@dataclass(frozen=True)
class LabelPrompt:
    """A model's prompt for one dataset: renders documents into token ids ending at the cue, and
    knows the token id of each class's label word."""
    template: str
    words: tuple[str, ...]
    word_ids: tuple[int, ...]   # first token of each label word, class 0 first
    chat: bool
    tokenizer: object

    def render(self, text: str) -> str:
        prompt = self.template.replace(TEXT, text)
        if not self.chat:
            return prompt
        return self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}],
                                                  tokenize=False, add_generation_prompt=True)

    def _ids(self, text: str) -> list[int]:
        # the rendered chat text already holds its special tokens (BOS where the template has one)
        return list(self.tokenizer(self.render(text), add_special_tokens=not self.chat)["input_ids"])

    def encode(self, text: str, max_length: int, overlong: str) -> Optional[list[int]]:
        """Token ids of the prompt, at most max_length long; None: left out (overlong: drop)."""
        ids = self._ids(text)
        if len(ids) <= max_length:
            return ids
        if overlong == "drop":
            return None
        doc = self.tokenizer(text, add_special_tokens=False)["input_ids"]
        # cut the document by the excess (a few tokens more when re-tokenising at the cut merges
        # differently), keeping the template's text and its cue whole
        for margin in (0, 2, 8, 32):
            keep = len(doc) - (len(ids) - max_length) - margin
            if keep <= 0:
                break
            part = doc[:keep] if overlong == "truncate" else doc[-keep:]
            cut = self._ids(self.tokenizer.decode(part))
            if len(cut) <= max_length:
                return cut
        return None  # the template alone does not fit: the example cannot be shown

    def template_tokens(self) -> int:
        """Tokens the prompt takes around an empty document."""
        return len(self._ids(""))


def word_token_ids(tokenizer, words: tuple[str, ...], leading_space: bool) -> tuple[int, ...]:
    ids = []
    for word in words:
        tokens = tokenizer((" " + word) if leading_space else word, add_special_tokens=False)["input_ids"]
        if not tokens:
            raise ConfigError(f"label_tokens.words: {word!r} encodes to no token; choose another word")
        ids.append(int(tokens[0]))
    for i, a in enumerate(ids):
        for j in range(i):
            if ids[j] == a:
                raise ConfigError(f"label_tokens.words: {words[j]!r} and {words[i]!r} begin with "
                                  f"the same token; choose words whose first tokens differ")
    return tuple(ids)


def label_prompt(model: ModelConfig, data: DataConfig, tokenizer) -> Optional[LabelPrompt]:
    """The prompt of a label-token model on this dataset; None for every other head."""
    if model.head != "label_tokens":
        return None
    settings = model.label_tokens or LabelTokensConfig()
    words = label_words(model, data)
    return LabelPrompt(template=settings.template, words=words,
                       word_ids=word_token_ids(tokenizer, words, settings.leading_space),
                       chat=uses_chat_template(model, tokenizer), tokenizer=tokenizer)

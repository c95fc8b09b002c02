"""Binary tasks whose label is the dataset's own: one text (sentiment, acceptability), a text pair
(entailment, paraphrase, word sense) or a passage + question + candidate answer (multirc, mc_taco).
Each entry: one `hub_task(...)` plus its formatter. The templates are ours (not EleutherAI's code);
amazon_polarity and boolq are the reference's (openai/weak-to-strong) exactly."""
from __future__ import annotations

from w2s_scale.data.groups import by_columns, by_position
from w2s_scale.data.registry import FormatFn, hub_task
from w2s_scale.data.values import (Formatted, as_index, as_label, as_text_or_empty, fields, get)


def _label(row: dict, where: str, column: str = "label") -> int:
    return as_label(get(row, column, where), where, column)


# --- one text


def format_amazon_polarity(row: dict, rng, where: str) -> Formatted:
    # the reference's f"{title} {content}", untouched; a row with neither is left out
    text = f"{as_text_or_empty(get(row, 'title', where))} {as_text_or_empty(get(row, 'content', where))}"
    return (text, _label(row, where)) if text.strip() else None


hub_task("amazon_polarity", "fancyzhx/amazon_polarity", family="binary",
         formulation="'{title} {content}' (the reference's); label: positive review",
         columns=("title", "content", "label"), format=format_amazon_polarity)


def format_single_sentence(row: dict, rng, where: str) -> Formatted:
    (sentence,) = fields(row, ["sentence"], where)
    return sentence, _label(row, where)


hub_task("cola", "nyu-mll/glue", config="cola", splits=("train", "validation"), family="binary",
         formulation="the sentence; label: grammatically acceptable",
         columns=("sentence", "label"), format=format_single_sentence)

hub_task("sst2", "stanfordnlp/sst2", splits=("train", "validation"), family="binary",
         formulation="the sentence; label: positive sentiment",
         columns=("sentence", "label"), format=format_single_sentence)


def format_twitter_sentiment(row: dict, rng, where: str) -> Formatted:
    (text,) = fields(row, ["text"], where)
    return text, _label(row, where)


hub_task("twitter-sentiment", "EleutherAI/twitter-sentiment", family="binary",
         formulation="the tweet; label: positive sentiment",
         columns=("text", "label"), format=format_twitter_sentiment)


# --- ETHICS (Hendrycks et al.): the dataset's label


def format_ethics_deontology(row: dict, rng, where: str) -> Formatted:
    scenario, excuse = fields(row, ["scenario", "excuse"], where)
    return f"Scenario: {scenario}\nExcuse: {excuse}\nIs the excuse reasonable?", _label(row, where)


hub_task("ethics-deontology", "hendrycks/ethics", config="deontology", family="binary",
         formulation="scenario + excuse; label: the excuse is reasonable (the dataset's label)",
         columns=("scenario", "excuse", "label"), format=format_ethics_deontology,
         sizes=(18_164, None),
         group_by=by_position(4))


def format_ethics_justice(row: dict, rng, where: str) -> Formatted:
    (scenario,) = fields(row, ["scenario"], where)
    return f"Statement: {scenario}\nIs this reasonable and just?", _label(row, where)


hub_task("ethics-justice", "hendrycks/ethics", config="justice", family="binary",
         formulation="scenario; label: reasonable and just (the dataset's label)",
         columns=("scenario", "label"), format=format_ethics_justice, sizes=(21_791, None),
         group_by=by_position(4))


def format_ethics_virtue(row: dict, rng, where: str) -> Formatted:
    # the scenario column holds "<behaviour> [SEP] <trait>"
    (scenario,) = fields(row, ["scenario"], where)
    behaviour, sep, trait = scenario.partition(" [SEP] ")
    text = (f"Behaviour: {behaviour}\nTrait: {trait}\nDoes the behaviour show the trait?" if sep
            else f"{scenario}\nDoes the behaviour show the trait?")
    return text, _label(row, where)


hub_task("ethics-virtue", "hendrycks/ethics", config="virtue", family="binary",
         formulation="behaviour + trait; label: the behaviour shows the trait (the dataset's label)",
         columns=("scenario", "label"), format=format_ethics_virtue,
         group_by=by_position(5))


# --- two texts


def format_anli(row: dict, rng, where: str) -> Formatted:
    premise, hypothesis = fields(row, ["premise", "hypothesis"], where)
    k = as_index(get(row, "label", where), 3, where, "label",
                 "anli's label is 0 entailment, 1 neutral, 2 contradiction")
    return (f"Premise: {premise}\nHypothesis: {hypothesis}\n"
            f"Does the premise entail the hypothesis?", int(k == 0))


hub_task("anli-r2", "facebook/anli", splits=("train_r2", "test_r2"), family="binary",
         formulation="premise + hypothesis, 'Does the premise entail the hypothesis?'; label: "
         "entailment (neutral and contradiction are 0)",
         columns=("premise", "hypothesis", "label"), format=format_anli,
         group_by=by_columns("premise"))


def format_paws(row: dict, rng, where: str) -> Formatted:
    first, second = fields(row, ["sentence1", "sentence2"], where)
    return (f"Sentence 1: {first}\nSentence 2: {second}\nDo the two sentences mean the same?",
            _label(row, where))


hub_task("paws", "google-research-datasets/paws", config="labeled_final", family="binary",
         formulation="two sentences; label: paraphrases", columns=("sentence1", "sentence2", "label"),
         format=format_paws, sizes=(49_401, 8_000),
         group_by=by_columns("sentence1"))


def format_wic(row: dict, rng, where: str) -> Formatted:
    word, first, second = fields(row, ["word", "sentence1", "sentence2"], where)
    return (f"Sentence 1: {first}\nSentence 2: {second}\n"
            f"Does the word \"{word}\" have the same meaning in both sentences?", _label(row, where))


hub_task("wic", "aps/super_glue", config="wic", splits=("train", "validation"), script=True,
         family="binary", formulation="two sentences + a word; label: the word has the same meaning",
         columns=("word", "sentence1", "sentence2", "label"), format=format_wic)


# --- passage + question (+ candidate answer), the dataset's label


def format_boolq(row: dict, rng, where: str) -> Formatted:
    passage, question = fields(row, ["passage", "question"], where)
    return f"Passage: {passage}\nQuestion: {question}", _label(row, where, "answer")


hub_task("boolq", "google/boolq", splits=("train", "validation"), family="binary",
         formulation="'Passage: ...\\nQuestion: ...' (the reference's); label: the answer is yes",
         columns=("passage", "question", "answer"), format=format_boolq, sizes=(9_427, 3_270),
         group_by=by_columns("passage"))


def candidate_answer(context: str, lead: str, verdict: str) -> FormatFn:
    """'<lead><context>\nQuestion: ...\nCandidate answer: ...\nIs the candidate answer <verdict>?'"""
    def format_(row: dict, rng, where: str) -> Formatted:
        text, question, answer = fields(row, [context, "question", "answer"], where)
        return (f"{lead}{text}\nQuestion: {question}\nCandidate answer: {answer}\n"
                f"Is the candidate answer {verdict}?", _label(row, where))

    return format_


hub_task("multirc", "aps/super_glue", config="multirc", splits=("train", "validation"),
         script=True, family="binary", formulation="passage + question + candidate answer; label: "
         "the candidate is correct (the dataset's label)",
         columns=("paragraph", "question", "answer", "label"), format=candidate_answer("paragraph", "Passage: ", "correct"),
         group_by=by_columns("paragraph"))


# the hub's test split (9k rows) trains and its validation split tests, as EleutherAI does
hub_task("mc_taco", "CogComp/mc_taco", config="plain_text", splits=("test", "validation"),
         script=True, family="binary", formulation="sentence + temporal question + candidate "
         "answer; label: the candidate is plausible (the dataset's label)",
         columns=("sentence", "question", "answer", "label"), format=candidate_answer("sentence", "", "plausible"),
         group_by=by_columns("sentence"))

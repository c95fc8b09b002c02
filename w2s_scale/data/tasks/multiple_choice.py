"""Multiple-choice tasks made binary the reference's way (openai/weak-to-strong's sciq and cosmos_qa):
one example per question; a seeded coin shows the true answer (label 1) or one random wrong option
(label 0), always in the same template, so the label can only be read from the content. Each entry:
one `hub_task(...)` plus a `question(row, where) -> Choice` function (registry.choice_format does the
coin). sciq and cosmos_qa keep the reference's templates exactly; the others' templates are ours."""
from __future__ import annotations

from typing import Optional, Sequence

from w2s_scale.data.groups import by_columns
from w2s_scale.data.registry import Choice, hub_task
from w2s_scale.data.values import (DataError, as_index, as_text_or_empty, as_texts, fields, get,
                                   one_line)


def _all_but(options: Sequence[str], k: int) -> list[str]:
    return [o for i, o in enumerate(options) if i != k]


def _listed(head: str, title: str, options: Sequence[str], k: int, ask: str) -> Choice:
    """EleutherAI's formulation of a multiple-choice row: every option listed, then one of them
    (the true one or a wrong one, by the coin) asked about: `head`, the options under `title`,
    then `ask "<option>"?`. The list is the same whichever option is shown, so only the question
    tells the label."""
    listing = "\n".join(options)
    return Choice(f"{head}\n{title}:\n{listing}\n{ask} \"", "\"?", options[k], _all_but(options, k))


def _lettered(row: dict, where: str) -> tuple[list[str], int]:
    """`choices: {text: [...], label: ["A", ...]}` + `answerKey` (openbookqa, quartz): the option
    texts and the index of the true one."""
    choices = get(row, "choices", where)
    if not isinstance(choices, dict) or "text" not in choices or "label" not in choices:
        raise DataError(f"{where} has choices {one_line(repr(choices), 60)}; expected "
                        f"{{'text': [...], 'label': [...]}} as on the hub")
    texts = as_texts(choices["text"], where, "choices.text")
    letters = as_texts(choices["label"], where, "choices.label")
    key = get(row, "answerKey", where)
    if key not in letters:
        raise DataError(f"{where} has answerKey {key!r}, not one of choices.label {letters}")
    return texts, letters.index(key)


# --- the reference's


def sciq_question(row: dict, where: str) -> Optional[Choice]:
    (question,) = fields(row, ["question"], where)
    wrong = [as_text_or_empty(get(row, f"distractor{k}", where)) for k in (1, 2, 3)]
    return Choice(f"Q: {question} A: ", "", as_text_or_empty(get(row, "correct_answer", where)),
                  [d for d in wrong if d.strip()])


hub_task("sciq", "allenai/sciq", family="multiple-choice",
         formulation="'Q: {question} A: {answer}' (the reference's), the correct answer or one of "
         "3 distractors by a seeded coin; label: correct",
         columns=("question", "correct_answer", "distractor1", "distractor2", "distractor3"),
         question=sciq_question, sizes=(11_679, 1_000))


def sciq_with_support_question(row: dict, where: str) -> Optional[Choice]:
    plain = sciq_question(row, where)
    assert plain is not None
    support = as_text_or_empty(get(row, "support", where)).strip()
    passage = f"Passage: {support}\n" if support else ""  # some sciq rows have no support text
    return Choice(passage + plain.before, "", plain.true, plain.wrong)


hub_task("sciq_with_support", "allenai/sciq", family="multiple-choice",
         formulation="support passage + 'Q: {question} A: {answer}', correct answer or a distractor "
         "by a seeded coin; label: correct",
         columns=("support", "question", "correct_answer", "distractor1", "distractor2",
                  "distractor3"), question=sciq_with_support_question, sizes=(11_679, 1_000),
         group_by=by_columns("support"))

_NONE_OF_THE_ABOVE = "None of the above choices ."  # the reference's exact test


def cosmos_qa_question(row: dict, where: str) -> Optional[Choice]:
    context, question = fields(row, ["context", "question"], where)
    candidates = [as_text_or_empty(get(row, f"answer{k}", where)) for k in range(4)]
    k = as_index(get(row, "label", where), 4, where, "label", "cosmos_qa's label is the index 0-3 "
                 "of the true answer (the hub's test split is unlabelled: use validation)")
    true = candidates[k]
    # a true "None of the above" means every listed candidate is wrong: label 0 whatever is shown
    return Choice(f"Context: {context}\nQuestion: {question}\nAnswer: ", "", true,
                  [c for c in candidates if c != true], never_true=_NONE_OF_THE_ABOVE in true)


hub_task("cosmos_qa", "allenai/cosmos_qa", config="default", splits=("train", "validation"),
         script=True, family="multiple-choice",
         formulation="'Context: ...\\nQuestion: ...\\nAnswer: ...' (the reference's), true answer "
         "or another candidate by a seeded coin; a true 'None of the above' is always 0",
         columns=("context", "question", "answer0", "answer1", "answer2", "answer3", "label"),
         question=cosmos_qa_question, sizes=(25_262, 2_985),
         group_by=by_columns("context"))


# --- EleutherAI's suite, our templates


def dream_question(row: dict, where: str) -> Optional[Choice]:
    (question, answer) = fields(row, ["question", "answer"], where)
    dialogue = as_texts(get(row, "dialogue", where), where, "dialogue")
    options = as_texts(get(row, "choice", where), where, "choice")
    if answer not in options:
        raise DataError(f"{where} has answer {one_line(repr(answer), 60)}, not one of its 'choice' "
                        f"options; give rows of the hub's schema")
    return Choice("\n".join(dialogue) + f"\nQuestion: {question}\nAnswer: ", "", answer,
                  _all_but(options, options.index(answer)))


hub_task("dream", "dataset-org/dream", config="plain_text", script=True, family="multiple-choice",
         formulation="dialogue + question + an answer, the true one or a wrong option by a seeded "
         "coin; label: true", columns=("dialogue", "question", "choice", "answer"),
         question=dream_question, sizes=(6_116, 2_041),
         group_by=by_columns("dialogue"))


def _hellaswag(row: dict, where: str) -> tuple[str, list[str], int]:
    """The context, the endings and the index of the true one."""
    (context,) = fields(row, ["ctx"], where)
    endings = as_texts(get(row, "endings", where), where, "endings")
    k = as_index(get(row, "label", where), len(endings), where, "label", "hellaswag's label is the "
                 "index of the true ending, as a string (the hub's test split is unlabelled: use "
                 "validation)")
    return context, endings, k


def hellaswag_question(row: dict, where: str) -> Optional[Choice]:
    context, endings, k = _hellaswag(row, where)
    return Choice(f"Context: {context}\nContinuation: ", "", endings[k], _all_but(endings, k))


def hellaswag_choices_question(row: dict, where: str) -> Optional[Choice]:
    context, endings, k = _hellaswag(row, where)
    return _listed(f"Context: {context}", "Endings", endings, k, "Is the best ending")


hub_task("hellaswag", "Rowan/hellaswag", config="default", splits=("train", "validation"),
         script=True, family="multiple-choice",
         formulation="context + an ending, the true one or a wrong one by a seeded coin; label: true",
         columns=("ctx", "endings", "label"), question=hellaswag_question, sizes=(39_905, 10_042),
         group_by=by_columns("ctx"))

hub_task("hellaswag_choices", "Rowan/hellaswag", config="default", splits=("train", "validation"),
         script=True, family="multiple-choice",
         formulation="context + every ending listed, then one asked about, the true one or a wrong "
         "one by a seeded coin (EleutherAI's formulation); label: true",
         columns=("ctx", "endings", "label"), question=hellaswag_choices_question,
         sizes=(39_905, 10_042), group_by=by_columns("ctx"))


def openbookqa_question(row: dict, where: str) -> Optional[Choice]:
    (stem,) = fields(row, ["question_stem"], where)
    texts, k = _lettered(row, where)
    # the answer is shown as text whether true or wrong (EleutherAI's shows a true one as a letter)
    return Choice(f"Question: {stem}\nAnswer: ", "", texts[k], _all_but(texts, k))


def openbookqa_choices_question(row: dict, where: str) -> Optional[Choice]:
    (stem,) = fields(row, ["question_stem"], where)
    texts, k = _lettered(row, where)
    letters = as_texts(get(row, "choices", where)["label"], where, "choices.label")
    # the choices listed with their letters; the one asked about as text, true or wrong alike
    # (EleutherAI asks about a true one by its letter, a wrong one by its text: the form would
    # tell the label)
    listed = [f"{letter}) {text}" for letter, text in zip(letters, texts)]
    choice = _listed(f"Question: {stem}", "Choices", listed, k, "Is the answer")
    return Choice(choice.before, choice.after, texts[k], _all_but(texts, k))


hub_task("openbookqa", "allenai/openbookqa", config="main", family="multiple-choice",
         formulation="question + an answer text, the true one or a wrong one by a seeded coin "
         "(same template); label: true", columns=("question_stem", "choices", "answerKey"),
         question=openbookqa_question, sizes=(4_957, 500))

hub_task("openbookqa_choices", "allenai/openbookqa", config="main", family="multiple-choice",
         formulation="question + every choice listed, then one answer text asked about, the true "
         "one or a wrong one by a seeded coin (EleutherAI's formulation, the answer always as "
         "text); label: true", columns=("question_stem", "choices", "answerKey"),
         question=openbookqa_choices_question, sizes=(4_957, 500))


def piqa_question(row: dict, where: str) -> Optional[Choice]:
    goal, first, second = fields(row, ["goal", "sol1", "sol2"], where)
    k = as_index(get(row, "label", where), 2, where, "label", "piqa's label is 0 (sol1) or 1 (sol2) "
                 "(the hub's test split is unlabelled: use validation)")
    solutions = [first, second]
    return Choice(f"Goal: {goal}\nSolution: ", "", solutions[k], [solutions[1 - k]])


hub_task("piqa", "ybisk/piqa", config="plain_text", splits=("train", "validation"), script=True,
         family="multiple-choice", formulation="goal + a solution, the right one or the other by a "
         "seeded coin; label: right", columns=("goal", "sol1", "sol2", "label"),
         question=piqa_question, sizes=(16_113, 1_838),
         group_by=by_columns("goal"))


def quail_question(row: dict, where: str) -> Optional[Choice]:
    context, question = fields(row, ["context", "question"], where)
    answers = as_texts(get(row, "answers", where), where, "answers")
    k = as_index(get(row, "correct_answer_id", where), len(answers), where, "correct_answer_id",
                 "it must index the row's answers")
    return Choice(f"Passage: {context}\nQuestion: {question}\nAnswer: ", "", answers[k],
                  _all_but(answers, k))


hub_task("quail", "textmachinelab/quail", splits=("train", "validation"), family="multiple-choice",
         formulation="passage + question + an answer, the true one or a wrong one by a seeded coin; "
         "label: true", columns=("context", "question", "answers", "correct_answer_id"),
         question=quail_question, sizes=(10_246, 2_164),
         group_by=by_columns("context"))


def quartz_question(row: dict, where: str) -> Optional[Choice]:
    para, question = fields(row, ["para", "question"], where)
    texts, k = _lettered(row, where)
    return Choice(f"Passage: {para}\nQuestion: {question}\nAnswer: ", "", texts[k],
                  _all_but(texts, k))


hub_task("quartz", "allenai/quartz", family="multiple-choice",
         formulation="passage + question + an answer, the true one or the other by a seeded coin; "
         "label: true", columns=("para", "question", "choices", "answerKey"),
         question=quartz_question, sizes=(2_696, 784),
         group_by=by_columns("para"))


def _social_i_qa(row: dict, where: str) -> tuple[str, str, list[str], int]:
    """The context, the question, the three answers and the index of the true one."""
    context, question = fields(row, ["context", "question"], where)
    answers = [as_text_or_empty(get(row, f"answer{c}", where)) for c in "ABC"]
    # the label is "1".."3" as a string (older copies carry a trailing newline)
    label = get(row, "label", where)
    k = as_index(label, 4, where, "label", "social_i_qa's label is '1', '2' or '3'") - 1
    if k < 0:
        raise DataError(f"{where} has label {label!r} in column 'label'; social_i_qa's label is "
                        f"'1', '2' or '3'")
    return context, question, answers, k


def social_i_qa_question(row: dict, where: str) -> Optional[Choice]:
    context, question, answers, k = _social_i_qa(row, where)
    return Choice(f"Context: {context}\nQuestion: {question}\nAnswer: ", "", answers[k],
                  _all_but(answers, k))


def social_i_qa_choices_question(row: dict, where: str) -> Optional[Choice]:
    context, question, answers, k = _social_i_qa(row, where)
    return _listed(f"Context: {context}\nQuestion: {question}", "Choices", answers, k,
                   "Is the answer")


hub_task("social_i_qa", "allenai/social_i_qa", config="default", splits=("train", "validation"),
         script=True, family="multiple-choice",
         formulation="context + question + an answer, the true one or a wrong one by a seeded "
         "coin; label: true", columns=("context", "question", "answerA", "answerB", "answerC",
                                        "label"), question=social_i_qa_question,
         group_by=by_columns("context"))

hub_task("social_i_qa_choices", "allenai/social_i_qa", config="default",
         splits=("train", "validation"), script=True, family="multiple-choice",
         formulation="context + question + every answer listed, then one asked about, the true "
         "one or a wrong one by a seeded coin (EleutherAI's formulation); label: true",
         columns=("context", "question", "answerA", "answerB", "answerC", "label"),
         question=social_i_qa_choices_question, group_by=by_columns("context"))

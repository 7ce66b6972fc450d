"""What the models are asked: the task of each kind of analysis, and the prompts around it for a
long document's parts (map), their notes (reduce) and the synthesis of several models' answers."""

from __future__ import annotations

import json
from typing import Any


def task_text(params: dict[str, Any]) -> str:
    kind = params["kind"]
    if kind == "summary":
        return "Summarise the document: its purpose, main points and conclusions, in a few short paragraphs."
    if kind == "qa":
        return (
            "Answer the question using only the document; say so plainly if the document does not answer it.\n"
            f"Question: {params['question']}"
        )
    if kind == "extract":
        fields = ", ".join(json.dumps(f, ensure_ascii=False) for f in params["fields"])
        return (
            "Extract these fields from the document and answer with one JSON object whose keys are the field "
            f"names (null where the document does not say): {fields}"
        )
    return f"Follow this instruction about the document: {params['instruction']}"


def part_prompt(task: str, index: int, parts: int) -> str:
    """For part ``index`` (from 0) of a document in ``parts`` parts: notes on what bears on the task."""
    return (
        f"This is part {index + 1} of {parts} of a long document. The task for the whole "
        f"document is below. Note everything in this part that bears on the task, "
        f"concisely.\nTask: {task}"
    )


def notes_prompt(task: str) -> str:
    return (
        "The context holds notes taken from consecutive parts of one document, in order. Using only them, "
        f"do the task for the whole document.\nTask: {task}"
    )


def synthesis_prompt(task: str) -> str:
    return (
        "Several models answered the same task about a document; their answers are in the context. Combine "
        "them into one answer: keep what they agree on, resolve or flag disagreements, and add nothing that "
        f"none of them says.\nTask: {task}"
    )


def notes_context(notes: list[str]) -> list[str]:
    """The context of a reduce step: the notes of consecutive parts, numbered."""
    return [f"[Part {i + 1}]\n{n}" for i, n in enumerate(notes)]


def answers_context(answers: list[tuple[str, str]]) -> list[str]:
    """The context of the synthesis: each (model, answer), named."""
    return [f"[Answer from {model}]\n{text}" for model, text in answers]

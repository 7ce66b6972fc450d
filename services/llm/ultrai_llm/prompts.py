"""What the orchestration patterns send the models: the question with its context, the refinement
round, the peer review and the synthesis instructions. The demo models read these same templates
back (``ultrai_llm.demo``)."""

from __future__ import annotations

import string
from typing import Any

Messages = list[dict[str, Any]]

CONTEXT_QUESTION = "Use the following context to answer.\n\n<context>\n{chunks}\n</context>\n\nQuestion: {prompt}"
REVIEW_INSTRUCTION = (
    "Other expert models answered the same question. Their answers, anonymised:\n\n{others}\n\n"
    "Critique these answers and your own: point out errors, omissions and disagreements. "
    "Then write your revised answer under the heading 'Revised answer:'."
)
REFINE_INSTRUCTION = (
    "{question}\n\nSeveral expert models, you perhaps among them, answered this question. Their answers, "
    "anonymised:\n\n{answers}\n\nUse them as material for a better answer of your own: keep what they get "
    "right, correct their errors and add what they miss. Answer the question directly, without mentioning the "
    "other answers."
)
SYNTHESIS_INSTRUCTION = (
    "{question}\n\nSeveral expert models answered this question. Their answers, anonymised:\n\n{answers}\n\n"
    "Write the single best answer: keep what they get right, resolve their disagreements and correct "
    "their errors. Answer the question directly, without mentioning the other answers."
)
# The ``ranked`` pattern (ultrai_llm.ranking): each reviewer ranks the others' answers, then the
# synthesis sees the aggregate of the rankings.
RANKING_INSTRUCTION = (
    "Question: {question}\n\nSeveral responses to this question, anonymised:\n\n{responses}\n\n"
    "Evaluate each response for accuracy, completeness and clarity, then rank them from best to worst. "
    'Answer with a JSON object {{"ranking": [{example}, ...]}} listing every response label once, best '
    "first; or end your answer with the line 'FINAL RANKING:' followed by a numbered list, one label per "
    "line (1. Response B)."
)
RANKED_SYNTHESIS_INSTRUCTION = (
    "{question}\n\nSeveral expert models answered this question. Their answers, anonymised:\n\n{answers}\n\n"
    "The models then ranked each other's answers; the aggregate ranking (best first):\n{aggregate}\n\n"
    "Write the single best answer: weigh the answers by that ranking, keep what they get right, resolve "
    "their disagreements and correct their errors. Answer the question directly, without mentioning "
    "the other answers or the ranking."
)

# ``compare`` (ultrai_llm.compare): the synthesis model, in a call of its own, compares the answers the
# synthesis sees, as JSON (asked through ``response_format`` too where the model takes a schema).
COMPARE_INSTRUCTION = (
    "{question}\n\nSeveral expert models answered this question. Their answers, anonymised:\n\n{answers}\n\n"
    "Do not answer the question: compare the answers. List the points they agree on (consensus), the points "
    "on which they contradict each other (contradictions), the insights only one of them offers "
    "(unique_insights) and what the question needs that none of them covers (gaps). Tie every point to the "
    'answers it concerns by their labels ("Answer 1"). Reply with a JSON object only, of this shape: '
    '{{"consensus": [{{"point": "...", "answers": ["Answer 1", "Answer 2"]}}], "contradictions": [...], '
    '"unique_insights": [...], "gaps": [...]}}'
)
# The one repair call when the comparison's reply was not valid JSON of the schema.
COMPARE_REPAIR_INSTRUCTION = (
    "Your reply below was meant to be a JSON object of the JSON schema that follows, but it is not valid:\n\n"
    "<reply>\n{reply}\n</reply>\n\nThe error: {error}\n\nThe JSON schema:\n{schema}\n\n"
    "Reply with the corrected JSON object only, nothing else."
)


def question_text(prompt: str, context: list[str] | None) -> str:
    if not context:
        return prompt
    chunks = "\n\n".join(f"[{i}] {chunk}" for i, chunk in enumerate(context, 1))
    return CONTEXT_QUESTION.format(chunks=chunks, prompt=prompt)


def with_system(system_prompt: str | None, messages: Messages) -> Messages:
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + messages


def labelled(answers: list[str], numbered: bool = False) -> str:
    labels = [str(i) for i in range(1, len(answers) + 1)] if numbered else list(string.ascii_uppercase)
    return "\n\n".join(f"Answer {labels[i % len(labels)]}:\n{text}" for i, text in enumerate(answers))


def labelled_responses(answers: list[str]) -> str:
    """The answers a ranking reviewer sees: "Response A", "Response B", ... in the order given."""
    return "\n\n".join(f"Response {string.ascii_uppercase[i]}:\n{text}" for i, text in enumerate(answers))

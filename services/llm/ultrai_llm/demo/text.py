"""How a demo model answers: from the text it is given, by lexical scoring, with no randomness (the
same messages always give the same answer).

The conversation is read the way this service and the documents service build it
(``ultrai_llm.prompts``): a question with its context chunks, the answers of other models to
synthesise or refine, or a peer review of them; anything else is a plain conversation whose earlier turns and
non-question sentences are the text. Then, by kind:

- ``extract``: the sentences most related to the question (shared words, rarer words weighing
  more); a JSON object of the asked fields when the task asks for one.
- ``brief``: the most central sentences (made of the words the text uses most), in text order.
- ``outline``: the key terms, then the most central sentence of each part of the text.

With other models' answers as the text, a statement several answers make weighs more, repeated
statements are given once, and a review starts with a short critique of how far the answers agree.
Asked to rank responses (the ranked pattern), every kind ranks them by how related their sentences
are to the question (how central, without a question), as a "FINAL RANKING:" list. Asked to
compare answers (``compare``), every kind answers the JSON asked for: a statement several answers
make (or else the key terms all of them use) as consensus, each answer's most central statement no
other makes as its unique insight, the question's words no answer uses as a gap, and no
contradiction (lexical scoring cannot tell one).
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ultrai_llm.prompts import (
    COMPARE_INSTRUCTION,
    CONTEXT_QUESTION,
    RANKED_SYNTHESIS_INSTRUCTION,
    RANKING_INSTRUCTION,
    REFINE_INSTRUCTION,
    REVIEW_INSTRUCTION,
    SYNTHESIS_INSTRUCTION,
)

KINDS = ("extract", "brief", "outline")
WHAT_IT_DOES = {
    "extract": "answers with the sentences of the text most related to the question",
    "brief": "answers with a short summary: the most central sentences of the text",
    "outline": "answers with the key terms of the text and the main sentence of each of its parts",
}
MAX_SENTENCE_CHARS = 600
RELATED_SENTENCES = 3

_WORD = re.compile(r"[^\W_]+", re.UNICODE)
_TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+(?=[^a-z\s])|(?<=[.!?…][\"'”’)\]])\s+(?=[^a-z\s])")
_BULLET = re.compile(r"^(?:[-*•]|\d{1,3}[.)])\s+")
_LABEL = re.compile(r"^\[(?:\d+|Part \d+|Answer from [^\]\n]*)\]\s*")
# The earlier turns of a chat, as context of a virtual ultrai/* model ("user: ...").
_ROLE = re.compile(r"^(?:user|assistant|tool): ")
_OWN_LINES = re.compile(r"^(?:Key terms|Critique):", re.IGNORECASE)
_HEADING = re.compile(r"^Revised answer:\s*", re.IGNORECASE)
_MARKER = re.compile(r"(?:^|\s)(?:Question|Task|Instruction):\s*")
_ANSWER_LABEL = re.compile(r"(?:^|\n\n)Answer [A-Z0-9]+:\n")
_RESPONSE_LABEL = re.compile(r"(?:^|\n\n)Response [A-Z]:\n")
_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"')

STOPWORDS = frozenset(
    """
    a about above after again against all also am an and any are as at be because been before being
    below between both but by can could did do does doing done down during each either else even ever
    every few for from further get gets got had has have having he her here hers herself him himself
    his how however i if in into is it its itself just let like made make many may me might more most
    much must my myself need no nor not now of off on once one only or other others our ours
    ourselves out over own per please same shall she should so some such than that the their theirs
    them themselves then there these they this those through to too under until up upon us very was
    we were what when where which while who whom whose why will with within without would yes yet you
    your yours yourself yourselves
    answer answers ask asked brief briefly concise concisely conclusion conclusions describe
    document documents explain extract field fields follow give instruction instructions key list main
    note notes paragraph paragraphs part parts point points purpose question questions say short
    sentence sentences summarise summarize summary tell task text use using write
    """.split()
)


def stem(word: str) -> str:
    """A light English stem, so that "capitals" meets "capital" and "founded" meets "founder"."""
    for suffix in ("ingly", "edly", "ings", "ing", "ies", "ied", "ers", "er", "ed", "es", "ly", "s"):
        if word.endswith(suffix) and len(word) - len(suffix) >= (4 if suffix.startswith("er") else 3):
            base = word[: -len(suffix)]
            return base + "y" if suffix in ("ies", "ied") else base
    return word


def terms(text: str) -> list[str]:
    """The content words of a text, lowercased and stemmed, in order (stopwords and single
    letters left out)."""
    found = []
    for raw in _WORD.findall(re.sub(r"([a-z])([A-Z])", r"\1 \2", text)):
        word = raw.lower()
        if len(word) > 1 and word not in STOPWORDS:
            found.append(stem(word))
    return found


def count_tokens(text: str) -> int:
    """Tokens as the demo models count them: words and punctuation marks."""
    return len(_TOKEN.findall(text))


def cut_to_tokens(text: str, limit: int) -> str:
    """The text up to its ``limit``-th token."""
    for i, match in enumerate(_TOKEN.finditer(text), 1):
        if i == limit:
            return text[: match.end()]
    return text


# ---- sentences --------------------------------------------------------------------------------
def _clean(sentence: str) -> str:
    sentence = _HEADING.sub("", _ROLE.sub("", _LABEL.sub("", _BULLET.sub("", sentence.strip())))).strip()
    if len(sentence) > MAX_SENTENCE_CHARS:
        sentence = sentence[:MAX_SENTENCE_CHARS].rsplit(" ", 1)[0] + " …"
    return sentence


def sentences(text: str) -> list[str]:
    """The sentences of a text. Lines wrapped inside a paragraph are joined; a list item, a heading
    or the line after one ending in a colon starts a new sentence. Labels this service puts on
    chunks and answers, and the demo models' own headings, are left out."""
    found: list[str] = []
    for block in re.split(r"\n\s*\n", text):
        units: list[list[str]] = []
        for line in (line.strip() for line in block.splitlines()):
            if not line or _OWN_LINES.match(line):
                continue
            fresh = not units or _BULLET.match(line) or line.startswith("#") or units[-1][-1].endswith(":")
            if fresh or _LABEL.match(line) or _HEADING.match(line):
                units.append([])
            units[-1].append(line.lstrip("#").strip())
        for unit in units:
            for part in _SENTENCE_END.split(" ".join(unit)):
                cleaned = _clean(part)
                if _WORD.search(cleaned):
                    found.append(cleaned)
    return found


@dataclass
class Sentence:
    text: str
    source: int  # which source text it comes from
    position: int  # its place among all sentences
    terms: frozenset[str]
    support: int = 1  # how many sources state it (answers of several models)

    @property
    def key(self) -> str:
        return " ".join(_WORD.findall(self.text.lower()))


def gather(sources: list[str], merge: bool) -> list[Sentence]:
    """Every sentence of the sources in order; with ``merge`` a sentence several sources state is
    kept once, at its first place, with the number of sources that state it."""
    found: list[Sentence] = []
    seen: dict[str, Sentence] = {}
    for index, source in enumerate(sources):
        stated: set[str] = set()
        for text in sentences(source):
            sentence = Sentence(text, index, len(found), frozenset(terms(text)))
            key = sentence.key
            if key in seen:
                if merge and key not in stated:
                    seen[key].support += 1
                stated.add(key)
                continue
            seen[key] = sentence
            stated.add(key)
            found.append(sentence)
    return found


# ---- reading the conversation -----------------------------------------------------------------
def _template(template: str) -> re.Pattern[str]:
    parts = re.split(r"\{(\w+)\}", template)
    # Literal parts as str.format writes them: a doubled brace is one brace.
    literal = [p.replace("{{", "{").replace("}}", "}") for p in parts]
    pattern = "".join(re.escape(literal[i]) if i % 2 == 0 else f"(?P<{p}>.*?)" for i, p in enumerate(parts))
    return re.compile(pattern, re.DOTALL)


_CONTEXT = _template(CONTEXT_QUESTION)
_REVIEW = _template(REVIEW_INSTRUCTION)
_SYNTHESIS = _template(SYNTHESIS_INSTRUCTION)
_RANKED_SYNTHESIS = _template(RANKED_SYNTHESIS_INSTRUCTION)
_RANKING = _template(RANKING_INSTRUCTION)
_REFINE = _template(REFINE_INSTRUCTION)
_COMPARE = _template(COMPARE_INSTRUCTION)


@dataclass
class Reading:
    """What a conversation asks, and the texts to answer from."""

    ask: str
    sources: list[str] = field(default_factory=list)
    answers: bool = False  # the sources are answers of models (a synthesis, a review, notes)
    review: bool = False  # a peer review: a critique, then the revised answer under its heading
    ranking: bool = False  # the sources are responses to rank (Response A, B, ...)
    compare: bool = False  # the sources are answers to compare (Answer 1, 2, ...), as JSON


def content_text(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    return ""


def focus(ask: str) -> str:
    """The question itself: what follows the last "Question:", "Task:" or "Instruction:" of a
    prompt that wraps it, up to the end of its paragraph."""
    markers = list(_MARKER.finditer(ask))
    if markers:
        ask = ask[markers[-1].end() :]
    return ask.strip().split("\n\n", 1)[0].strip()


def split_answers(text: str) -> list[str]:
    return [a.strip() for a in _ANSWER_LABEL.split(text) if a.strip()]


def read_question(text: str) -> Reading:
    match = _CONTEXT.fullmatch(text)
    if match is None:
        return Reading(focus(text))
    chunks = [re.sub(r"^\[\d+\] ", "", c) for c in re.split(r"\n\n(?=\[\d+\] )", match["chunks"])]
    # The documents service labels the answers it synthesises and the notes it combines.
    answers = bool(chunks) and all(re.match(r"\[(?:Answer from [^\]\n]*|Part \d+)\]", c) for c in chunks)
    return Reading(focus(match["prompt"]), chunks, answers=answers)


def read(messages: list[dict[str, Any]]) -> Reading:
    turns = [(str(m.get("role")), content_text(m.get("content"))) for m in messages]
    users = [i for i, (role, _) in enumerate(turns) if role == "user"]
    if not users:
        return Reading("", [t for _, t in turns if t])
    last = users[-1]
    text = turns[last][1]
    if (match := _REVIEW.fullmatch(text)) is not None:
        mine = next((t for r, t in reversed(turns[:last]) if r == "assistant"), "")
        question = next((t for r, t in reversed(turns[:last]) if r == "user"), "")
        reading = read_question(question)
        return Reading(reading.ask, [mine, *split_answers(match["others"])], answers=True, review=True)
    if (match := _COMPARE.fullmatch(text)) is not None:
        return Reading(read_question(match["question"]).ask, split_answers(match["answers"]), compare=True)
    if (
        match := _SYNTHESIS.fullmatch(text) or _RANKED_SYNTHESIS.fullmatch(text) or _REFINE.fullmatch(text)
    ) is not None:
        return Reading(read_question(match["question"]).ask, split_answers(match["answers"]), answers=True)
    if (match := _RANKING.fullmatch(text)) is not None:
        responses = [r.strip() for r in _RESPONSE_LABEL.split(match["responses"]) if r.strip()]
        return Reading(read_question(match["question"]).ask, responses, ranking=True)
    reading = read_question(text)
    if reading.sources:
        return reading
    # A plain conversation: the earlier turns, and what the last message says besides its question.
    earlier = [t for r, t in turns[:last] if r in ("user", "assistant") and t.strip()]
    said = sentences(text)
    asked = [s for s in said if s.endswith("?")] or [s for s in said[:1] if s.endswith(":")]
    if asked:
        rest = [s for s in said if s not in asked]
        return Reading(" ".join(asked), [*earlier, *([" ".join(rest)] if rest else [])])
    # No question in it: an instruction about the earlier turns, or a text to work on itself.
    return Reading(text.strip(), [*earlier, *([text] if len(said) > 1 else [])])


# ---- the answers ------------------------------------------------------------------------------
def _weights(found: list[Sentence]) -> Counter[str]:
    return Counter(t for s in found for t in s.terms)


def centrality(found: list[Sentence]) -> dict[int, float]:
    """Sentence position -> how much of the text's most used vocabulary it carries; a source's
    first sentence and a statement several sources make count more."""
    weights = _weights(found)
    firsts = {s.source: s.position for s in reversed(found)}
    scores = {}
    for s in found:
        score = sum(weights[t] for t in s.terms) / math.sqrt(len(s.terms)) if s.terms else 0.0
        if firsts[s.source] == s.position:
            score *= 1.25
        scores[s.position] = score * s.support
    return scores


def relatedness(found: list[Sentence], asked: set[str]) -> dict[int, float]:
    """Sentence position -> the weight of the question's words it contains (a word few sentences
    contain weighs more); a statement several sources make counts more."""
    df = Counter(t for s in found for t in s.terms if t in asked)
    n = len(found)
    idf = {t: math.log((n + 1) / (df[t] + 1)) + 1 for t in asked}
    return {s.position: sum(idf[t] for t in s.terms & asked) * (1 + 0.5 * (s.support - 1)) for s in found}


def best(found: list[Sentence], scores: dict[int, float], k: int, floor: float | None = None) -> list[Sentence]:
    """The ``k`` best-scoring sentences (earlier first on ties), scoring above ``floor`` when one is
    given, in text order."""
    kept = [s for s in found if floor is None or scores[s.position] > floor]
    ranked = sorted(kept, key=lambda s: (-scores[s.position], s.position))
    return sorted(ranked[:k], key=lambda s: s.position)


def brief(found: list[Sentence]) -> str:
    k = 3 if len(found) <= 30 else 5
    return " ".join(s.text for s in best(found, centrality(found), k))


def extract(found: list[Sentence], ask: str) -> str:
    asked = set(terms(ask))
    if not asked:
        return brief(found)
    scores = relatedness(found, asked)
    top = max(scores.values(), default=0.0)
    if top <= 0:
        words = ", ".join(dict.fromkeys(w.lower() for w in _WORD.findall(ask) if stem(w.lower()) in asked))
        return f"The text says nothing about {words}."
    return " ".join(s.text for s in best(found, scores, RELATED_SENTENCES, floor=top / 2 - 1e-9))


def key_terms(found: list[Sentence], k: int = 5) -> list[str]:
    """The text's most used content words (as written most often), ties in order of appearance."""
    weights = _weights(found)
    spelled: dict[str, Counter[str]] = {}
    for s in found:
        for raw in _WORD.findall(s.text):
            word = raw.lower()
            if len(word) > 1 and word not in STOPWORDS:
                spelled.setdefault(stem(word), Counter())[word] += 1
    order = {t: i for i, t in enumerate(spelled)}
    ranked = sorted(weights, key=lambda t: (-weights[t], order.get(t, 0)))[:k]
    return [spelled[t].most_common(1)[0][0] if t in spelled else t for t in ranked]


def outline(found: list[Sentence], sources: int) -> str:
    scores = centrality(found)
    if 1 < sources <= 8:
        parts = [[s for s in found if s.source == i] for i in range(sources)]
    else:
        size = max(1, math.ceil(len(found) / 6))
        parts = [found[i : i + size] for i in range(0, len(found), size)]
    lines = []
    for part in parts:
        if part:
            top = best(part, scores, 1)
            if top and top[0].text not in lines:
                lines.append(top[0].text)
    bullets = "\n".join(f"- {line}" for line in lines)
    words = key_terms(found)
    return f"Key terms: {', '.join(words)}.\n\n{bullets}" if words else bullets


def asked_fields(ask: str) -> list[str] | None:
    """The field names of a task that asks for a JSON object of fields (quoted, JSON style)."""
    if "JSON" not in ask:
        return None
    fields = []
    for quoted in _QUOTED.findall(ask):
        try:
            fields.append(str(json.loads(quoted)))
        except ValueError:
            continue
    return fields or None


def _json_object(text: str) -> dict[str, Any] | None:
    start, end = text.find("{"), text.rfind("}")
    if start < 0 or end < start:
        return None
    try:
        value = json.loads(text[start : end + 1])
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def extract_fields(found: list[Sentence], fields: list[str], reading: Reading) -> str:
    """A JSON object: each field's value from the answers being combined (the value most of them
    give), or else the sentence most related to the field's name; null when none is."""
    objects = [o for o in (_json_object(s) for s in reading.sources) if o is not None] if reading.answers else []
    values: dict[str, Any] = {}
    for name in fields:
        given = [json.dumps(o[name], sort_keys=True) for o in objects if o.get(name) is not None]
        if given:
            values[name] = json.loads(Counter(given).most_common(1)[0][0])
            continue
        asked = set(terms(name))
        scores = relatedness(found, asked) if asked else {}
        top = best(found, scores, 1, floor=0.0) if scores else []
        values[name] = top[0].text if top else None
    return json.dumps(values, ensure_ascii=False, indent=2)


def critique(found: list[Sentence], answers: int) -> str:
    shared = sum(1 for s in found if s.support > 1)
    alone = len(found) - shared
    return (
        f"Critique: of the {len(found)} statements in the {answers} answers, {shared} "
        f"{'appears' if shared == 1 else 'appear'} in more than one answer and {alone} in only one; the revised "
        "answer keeps the best supported and most relevant."
    )


def rank(reading: Reading) -> str:
    """The responses best first, as a "FINAL RANKING:" list: each scored by the mean over its
    sentences of their relatedness to the question (a question word few sentences contain weighs
    more; without a question, how much of the responses' most used vocabulary they carry), earlier
    responses first on ties."""
    per = [[frozenset(terms(text)) for text in sentences(source)] for source in reading.sources]
    every = [sentence for response in per for sentence in response]
    asked = set(terms(reading.ask))
    df = Counter(t for sentence in every for t in sentence & asked)
    idf = {t: math.log((len(every) + 1) / (df[t] + 1)) + 1 for t in asked}
    used = Counter(t for sentence in every for t in sentence)

    def score(sentence: frozenset[str]) -> float:
        if asked:
            return sum(idf[t] for t in sentence & asked)
        return sum(used[t] for t in sentence) / math.sqrt(len(sentence)) if sentence else 0.0

    means = [sum(map(score, response)) / len(response) if response else 0.0 for response in per]
    order = sorted(range(len(per)), key=lambda i: (-means[i], i))
    lines = "\n".join(f"{place}. Response {chr(ord('A') + i)}" for place, i in enumerate(order, 1))
    return f"Ranked by how closely each response addresses the question.\n\nFINAL RANKING:\n{lines}"


def compare(reading: Reading) -> str:
    """The comparison of the answers as ``COMPARE_INSTRUCTION`` asks for it (see the module's
    docstring), each point tied to the answers by their labels ("Answer 1")."""
    labels = [f"Answer {i}" for i in range(1, len(reading.sources) + 1)]
    found = gather(reading.sources, merge=False)
    stating: dict[str, list[int]] = {}
    for index, source in enumerate(reading.sources):
        for text in sentences(source):
            stated = stating.setdefault(Sentence(text, index, 0, frozenset()).key, [])
            if index not in stated:
                stated.append(index)
    consensus = [
        {"point": s.text, "answers": [labels[i] for i in stating[s.key]]} for s in found if len(stating[s.key]) > 1
    ]
    if not consensus:
        used = [set(terms(source)) for source in reading.sources]
        common = [w for w in key_terms(found, 10) if all(stem(w.lower()) in u for u in used)][:5]
        if common and len(used) > 1:
            consensus = [{"point": f"All answers speak of {', '.join(common)}.", "answers": labels}]
    scores = centrality(found)
    insights = []
    for index in range(len(reading.sources)):
        alone = [s for s in found if s.source == index and stating[s.key] == [index]]
        top = best(alone, scores, 1)
        if top:
            insights.append({"point": top[0].text, "answers": [labels[index]]})
    said = {t for source in reading.sources for t in terms(source)}
    missing = {t for t in terms(reading.ask) if t not in said}
    words = dict.fromkeys(w.lower() for w in _WORD.findall(reading.ask) if stem(w.lower()) in missing)
    gaps = [{"point": f"No answer speaks of {', '.join(words)}.", "answers": []}] if words else []
    comparison = {"consensus": consensus, "contradictions": [], "unique_insights": insights, "gaps": gaps}
    return json.dumps(comparison, ensure_ascii=False)


def answer(kind: str, name: str, messages: list[dict[str, Any]]) -> str:
    """The demo model ``name`` (of ``kind``)'s answer to the conversation."""
    reading = read(messages)
    if reading.ranking and reading.sources:
        return rank(reading)
    if reading.compare and reading.sources:
        return compare(reading)
    found = gather(reading.sources, merge=reading.answers)
    if not found:
        return (
            f"{name} is an offline demo model: it {WHAT_IT_DOES[kind]}. Send it a text with your question, or "
            "analyse a document with it. Set a provider key (OPENAI_API_KEY, for one) for a real model."
        )
    if kind == "extract":
        fields = asked_fields(reading.ask)
        text = extract_fields(found, fields, reading) if fields else extract(found, reading.ask)
    elif kind == "outline":
        text = outline(found, len(reading.sources))
    else:
        text = brief(found)
    if reading.review:
        return f"{critique(found, len(reading.sources))}\n\nRevised answer:\n{text}"
    return text

"""Token-aware chunks with overlap.

Tokens are estimated without a model tokenizer (the documents service does not carry one; the
model's own tokenizer lives in the llm service): a word costs about one token per four
characters, punctuation one each, and every non-ASCII letter one (CJK text runs about one token
per character). The estimate errs high for English, so chunks fit the context they were sized for.

Chunks break on paragraph boundaries, then sentences, then words; each chunk after the first
starts with the last ``overlap`` tokens' worth of whole pieces of the one before it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_TOKEN = re.compile(r"[A-Za-z0-9_]+|[^\sA-Za-z0-9_]")
_PARAGRAPHS = re.compile(r"\n\s*\n")
_SENTENCES = re.compile(r"(?<=[.!?。！？])\s+")
_WORDS = re.compile(r"\S+\s*")


def estimate_tokens(text: str) -> int:
    total = 0
    for match in _TOKEN.finditer(text):
        piece = match.group()
        total += (len(piece) + 3) // 4 if piece[0].isascii() else 1
    return total


@dataclass
class Chunk:
    index: int
    start: int
    end: int
    tokens: int


def _pieces(text: str, budget: int) -> list[tuple[int, int, int]]:
    """(start, end, tokens) spans covering the text: sentences, or word groups within ``budget``."""
    out: list[tuple[int, int, int]] = []
    pos = 0
    for match in _PARAGRAPHS.finditer(text):
        out.extend(_split_span(text, pos, match.end(), budget, level=1))
        pos = match.end()
    if pos < len(text):
        out.extend(_split_span(text, pos, len(text), budget, level=1))
    return out


def _split_span(text: str, start: int, end: int, budget: int, level: int) -> list[tuple[int, int, int]]:
    tokens = estimate_tokens(text[start:end])
    if tokens <= budget or level > 2:
        return [(start, end, tokens)] if end > start else []
    pattern = _SENTENCES if level == 1 else _WORDS
    out: list[tuple[int, int, int]] = []
    pos = start
    if level >= 2:
        # Words: group greedily up to the budget; a single overlong "word" is cut by characters.
        group_start = start
        group_tokens = 0
        for match in _WORDS.finditer(text, start, end):
            t = estimate_tokens(match.group())
            if t > budget:
                if match.start() > group_start:
                    out.append((group_start, match.start(), group_tokens))
                step = max(budget * 2, 1)
                for s in range(match.start(), match.end(), step):
                    e = min(s + step, match.end())
                    out.append((s, e, estimate_tokens(text[s:e])))
                group_start, group_tokens = match.end(), 0
                continue
            if group_tokens + t > budget and match.start() > group_start:
                out.append((group_start, match.start(), group_tokens))
                group_start, group_tokens = match.start(), 0
            group_tokens += t
        if end > group_start:
            out.append((group_start, end, estimate_tokens(text[group_start:end])))
        return out
    for match in pattern.finditer(text, start, end):
        out.extend(_split_span(text, pos, match.end(), budget, level + 1))
        pos = match.end()
    if pos < end:
        out.extend(_split_span(text, pos, end, budget, level + 1))
    return out


def chunk_text(text: str, size: int, overlap: int) -> list[Chunk]:
    if not text:
        return []
    if overlap >= size:
        raise ValueError("overlap must be smaller than the chunk size")
    # Pieces small enough that the overlap can carry some of them whole.
    piece_budget = size if overlap == 0 else max(min(overlap, size // 2), 8)
    pieces = _pieces(text, piece_budget)
    chunks: list[Chunk] = []
    current: list[tuple[int, int, int]] = []
    current_tokens = 0
    for piece in pieces:
        if current and current_tokens + piece[2] > size:
            chunks.append(Chunk(len(chunks), current[0][0], current[-1][1], current_tokens))
            # Carry whole pieces from the end, up to the overlap budget.
            carried: list[tuple[int, int, int]] = []
            carried_tokens = 0
            for prev in reversed(current):
                if carried_tokens + prev[2] > overlap or carried_tokens + prev[2] + piece[2] > size:
                    break
                carried.insert(0, prev)
                carried_tokens += prev[2]
            current, current_tokens = carried, carried_tokens
        current.append(piece)
        current_tokens += piece[2]
    if current:
        chunks.append(Chunk(len(chunks), current[0][0], current[-1][1], current_tokens))
    return chunks

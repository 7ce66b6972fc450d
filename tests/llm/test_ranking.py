"""The ranked pattern's parser, shuffle and Borda count, as units (the end-to-end runs over the fake
provider are in test_ranked.py)."""

from __future__ import annotations

import random

import pytest

from ultrai_llm.ranking import Ballot, Ranking, distinct, labels_for, parse_ranking, ranking_schema, shuffled_ballots

ABC = labels_for(3)  # Response A, B, C


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('{"ranking": ["Response B", "Response C", "Response A"]}', [["Response B"], ["Response C"], ["Response A"]]),
        ('{"ranking": ["B", "c", "response a"]}', [["Response B"], ["Response C"], ["Response A"]]),
        # Fenced, or inside prose.
        (
            'Here it is:\n```json\n{"ranking": ["Response C", "Response A", "Response B"]}\n```',
            [["Response C"], ["Response A"], ["Response B"]],
        ),
        ('I judge that {"ranking": ["Response A", "Response B", "Response C"]} holds.', [[label] for label in ABC]),
        # A tie in JSON: a list of labels.
        ('{"ranking": [["Response A", "Response B"], "Response C"]}', [["Response A", "Response B"], ["Response C"]]),
        # Left out: tied at the bottom.
        ('{"ranking": ["Response C"]}', [["Response C"], ["Response A", "Response B"]]),
        # FINAL RANKING lists, with reasoning before them; the last header counts.
        (
            "Response A is vague. Response B is right.\n\nFINAL RANKING:\n1. Response B\n2. Response A\n3. Response C",
            [["Response B"], ["Response A"], ["Response C"]],
        ),
        (
            "final ranking: draft\n1. Response A\n\n"
            "FINAL RANKING:\n1) Response C\n2) Response B - decent\n3) Response A",
            [["Response C"], ["Response B"], ["Response A"]],
        ),
        ("FINAL RANKING:\n1. Response A\n1. Response C\n3. Response B", [["Response A", "Response C"], ["Response B"]]),
        # A header without numbers: the labels in the order named.
        (
            "FINAL RANKING: Response C, then Response A, then Response B",
            [["Response C"], ["Response A"], ["Response B"]],
        ),
    ],
)
def test_rankings_are_read_in_every_accepted_format(text: str, expected: list[list[str]]) -> None:
    assert parse_ranking(text, ABC) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "I liked them all.",
        "Response B is the best, then Response A.",  # no JSON, no FINAL RANKING header
        '{"ranking": "Response B"}',
        '{"ranking": []}',
        '{"ranking": ["Response B", "Response B", "Response A"]}',  # repeated
        '{"ranking": ["Response D", "Response A"]}',  # not a label it was shown
        '{"ranking": ["the second one", "Response A"]}',
        '{"order": ["Response A"]}',
        "FINAL RANKING:\n1. Response A\n2. the other one",
        "FINAL RANKING:\nnothing to say",
        "{not json",
    ],
)
def test_garbage_is_rejected(text: str) -> None:
    assert parse_ranking(text, ABC) is None


def test_the_shuffle_is_undone_into_model_names() -> None:
    ballot = Ballot("me", ["beta", "gamma", "delta"])  # A = beta, B = gamma, C = delta
    ballot.read("FINAL RANKING:\n1. Response C\n2. Response A\n3. Response B")
    assert ballot.groups == [["delta"], ["beta"], ["gamma"]]
    assert ballot.public()["ranking"] == [
        {"model": "delta", "position": 1},
        {"model": "beta", "position": 2},
        {"model": "gamma", "position": 3},
    ]
    bad = Ballot("you", ["beta", "gamma"])
    bad.read("no idea")
    assert bad.groups is None and bad.public()["parsed"] is False and bad.error


def test_each_reviewer_gets_the_others_in_an_order_of_its_own() -> None:
    models = ["m1", "m2", "m3", "m4", "m5", "m6"]
    ballots = shuffled_ballots(models, random.Random(7))
    assert [b.reviewer for b in ballots] == models
    for ballot in ballots:
        assert sorted(ballot.order) == sorted(m for m in models if m != ballot.reviewer)
    # 5! orders each: the six are not all the canonical one.
    assert any(b.order != [m for m in models if m != b.reviewer] for b in ballots)


def ballot(reviewer: str, order: list[str], text: str) -> Ballot:
    b = Ballot(reviewer, order)
    b.read(text)
    return b


def test_borda_count_with_ties_omissions_and_abstentions() -> None:
    models = ["a", "b", "c", "d"]
    ranking = Ranking(
        [
            # a ranks b > c > d: 2, 1, 0 points.
            ballot("a", ["c", "b", "d"], '{"ranking": ["Response B", "Response A", "Response C"]}'),
            # b ties a and c first (2 and 1 shared: 1.5 each), d last: 0.
            ballot("b", ["a", "c", "d"], "FINAL RANKING:\n1. Response A\n1. Response B\n3. Response C"),
            # c names only d: d 2 points, a and b tied at the bottom share 1 and 0.
            ballot("c", ["a", "b", "d"], '{"ranking": ["Response C"]}'),
            # d's ranking is garbage: it abstains, and is reported.
            ballot("d", ["a", "b", "c"], "They are all fine."),
        ]
    )
    rows = {r["model"]: r for r in ranking.aggregate(models)}
    assert rows["a"]["points"] == 1.5 + 0.5 and rows["a"]["ballots"] == 2 and rows["a"]["score"] == 1.0
    assert rows["b"]["points"] == 2 + 0.5 and rows["b"]["ballots"] == 2 and rows["b"]["score"] == 1.25
    assert rows["c"]["points"] == 1 + 1.5 and rows["c"]["ballots"] == 2 and rows["c"]["score"] == 1.25
    assert (
        rows["d"]["points"] == 0 + 0 + 2 and rows["d"]["ballots"] == 3 and rows["d"]["score"] == pytest.approx(0.6667)
    )
    # b and c: equal score; b's mean position (1.0 from a, 2.5 from c) = 1.75, c's (2 from a, 1.5 from b) = 1.75:
    # a tie, sharing rank 1; then a (rank 3), then d.
    aggregate = ranking.aggregate(models)
    assert [(r["model"], r["rank"]) for r in aggregate] == [("b", 1), ("c", 1), ("a", 3), ("d", 4)]
    public = ranking.public(models)
    assert public["left_out"] == ["d"] and public["method"] == "borda"
    assert [r["parsed"] for r in public["reviewers"]] == [True, True, True, False]


def test_an_answer_no_readable_ballot_ranked_comes_last_without_a_rank() -> None:
    ranking = Ranking([ballot("a", ["b"], "garbage"), ballot("b", ["a"], '{"ranking": ["Response A"]}')])
    rows = ranking.aggregate(["a", "b"])
    assert rows[0]["model"] == "a" and rows[0]["rank"] == 1 and rows[0]["score"] == 0.0
    assert rows[1]["model"] == "b" and rows[1]["rank"] is None and rows[1]["score"] is None


def test_the_json_schema_names_the_labels() -> None:
    schema = ranking_schema(labels_for(2))
    assert schema["type"] == "json_schema"
    items = schema["json_schema"]["schema"]["properties"]["ranking"]["items"]
    assert items["enum"] == ["Response A", "Response B"]


def test_a_model_answering_more_than_once_is_told_apart() -> None:
    assert distinct(["a", "b", "a", "a"]) == ["a", "b", "a (2)", "a (3)"]

"""The offline demo models (demo/extract, demo/brief, demo/outline): when they are offered, that they
go through litellm like a real model (Router, streaming, usage, cache, cost), their deterministic
answers, the orchestration patterns and a document analysis on them alone."""

from __future__ import annotations

import json
import random

import httpx
import pytest

from shared.client import ServiceClient
from shared.kv import KeyValue
from tests.llm.conftest import keys_fetched, parse_sse, settings, unique
from tests.support.users import new_access_token
from tests.support.waiting import eventually
from ultrai_documents.llm import ModelCatalog
from ultrai_llm.cache import ResponseCache
from ultrai_llm.catalog import CatalogError, build_catalog
from ultrai_llm.engine import CallResult, Engine
from ultrai_llm.orchestrate import Orchestrator
from ultrai_llm.prompts import REFINE_INSTRUCTION, labelled, question_text
from ultrai_llm.schemas import ModelParams, OrchestrateRequest

DEMO = ["demo/extract", "demo/brief", "demo/outline"]
REPORT = (
    "Acme Corporation was founded in 1952 by Jane Doe in Springfield. "
    "The company makes rockets and anvils for cartoon coyotes.\n\n"
    "Its revenue in 2023 was 12 million dollars, mostly from anvils. The rockets division lost money. "
    "Jane Doe retired in 1990; her son John Doe now runs the company. "
    "Acme employs 240 people across three factories. The largest factory is in Springfield."
)


def demo_engine(**values) -> Engine:
    config = settings(llm_demo_models=True, **values)
    return Engine(config, build_catalog(config), ResponseCache(KeyValue(None, service="llm-test"), 60))


async def ask(engine: Engine, model: str, prompt: str, context: list[str] | None = None, **kw) -> CallResult:
    messages = [{"role": "user", "content": question_text(prompt, context)}]
    result = await engine.call(model, messages, kw.pop("params", ModelParams()), stage="answer", scope="u", **kw)
    assert result.ok, result.error
    return result


# ---- when they are offered --------------------------------------------------------------------
@pytest.mark.parametrize(
    "environment, setting, offered",
    [
        ("development", None, True),
        ("test", None, True),
        ("test", "", True),  # an empty value is unset: automatic
        ("staging", None, False),
        ("production", None, False),
        ("production", "true", True),
        ("development", "false", False),
    ],
)
def test_demo_models_by_environment_and_setting(environment, setting, offered):
    config = settings(environment=environment, llm_demo_models=setting)
    catalog = build_catalog(config)
    assert [n for n in catalog.names() if n.startswith("demo/")] == (DEMO if offered else [])
    assert catalog.demo_only is offered
    if offered:
        listed = catalog.specs["demo/extract"].public()
        assert listed["demo"] is True and listed["provider"] == "demo" and listed["status"] == "available"
        assert listed["context_window"] and listed["max_output_tokens"]
        assert catalog.specs["demo/brief"].cost(1000, 1000) == 0


def test_real_models_come_first_and_are_the_defaults(tmp_dir, fake_provider):
    path = fake_provider.models_file(tmp_dir / "models.json", ["alpha"])
    config = settings(llm_models_file=path, llm_demo_models=True)
    catalog = build_catalog(config)
    assert catalog.names() == ["alpha", *DEMO] and not catalog.demo_only
    assert catalog.specs["alpha"].public()["demo"] is False
    engine = Engine(config, catalog, ResponseCache(KeyValue(None, service="llm-test"), 60))
    # One real model: the orchestration's default is that model alone, not padded with demo ones.
    assert Orchestrator(engine, config, lambda *a: None).default_models() == ["alpha"]
    assert Orchestrator(demo_engine(), config, lambda *a: None).default_models() == DEMO


def test_a_models_file_cannot_take_a_demo_name(tmp_dir):
    path = tmp_dir / "models.json"
    path.write_text(json.dumps([{"model_name": "demo/extract", "litellm_params": {"model": "openai/x"}}]))
    with pytest.raises(CatalogError, match="demo/ are reserved"):
        build_catalog(settings(llm_models_file=path))


# ---- answers, through litellm in process --------------------------------------------------------
async def test_extract_answers_with_the_sentence_about_the_question():
    engine = demo_engine()
    result = await ask(engine, "demo/extract", "How many people does Acme employ?", [REPORT], use_cache=False)
    assert result.text == "Acme employs 240 people across three factories."
    founded = await ask(engine, "demo/extract", "Who was the founder?", [REPORT], use_cache=False)
    assert founded.text == "Acme Corporation was founded in 1952 by Jane Doe in Springfield."
    nothing = await ask(engine, "demo/extract", "What about penguins?", [REPORT], use_cache=False)
    assert nothing.text == "The text says nothing about penguins."
    # Tokens counted both ways, priced at 0 USD.
    assert result.prompt_tokens > 50 and result.completion_tokens == 8 and result.cost_usd == 0


async def test_earlier_turns_of_a_chat_are_read_without_their_roles():
    # How an ultrai/* virtual model passes a chat's earlier turns to the models: as context.
    context = [f"user: {REPORT}", "assistant: Noted."]
    result = await ask(demo_engine(), "demo/extract", "Who founded Acme?", context, use_cache=False)
    assert result.text == "Acme Corporation was founded in 1952 by Jane Doe in Springfield."


async def test_answers_are_deterministic_and_differ_by_model():
    engine = demo_engine()
    texts = {}
    for model in DEMO:
        first = await ask(engine, model, "Summarise the report.", [REPORT], use_cache=False)
        again = await ask(engine, model, "Summarise the report.", [REPORT], use_cache=False)
        assert first.text == again.text and not again.cached
        assert (first.prompt_tokens, first.completion_tokens) == (again.prompt_tokens, again.completion_tokens)
        texts[model] = first.text
    assert len(set(texts.values())) == 3
    assert texts["demo/brief"].startswith("Acme Corporation was founded in 1952")
    assert texts["demo/outline"].startswith("Key terms: ") and "\n- " in texts["demo/outline"]


async def test_streaming_comes_in_several_chunks_that_make_the_answer():
    engine = demo_engine()
    plain = await ask(engine, "demo/brief", "Summarise the report.", [REPORT], use_cache=False)
    pieces: list[str] = []

    async def on_delta(text: str) -> None:
        pieces.append(text)

    streamed = await ask(engine, "demo/brief", "Summarise the report.", [REPORT], use_cache=False, on_delta=on_delta)
    assert len(pieces) > 3 and "".join(pieces) == streamed.text == plain.text
    assert streamed.finish_reason == "stop"
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (plain.prompt_tokens, plain.completion_tokens)


async def test_max_tokens_cuts_the_answer():
    result = await ask(
        demo_engine(), "demo/brief", "Summarise.", [REPORT], use_cache=False, params=ModelParams(max_tokens=5)
    )
    assert result.finish_reason == "length" and result.completion_tokens == 5
    assert result.text == "Acme Corporation was founded in"


async def test_fields_are_answered_as_json():
    task = (
        "Extract these fields from the document and answer with one JSON object whose keys are the field names "
        '(null where the document does not say): "founder", "revenue", "penguins"'
    )
    result = await ask(demo_engine(), "demo/extract", task, [REPORT], use_cache=False)
    assert json.loads(result.text) == {
        "founder": "Acme Corporation was founded in 1952 by Jane Doe in Springfield.",
        "revenue": "Its revenue in 2023 was 12 million dollars, mostly from anvils.",
        "penguins": None,
    }


async def test_a_conversation_without_context():
    engine = demo_engine()
    messages = [{"role": "user", "content": f"{REPORT}\n\nWhich division lost money?"}]
    result = await engine.call("demo/extract", messages, ModelParams(), stage="answer", scope="u", use_cache=False)
    assert result.text == "The rockets division lost money."
    hello = await engine.call(
        "demo/outline", [{"role": "user", "content": "Hello"}], ModelParams(), stage="answer", scope="u"
    )
    assert hello.ok and "offline demo model" in (hello.text or "")


async def test_peer_review_and_synthesis_of_demo_models():
    recorded: list[CallResult] = []
    engine = demo_engine()
    config = settings(llm_demo_models=True)
    orchestrator = Orchestrator(engine, config, lambda user, endpoint, results: recorded.extend(results))
    request = OrchestrateRequest(
        prompt="Who runs the company now?",
        context=[REPORT],
        models=["demo/extract", "demo/brief"],
        pattern="peer_review",
        synthesis_model="demo/extract",
        cache=False,
    )
    answer = await orchestrator.execute(await orchestrator.plan(request, "u"))
    assert answer["status"] == "completed"
    stages = [(r["model"], r["stage"]) for r in answer["results"]]
    assert stages == [
        ("demo/extract", "answer"),
        ("demo/brief", "answer"),
        ("demo/extract", "review"),
        ("demo/brief", "review"),
    ]
    review = answer["results"][2]["text"]
    assert review.startswith("Critique: of the ") and "\n\nRevised answer:\nJane Doe retired in 1990" in review
    # The synthesis reads the revised answers (headings and critiques left out) and keeps the
    # sentence that answers the question.
    assert answer["synthesis"]["text"] == "Jane Doe retired in 1990; her son John Doe now runs the company."
    assert answer["usage"]["cost_usd"] == 0 and answer["usage"]["completion_tokens"] > 0
    assert len(recorded) == 5 and all(r.ok and r.prompt_tokens > 0 for r in recorded)


async def test_ranked_on_demo_models_ranks_and_synthesises():
    """Demo models rank the others' answers by relevance to the question, in a list the service
    reads, and the synthesis reads the answers past the aggregate."""
    engine = demo_engine()
    orchestrator = Orchestrator(engine, settings(llm_demo_models=True), lambda *_: None)
    request = OrchestrateRequest(
        prompt="Who runs the company now?",
        context=[REPORT],
        models=DEMO,
        pattern="ranked",
        synthesis_model="demo/extract",
        cache=False,
    )
    answer = await orchestrator.execute(await orchestrator.plan(request, "u"))
    assert answer["status"] == "completed"
    ranking = answer["ranking"]
    assert ranking["left_out"] == [] and all(r["parsed"] for r in ranking["reviewers"])
    # extract's answer is the sentence about who runs the company: every other reviewer puts it first.
    for reviewer in ranking["reviewers"]:
        if reviewer["reviewer"] != "demo/extract":
            assert reviewer["ranking"][0]["model"] == "demo/extract"
    assert ranking["aggregate"][0]["model"] == "demo/extract" and ranking["aggregate"][0]["rank"] == 1
    assert answer["synthesis"]["text"] == "Jane Doe retired in 1990; her son John Doe now runs the company."


async def test_refinement_rounds_and_samples_of_demo_models():
    """A demo model reads a refinement round as it reads a synthesis: from the answers it is shown,
    keeping the sentence that answers the question."""
    engine = demo_engine()
    orchestrator = Orchestrator(engine, settings(llm_demo_models=True), lambda user, endpoint, results: None)
    request = OrchestrateRequest(
        prompt="Who runs the company now?",
        context=[REPORT],
        models=["demo/extract", "demo/brief"],
        synthesis_model="demo/extract",
        rounds=2,
        samples=2,
        cache=False,
    )
    answer = await orchestrator.execute(await orchestrator.plan(request, "u"))
    assert answer["status"] == "completed"
    labels = [(r["model"], r["stage"], r["round"], r["sample"]) for r in answer["results"]]
    assert labels == [
        (m, stage, number, i)
        for stage, number in (("answer", 1), ("refine", 2))
        for m in ("demo/extract", "demo/brief")
        for i in (1, 2)
    ]
    refined = [r["text"] for r in answer["results"] if r["stage"] == "refine"]
    assert all("John Doe now runs the company" in text for text in refined)
    assert answer["synthesis"]["text"] == "Jane Doe retired in 1990; her son John Doe now runs the company."
    # Read from the answers shown, not from the context of the question.
    shown = labelled(["Jane Doe founded it. John Doe now runs the company.", "The rockets division lost money."], True)
    question = question_text("Who runs the company now?", [REPORT])
    messages = [{"role": "user", "content": REFINE_INSTRUCTION.format(question=question, answers=shown)}]
    result = await engine.call("demo/extract", messages, ModelParams(), stage="refine", scope="u", use_cache=False)
    assert result.text == "John Doe now runs the company."


def test_any_conversation_gets_a_non_empty_answer():
    """Messy input of every kind (no words, labels without text, templates inside templates, parts
    lists, no content): always an answer, the same one each time."""
    from ultrai_llm.demo.text import KINDS, answer
    from ultrai_llm.prompts import REVIEW_INSTRUCTION, SYNTHESIS_INSTRUCTION

    fragments = [
        "", " ", "?", "...", "a", "A b. C d.", "[1] ", "[Answer from x]\n", "Answer 1:\n", "Question:", "Task: ",
        "Key terms: x.", "Revised answer:", "- ", "# Title", "naïve café — 東京 ünïcödé.", "x" * 3000, "1. 2. 3.",
        '"field"', "JSON", "{", '{"a": 1}', "\n\n", "Why?", "<context>", "</context>", REPORT,
    ]  # fmt: skip
    rng = random.Random(20261130)
    for _ in range(300):
        messages = []
        for _ in range(rng.randint(1, 4)):
            text = "".join(rng.choice(fragments) for _ in range(rng.randint(0, 6)))
            shape = rng.random()
            if shape < 0.15:
                text = question_text(text, [rng.choice(fragments), text])
            elif shape < 0.25:
                text = SYNTHESIS_INSTRUCTION.format(question=text, answers=rng.choice(fragments))
            elif shape < 0.3:
                text = REVIEW_INSTRUCTION.format(others=text)
            content = rng.choice([text, [{"type": "text", "text": text}], None])
            messages.append({"role": rng.choice(["system", "user", "assistant", "user"]), "content": content})
        for kind in KINDS:
            first = answer(kind, f"demo/{kind}", messages)
            assert first.strip() and first == answer(kind, f"demo/{kind}", messages), messages


# ---- through the service, next to real models (the llm stack) -----------------------------------
def conversation(question: str) -> list[dict]:
    """The report and a question about it; a system message no other test sends keeps the cache out."""
    return [{"role": "system", "content": unique("Be brief.")}, {"role": "user", "content": f"{REPORT}\n\n{question}"}]


async def chat(client: httpx.AsyncClient, body: dict) -> dict:
    r = await client.post("/v1/chat/completions", json=body)
    assert r.status_code == 200, r.text
    return r.json()


async def test_listed_with_the_demo_flag(gateway):
    r = await gateway.get("/api/v1/llm/models")
    assert r.status_code == 200
    models = {m["name"]: m for m in r.json()["models"]}
    for name in DEMO:
        assert models[name]["demo"] is True and models[name]["provider"] == "demo"
        assert models[name]["status"] == "available"
    assert models["alpha"]["demo"] is False
    assert r.json()["detail"] is None  # real models are configured too
    ids = [m["id"] for m in (await gateway.get("/v1/models")).json()["data"]]
    assert set(DEMO) <= set(ids)


async def test_chat_stream_through_the_openai_api(gateway):
    body = {"model": "demo/extract", "messages": conversation("How many people does Acme employ?")}
    whole = await chat(gateway, body)
    assert whole["choices"][0]["message"]["content"] == "Acme employs 240 people across three factories."
    assert whole["usage"]["completion_tokens"] == 8 and whole["ultrai"]["cost_usd"] == 0
    stream = {**body, "stream": True, "stream_options": {"include_usage": True}, "cache": False}
    r = await gateway.post("/v1/chat/completions", json=stream)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
    events = [data for _, data in parse_sse(r.text)]
    content = [e["choices"][0]["delta"].get("content") for e in events if e.get("choices")]
    assert len([c for c in content if c]) > 1
    assert "".join(c for c in content if c) == "Acme employs 240 people across three factories."
    assert events[-1] == {"done": True}
    assert next(e for e in events if e.get("usage"))["usage"]["completion_tokens"] == 8


async def test_virtual_models_orchestrate_demo_models(gateway):
    body = {
        "model": "ultrai/synthesis",
        "messages": conversation("Which division lost money?"),
        "models": ["demo/extract", "demo/brief"],
        "synthesis_model": "demo/outline",
    }
    first = await chat(gateway, body)
    text = first["choices"][0]["message"]["content"]
    assert text.startswith("Key terms: ") and "- The rockets division lost money." in text
    assert first["ultrai"]["synthesis"]["model"] == "demo/outline"
    r = await gateway.post("/v1/chat/completions", json={**body, "stream": True, "cache": False})
    assert r.status_code == 200
    content = [e["choices"][0]["delta"].get("content") for _, e in parse_sse(r.text) if e.get("choices")]
    assert len([c for c in content if c]) > 1 and "".join(c for c in content if c) == text
    parallel = await chat(gateway, {**body, "model": "ultrai/parallel"})
    assert "### demo/extract\nThe rockets division lost money." in parallel["choices"][0]["message"]["content"]


async def test_orchestrate_endpoint_with_peer_review(gateway):
    body = {
        "prompt": "Who runs the company now?",
        "context": [REPORT],
        "models": ["demo/brief", "demo/extract"],
        "pattern": "peer_review",
        "synthesis_model": "demo/extract",
        "cache": False,
    }
    r = await gateway.post("/api/v1/llm/orchestrate", json=body)
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == "completed" and len(answer["results"]) == 4
    assert answer["synthesis"]["text"] == "Jane Doe retired in 1990; her son John Doe now runs the company."


async def test_usage_rows_and_the_cache(gateway):
    async def extract_usage() -> tuple[dict, dict]:
        usage = (await gateway.get("/api/v1/llm/usage", params={"days": 1})).json()
        per_model = {m["model"]: m for m in usage["models"]}.get("demo/extract", {"requests": 0, "cached": 0})
        today = [d for d in usage["daily"] if d["model"] == "demo/extract"]
        return per_model, (today[-1] if today else {"requests": 0})

    before, before_today = await extract_usage()
    body = {"model": "demo/extract", "messages": conversation("Who founded Acme?")}
    first = await chat(gateway, body)
    second = await chat(gateway, body)
    assert first["ultrai"]["cached"] is False and second["ultrai"]["cached"] is True
    assert second["choices"][0]["message"]["content"] == first["choices"][0]["message"]["content"]
    assert second["usage"] == first["usage"]
    after, after_today = await extract_usage()
    assert after["requests"] == before["requests"] + 2 and after["cached"] == before["cached"] + 1
    assert after["cost_usd"] == 0 and after["prompt_tokens"] > 0
    assert after_today["requests"] == before_today["requests"] + 2


async def test_the_documents_service_leaves_demo_models_out_of_its_defaults(llm_stack, token):
    async def bearer() -> str:
        return token

    client = ServiceClient("llm", llm_stack.url("llm"), token=bearer)
    try:
        names = await ModelCatalog(client).available()
    finally:
        await client.aclose()
    assert "alpha" in names and not [n for n in names if n.startswith("demo/")]


# ---- demo models alone (the shared stack: no provider configured) -------------------------------
async def test_demo_models_alone_health_listing_and_defaults(stack):
    async with httpx.AsyncClient(timeout=30) as client:
        health = (await client.get(f"{stack.url('llm')}/health")).json()
        providers = health["checks"]["providers:responseTime"][0]
        assert providers["status"] == "warn"
        assert "demo models" in providers["output"] and "OPENAI_API_KEY" in providers["output"]
        assert (await client.get(f"{stack.url('llm')}/ready")).status_code == 200
        token = await new_access_token(stack.url("gateway"))
        await keys_fetched(stack.url("llm"), token)
        auth = {"Authorization": f"Bearer {token}"}
        listing = (await client.get(f"{stack.url('gateway')}/api/v1/llm/models", headers=auth)).json()
        assert [m["name"] for m in listing["models"]] == DEMO and all(m["demo"] for m in listing["models"])
        assert "OPENAI_API_KEY" in listing["detail"]
        # No models named: the demo models are the defaults.
        body = {"prompt": "Who runs the company now?", "context": [REPORT], "pattern": "parallel"}
        r = await client.post(f"{stack.url('gateway')}/api/v1/llm/orchestrate", json=body, headers=auth)
        assert r.status_code == 200, r.text
        assert [x["model"] for x in r.json()["results"]] == DEMO


async def test_a_document_analysis_on_demo_models(stack):
    token = await new_access_token(stack.url("gateway"))
    await keys_fetched(stack.url("llm"), token)
    headers = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=stack.url("gateway"), headers=headers, timeout=60) as client:
        r = await client.post("/api/v1/documents", files={"file": ("acme.txt", REPORT.encode(), "text/plain")})
        assert r.status_code == 201, r.text
        analyses = f"/api/v1/documents/{r.json()['id']}/analyses"

        async def analysed(body: dict) -> dict:
            r = await client.post(analyses, json=body)
            assert r.status_code == 202, r.text

            async def analysis() -> dict:
                return (await client.get(r.headers["location"])).json()

            finished = ("completed", "failed")
            final = await eventually(analysis, lambda a: a["status"] in finished, what="the analysis", timeout=60)
            assert final["status"] == "completed", final
            return final

        body = {
            "kind": "qa",
            "question": "How many people does Acme employ?",
            "models": ["demo/extract", "demo/brief"],
            "synthesis_model": "demo/extract",
        }
        final = await analysed(body)
        result = final["result"]
        assert {m["model"]: m["status"] for m in result["models"]} == {"demo/extract": "ok", "demo/brief": "ok"}
        assert result["answer"] == "Acme employs 240 people across three factories."
        assert final["prompt_tokens"] > 0 and final["cost_usd"] == 0
        # No models named, and only demo models offered: the analysis runs on them.
        summary = await analysed({"kind": "summary"})
        assert [m["model"] for m in summary["result"]["models"]] == DEMO


async def test_compare_on_demo_models_is_valid_json_of_the_schema():
    """Demo models answer the compare prompt with the JSON it asks for: what several answers state
    as consensus, what one alone states as its insight, the question's words none uses as a gap."""
    engine = demo_engine()
    orchestrator = Orchestrator(engine, settings(llm_demo_models=True), lambda *_: None)
    request = OrchestrateRequest(
        prompt="Who runs the company now, and what is its profit?",
        context=[REPORT],
        models=DEMO,
        synthesis_model="demo/brief",
        compare=True,
        cache=False,
    )
    answer = await orchestrator.execute(await orchestrator.plan(request, "u"))
    assert answer["status"] == "completed" and answer["synthesis"]["text"]
    comparison = answer["comparison"]
    assert comparison["status"] == "ok" and comparison["repaired"] is False and comparison["dropped_labels"] == []
    assert comparison["labels"] == {f"Answer {i}": m for i, m in enumerate(DEMO, 1)}
    assert [(r["model"], r["stage"]) for r in answer["results"][-1:]] == [("demo/brief", "compare")]
    # Every point is tied to answers that exist, the models named as the labels say.
    points = [p for category in ("consensus", "unique_insights", "gaps") for p in comparison[category]]
    assert comparison["consensus"] and comparison["unique_insights"] and points
    for p in points:
        assert p["models"] == [comparison["labels"][label] for label in p["answers"]]
    assert all(len(p["answers"]) >= 2 for p in comparison["consensus"])
    # Every demo model gives the sentence about who runs the company.
    assert comparison["consensus"][0] == {
        "point": "Jane Doe retired in 1990; her son John Doe now runs the company.",
        "answers": ["Answer 1", "Answer 2", "Answer 3"],
        "models": DEMO,
    }
    assert all(len(p["answers"]) == 1 for p in comparison["unique_insights"])
    # "profit": the report speaks of revenue and money lost, and no answer of profit.
    assert comparison["gaps"] == [{"point": "No answer speaks of profit.", "answers": [], "models": []}]

"""Request and response bodies of the llm API."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Pattern = Literal["parallel", "peer_review", "synthesis", "ranked"]
Stage = Literal["answer", "refine", "review", "synthesis", "compare"]


# Bounds shared by the orchestration's parameters and the OpenAI-compatible body that becomes them.
MAX_OUTPUT_TOKENS = 1_000_000
MAX_SEED = 2**63 - 1
# Refinement rounds and samples per model (ultrai_llm.layers).
MAX_ROUNDS = 4
MAX_SAMPLES = 8


class ModelParams(BaseModel):
    """Per-model parameters; ``max_tokens`` is checked against the model's output limit."""

    model_config = ConfigDict(extra="forbid")

    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    system_prompt: str | None = Field(None, max_length=100_000)

    def provider_kwargs(self) -> dict[str, Any]:
        """What is sent to the provider (the system prompt goes into the messages instead)."""
        return {
            k: v
            for k, v in (
                ("temperature", self.temperature),
                ("max_tokens", self.max_tokens),
                ("top_p", self.top_p),
                ("seed", self.seed),
            )
            if v is not None
        }


class OrchestrateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    prompt: str = Field(min_length=1)
    context: list[str] | None = Field(None, max_length=1000)
    models: list[str] | None = Field(None, min_length=1, max_length=32)
    pattern: Pattern = "synthesis"
    synthesis_model: str | None = None
    params: dict[str, ModelParams] | None = None
    stream: bool = False
    cache: bool = True
    # What to do when the prompt with its context is longer than a model accepts: refuse it for
    # that model (the default), or drop context chunks from the end until it fits.
    truncate: bool = False
    # The overall time budget in seconds (capped by LLM_BUDGET_SECONDS).
    timeout: float | None = Field(None, gt=0, le=1800)
    rounds: int = Field(
        1,
        ge=1,
        le=MAX_ROUNDS,
        description="Answer rounds (Mixture-of-Agents layers): 1 answers once; from round 2 every model that "
        "answered the round before answers again, seeing all of that round's answers anonymised (stage "
        "'refine'). The review and synthesis then use the last round's answers.",
    )
    samples: int = Field(
        1,
        ge=1,
        le=MAX_SAMPLES,
        description="How many times each model answers (self-consistency, Self-MoA), each sample a call of its "
        "own: with the given temperature (0.7 when none or 0 is given) and the given seed (or 0) plus the sample's "
        "index - 1, so that samples differ. Results carry 'sample' (from 1); models x samples at most 32.",
    )
    # A stored conversation of the caller's (``/conversations``): its earlier turns go to the models
    # before the prompt, and this run is stored as its next turn.
    conversation_id: str | None = Field(None, min_length=1, max_length=64)
    compare: bool = Field(
        False,
        description="With a synthesis (pattern synthesis or ranked, or peer_review with a synthesis_model): the "
        "synthesis model also compares the answers, in a call of its own (stage 'compare') beside the synthesis: "
        "consensus, contradictions, unique insights and gaps, each tied to the answers (see 'comparison').",
    )


class CallResultOut(BaseModel):
    model: str
    stage: Stage
    status: Literal["ok", "error"]
    text: str | None
    error: str | None
    latency_ms: float
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float
    cached: bool = False
    round: int | None = Field(None, description="The answer round (with rounds above 1)")
    sample: int | None = Field(None, description="Which sample of the model, from 1 (with samples above 1)")


class UsageTotals(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class RankedModel(BaseModel):
    model: str
    position: int = Field(description="1 is best; tied models share a position")


class ReviewerRanking(BaseModel):
    reviewer: str
    parsed: bool = Field(description="Whether the reviewer's ranking could be read (if not, it is left out)")
    shown_order: list[str] = Field(description="The answers' models in the order this reviewer saw them")
    ranking: list[RankedModel] = Field(description="Best first, in model names (the shuffle undone)")
    error: str | None


class AggregateRow(BaseModel):
    model: str
    rank: int | None = Field(description="1 is best; equal scores share a rank; null: no readable ballot")
    score: float | None = Field(description="Mean Borda points per ballot that ranked this answer")
    points: float
    ballots: int
    mean_position: float | None


class RankingOut(BaseModel):
    method: Literal["borda"]
    reviewers: list[ReviewerRanking]
    left_out: list[str] = Field(description="Reviewers whose ranking could not be read or whose call failed")
    aggregate: list[AggregateRow] = Field(description="Best first")


# ---- the judge's comparison (``compare``, ultrai_llm.compare) ----------------------------------
class ComparisonPoint(BaseModel):
    """One point as the judge writes it: the answers it concerns by their anonymised labels."""

    model_config = ConfigDict(extra="forbid")

    point: str
    answers: list[str] = Field(description='The labels of the answers it concerns ("Answer 1")')


class ComparisonDraft(BaseModel):
    """The JSON the judge is asked for (sent as the ``response_format`` schema where the model takes
    one) and its reply validated against."""

    model_config = ConfigDict(extra="forbid")

    consensus: list[ComparisonPoint]
    contradictions: list[ComparisonPoint]
    unique_insights: list[ComparisonPoint]
    gaps: list[ComparisonPoint]


class ComparedPoint(BaseModel):
    point: str
    answers: list[str] = Field(description='The anonymised labels the judge tied it to ("Answer 1")')
    models: list[str] = Field(description="The same answers in model names")


class ComparisonOut(BaseModel):
    status: Literal["ok", "invalid", "failed"] = Field(
        description="ok; invalid: the reply was not valid JSON of the schema, even after one repair call; "
        "failed: the call itself failed"
    )
    model: str = Field(description="The judge (the synthesis model)")
    labels: dict[str, str] = Field(description="Each anonymised label and the model whose answer it is")
    repaired: bool = Field(description="Whether a repair call was made (the first reply was not valid)")
    error: str | None = None
    consensus: list[ComparedPoint] = Field(default_factory=list)
    contradictions: list[ComparedPoint] = Field(default_factory=list)
    unique_insights: list[ComparedPoint] = Field(default_factory=list)
    gaps: list[ComparedPoint] = Field(default_factory=list)
    dropped_labels: list[str] = Field(
        default_factory=list, description="Labels the judge gave that name no answer (dropped from the points)"
    )


class ConversationTurnRef(BaseModel):
    id: str = Field(description="The conversation")
    stored: bool = Field(description="Whether this run was stored as its next turn (not when nothing answered)")
    turn: int | None = Field(description="The stored turn's number (1 for the first); null when not stored")


class OrchestrateResponse(BaseModel):
    id: str
    pattern: Pattern
    status: Literal["completed", "partial"]
    results: list[CallResultOut]
    synthesis: CallResultOut | None
    usage: UsageTotals
    latency_ms: float
    # The ranked pattern: each reviewer's ranking and the aggregate (null when fewer than two answered).
    ranking: RankingOut | None = None
    # With compare: the judge's comparison of the answers (null when fewer than two answered).
    comparison: ComparisonOut | None = None
    # With a conversation_id: the conversation and the turn this run was stored as.
    conversation: ConversationTurnRef | None = None


class PlannedCall(BaseModel):
    stage: Stage
    model: str
    round: int | None = Field(None, description="The refinement round of a refine call (rounds > 1)")
    input_tokens: int = Field(description="litellm's token count of the messages, earlier answers left empty")
    input_tokens_max: int = Field(description="The same with every earlier answer as long as its output estimate")
    output_tokens: int = Field(description="max_tokens, or the model's output limit capped (see estimate.py)")
    cost_usd_low: float = Field(description="The input without earlier answers, no output")
    cost_usd_high: float = Field(description="input_tokens_max and output_tokens")
    optional: bool = Field(
        False,
        description="A call that is made only if needed (the compare stage's repair): in the high end only, "
        "not in calls_per_stage",
    )


class EstimateRange(BaseModel):
    low: float
    high: float


class TokenRange(BaseModel):
    low: int
    high: int


class EstimateBudget(BaseModel):
    usd_per_day: float | None = Field(description="The user's daily budget")
    key_usd_per_day: float | None = Field(description="The API key's daily budget (with a key)")
    remaining_usd: float | None = Field(description="What is left today of the tighter of both; null: no budget")
    fits: bool = Field(description="The high estimate fits in what is left")
    over_by_usd: float | None = Field(description="How much the high estimate exceeds what is left")
    tokens_per_day: int | None
    remaining_tokens: int | None
    fits_tokens: bool


class EstimateResponse(BaseModel):
    pattern: Pattern
    calls_per_stage: dict[str, int] = Field(description="Planned provider calls per stage")
    calls: list[PlannedCall]
    refused: dict[str, str] = Field(description="Models refused before any call (too long for them), and why")
    input_tokens: TokenRange
    output_tokens: int
    cost_usd: EstimateRange
    wall_time_ms: float | None = Field(
        description="From the models' recent median latencies, stage by stage; null without recent calls"
    )
    budget: EstimateBudget


class ModelOut(BaseModel):
    name: str
    provider: str
    status: str
    context_window: int | None
    max_output_tokens: int | None = None
    source: str | None = None
    demo: bool = Field(
        description="An offline demo model (demo/*): it answers from the text it is given, without a language model"
    )


class ModelsResponse(BaseModel):
    models: list[ModelOut]
    patterns: list[str]
    detail: str | None = None


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The OpenAI chat completions body (the fields this service acts on; others are ignored)."""

    model_config = ConfigDict(extra="ignore")

    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    max_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    max_completion_tokens: int | None = Field(None, ge=1, le=MAX_OUTPUT_TOKENS)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, le=MAX_SEED)
    n: int = Field(1, ge=1, le=1)
    user: str | None = None
    # Extensions (the SDK's extra_body): bypass the cache; the models of a virtual ultrai/* model.
    cache: bool = True
    models: list[str] | None = Field(None, min_length=1, max_length=32)
    synthesis_model: str | None = None

    def params(self) -> ModelParams:
        return ModelParams(
            temperature=self.temperature,
            max_tokens=self.max_completion_tokens or self.max_tokens,
            top_p=self.top_p,
            seed=self.seed,
        )


class UsageRow(BaseModel):
    model: str
    requests: int
    cached: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class KeyUsageRow(BaseModel):
    """Usage with one API key (``key_id`` null: without a key)."""

    key_id: str | None
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class DailyUsageRow(BaseModel):
    """Usage of one model on one UTC day."""

    day: str = Field(description="The UTC day, YYYY-MM-DD")
    model: str
    requests: int
    prompt_tokens: int
    completion_tokens: int
    cost_usd: float


class UsageResponse(BaseModel):
    user_id: str
    since: str
    models: list[UsageRow]
    total: UsageTotals
    budget: dict[str, Any]
    keys: list[KeyUsageRow] = []
    # Per UTC day and model, oldest day first.
    daily: list[DailyUsageRow] = []

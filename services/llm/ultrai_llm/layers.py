"""Refinement rounds and samples: what ``rounds`` and ``samples`` of an orchestration add to its
answer stage, and the virtual models that ask for them.

- ``rounds`` (Mixture-of-Agents layers, arXiv 2406.04692): round 1 is the answer stage; in each
  round after it every model that answered the round before answers again, shown all of that
  round's answers anonymised (``prompts.REFINE_INSTRUCTION``, stage ``refine``). A model that fails
  in a round drops out of the next; when no model answers a round, the rounds stop and the last good
  answers stand. The review and the synthesis then work on the last answers. Each round gets its
  share of the time budget, as every stage does, and a cancelled run starts no further round.
- ``samples`` (self-consistency, Self-MoA arXiv 2502.00674): each model answers ``samples`` times,
  each sample a call of its own, labelled with its ``sample`` index (from 1) in the results, and
  the samples are aggregated like the answers of different models. Samples must differ, so each is
  sent with a temperature above 0 (the given one, else ``SAMPLE_TEMPERATURE``) and a seed of its
  own (the given seed, or 0, plus the sample index - 1). The seed also keeps the samples' cache
  entries apart: the response cache answers a repeated request sample by sample, never one cached
  answer for all of them.

Virtual models (``VARIANTS``): ``ultrai/rounds-2`` and ``ultrai/rounds-3`` are the synthesis with 2
or 3 rounds, ``ultrai/samples-3`` and ``ultrai/samples-5`` the synthesis of 3 or 5 samples of one
model each (the first default model when the request names none: Self-MoA samples the best one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ultrai_llm.catalog import PATTERNS, VIRTUAL_PREFIX
from ultrai_llm.schemas import MAX_SEED, ModelParams, OrchestrateRequest

SAMPLE_TEMPERATURE = 0.7
# The calls of one stage (models x samples) a request may ask for.
MAX_AGENTS = 32


@dataclass(frozen=True)
class Variant:
    pattern: str
    rounds: int = 1
    samples: int = 1


VARIANTS = {
    "rounds-2": Variant("synthesis", rounds=2),
    "rounds-3": Variant("synthesis", rounds=3),
    "samples-3": Variant("synthesis", samples=3),
    "samples-5": Variant("synthesis", samples=5),
}


def virtual_models() -> list[str]:
    """Every virtual model: one per pattern, then the variants."""
    return [VIRTUAL_PREFIX + name for name in (*PATTERNS, *VARIANTS)]


def variant(name: str) -> Variant | None:
    """What a virtual model's name (without ``ultrai/``) asks for; None when there is no such model."""
    if name in PATTERNS:
        return Variant(name)
    return VARIANTS.get(name)


def sample_params(params: ModelParams, sample: int) -> ModelParams:
    """The parameters of sample ``sample`` (from 1) of a model: a temperature above 0 and a seed of
    its own."""
    temperature = params.temperature if params.temperature else SAMPLE_TEMPERATURE
    seed = ((params.seed or 0) + sample - 1) % (MAX_SEED + 1)
    return params.model_copy(update={"temperature": temperature, "seed": seed})


def with_variant(request: OrchestrateRequest, chosen: Variant, models_given: bool) -> OrchestrateRequest:
    """The orchestration of a virtual model: its rounds and samples; a samples model without
    ``models`` in the request samples the first default model only."""
    update: dict[str, Any] = {"rounds": chosen.rounds, "samples": chosen.samples}
    if chosen.samples > 1 and not models_given and request.models:
        keep = request.models[:1]
        update["models"] = keep
        if request.params is not None:
            wanted = {*keep, request.synthesis_model}
            update["params"] = {m: p for m, p in request.params.items() if m in wanted}
    return request.model_copy(update=update)

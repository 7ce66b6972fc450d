"""litellm's Router, less work it does on every call for nothing (on the event loop, where the
five calls of an orchestration wait for each other's CPU).

- Usage counts: the Router counts each deployment's usage (tokens and requests per minute) twice
  per call, once when the answer comes back and once more in its success callback. Each count
  first builds the deployment anew (a pydantic object), looks up and deep-copies its model
  information, and only then finds that the deployment has no tpm/rpm limit to count against.
  Here a deployment's "no limit" is found out once and remembered, so those counts cost nothing
  for it; a deployment with a limit (``rpm`` in the models file, ultrai_llm/provider_limits.py)
  is counted exactly as litellm counts it. The model list is fixed for the Router's life (the
  catalog is read at start-up); a change to it forgets what was remembered.
- Response headers: after each call the Router writes rate-limit headers into the response's
  hidden parameters, for a proxy to send on, reading the model group's usage (from Redis, when
  the deployments have limits and Redis is configured) to do so. Nothing here sends them on
  (ultrai_llm.engine reads the answer, its usage and its cost), so the call returns without them.

Everything else (retries, fallbacks, cooldowns and their state in Redis) is litellm's own.
"""

from __future__ import annotations

from typing import Any

from litellm.router_utils.pre_call_checks.io_token_rate_limit_check import deployment_has_io_token_limits

from ultrai_llm.engine_setup import Router

LIMIT_KEYS = ("tpm", "rpm")


class ServiceRouter(Router):
    # Deployment ids (with the model group they were counted for) known to have no limit.
    _unlimited: set[tuple[str, str]]

    def set_model_list(self, model_list: list[Any]) -> None:
        self._unlimited = set()  # litellm's __init__ sets its model list here too
        super().set_model_list(model_list)

    def _has_limits(self, deployment_id: str, model_group: str) -> bool:
        """What litellm's ``_increment_deployment_usage`` checks before it counts anything."""
        deployment = self.get_deployment(model_id=deployment_id)
        if deployment is None:
            return True  # litellm's own answer (nothing counted) stands
        info: dict[str, Any] = dict(self.get_router_model_info(deployment=deployment, received_model_name=model_group))
        own: dict[str, Any] = deployment.model_dump()
        limits = (
            *(own.get(key) for key in LIMIT_KEYS),
            deployment.litellm_params.tpm,
            deployment.litellm_params.rpm,
            *(info.get(key) for key in LIMIT_KEYS),
        )
        return any(limit is not None for limit in limits) or deployment_has_io_token_limits(own)

    async def _increment_deployment_usage(self, *, deployment_id: str, model_group: str, **kwargs: Any) -> str | None:
        key = (deployment_id, model_group)
        unlimited: set[tuple[str, str]] = self.__dict__.setdefault("_unlimited", set())
        if key in unlimited:
            return None
        if not self._has_limits(deployment_id, model_group):
            unlimited.add(key)
            return None
        result: str | None = await super()._increment_deployment_usage(
            deployment_id=deployment_id, model_group=model_group, **kwargs
        )
        return result

    async def set_response_headers(
        self, response: Any, model_group: str | None = None, request_kwargs: dict[str, object] | None = None
    ) -> Any:
        return response

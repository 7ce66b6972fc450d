"""The routes' dependencies: the service's facade, and who is calling.

Handlers take these as parameters; only these functions read the application's state.
"""

from __future__ import annotations

from typing import Annotated

import jwt
from fastapi import Depends, Request
from starlette.requests import HTTPConnection

from shared.tokens import (
    ON_BEHALF_HEADER,
    SERVICE_TYP,
    CurrentPrincipal,
    Principal,
    TokenVerifier,
    bearer_token,
    current_service,
    current_user,
    unauthorized,
)
from ultrai_llm.service import Llm


# Coroutines, as every dependency here: FastAPI would run a plain function in a worker thread.
# An HTTPConnection: the same dependency serves HTTP routes and WebSocket routes.
async def llm_of(connection: HTTPConnection) -> Llm:
    llm: Llm = connection.app.state.llm
    return llm


async def verifier_of(connection: HTTPConnection) -> TokenVerifier:
    """The token verifier, for a WebSocket, whose token comes in its first message, not a header."""
    verifier: TokenVerifier = connection.app.state.verifier
    return verifier


async def user_or_service(request: Request) -> Principal:
    """A user, or a service acting for one; or, for what concerns no user (the model list), a service
    token for this service on its own."""
    token = bearer_token(request)
    if token and not request.headers.get(ON_BEHALF_HEADER):
        try:
            typ = jwt.get_unverified_header(token).get("typ")
        except jwt.PyJWTError:
            typ = None
        if typ == SERVICE_TYP:
            return await current_service(request)
    return await current_user(request)


async def current_user_id(user: CurrentPrincipal) -> str:
    """The user a request is for: the token's subject, or the user a service acts for."""
    if user.user_id is None:  # a user principal always names its user
        raise unauthorized()
    return user.user_id


LlmDep = Annotated[Llm, Depends(llm_of)]
VerifierDep = Annotated[TokenVerifier, Depends(verifier_of)]
# A user, a service for a user, or this service's own service token: for what concerns no user.
Caller = Annotated[Principal, Depends(user_or_service)]
UserId = Annotated[str, Depends(current_user_id)]

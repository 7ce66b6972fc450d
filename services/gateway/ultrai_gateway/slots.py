"""Per-user slots for long-lived requests (uploads, event streams, WebSockets).

A long-lived request holds a connection to a service for as long as it lasts, so one account
opening hundreds of them would take the upstream pool from everyone else. Each user may hold
``MAX_STREAMS_PER_USER`` at once, across every gateway instance: the slots live in Redis as a sorted
set per user (member: the request, score: the lease's expiry), taken and counted in one atomic
script. Leases are renewed while the requests run, so the slots of a gateway that dies free
themselves within ``LEASE_SECONDS``. Without Redis (or while it is down) the slots are counted in
this process; a Redis whose pool stays busy gets a 503, never an unchecked slot.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import time
from collections import defaultdict
from dataclasses import dataclass

from shared.errors import ProblemError
from shared.kv import REDIS_ERRORS, KeyValue, store_busy

log = logging.getLogger("ultrai_gateway.slots")

LEASE_SECONDS = 60.0
RENEW_EVERY = 20.0

# KEYS[1]: the user's slot set. ARGV: now, lease expiry, member, cap.
_TAKE = """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[1])
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil((tonumber(ARGV[2]) - tonumber(ARGV[1])) * 1000))
return 1
"""


@dataclass(frozen=True)
class Slot:
    user: str
    member: str
    shared: bool  # held in Redis (else in this process)


class StreamSlots:
    def __init__(self, kv: KeyValue, cap: int) -> None:
        self.kv = kv
        self.cap = cap
        self._local: dict[str, set[str]] = defaultdict(set)
        self._held: dict[str, Slot] = {}  # member -> slot, for renewal
        self._renewer: asyncio.Task[None] | None = None
        self._removals: set[asyncio.Task[None]] = set()

    def _key(self, user: str) -> str:
        return self.kv.key(f"streams:{user}")

    async def take(self, user: str) -> Slot:
        """A slot for ``user``, or 429 when they hold the most they may (503 when that cannot be known)."""
        member = secrets.token_hex(8)
        redis = self.kv.redis if self.kv.configured and not self.kv.down else None
        if redis is not None:
            now = time.time()
            try:
                taken = await redis.eval(_TAKE, 1, self._key(user), now, now + LEASE_SECONDS, member, self.cap)
            except REDIS_ERRORS as exc:
                if store_busy(exc):
                    raise ProblemError(
                        503,
                        "The gateway cannot count open streams right now; retry shortly.",
                        title="Service unavailable",
                        headers={"Retry-After": "1"},
                    ) from None
                log.warning("redis unavailable for stream slots (%s); counting in process", type(exc).__name__)
            else:
                if not taken:
                    raise self._refused()
                slot = Slot(user, member, shared=True)
                self._held[member] = slot
                self._start_renewing()
                return slot
        if len(self._local[user]) >= self.cap:
            raise self._refused()
        self._local[user].add(member)
        return Slot(user, member, shared=False)

    def _refused(self) -> ProblemError:
        return ProblemError(
            429,
            f"Too many long-lived requests at once: at most {self.cap} uploads, event streams and "
            "WebSockets per account; finish one and retry.",
            title="Too many requests",
            headers={"Retry-After": "5"},
        )

    async def release(self, slot: Slot) -> None:
        """Give the slot back. Nothing here waits on I/O, so a release that runs while the request is
        being cancelled (the client went away) still happens; Redis is told in a task of its own."""
        if not slot.shared:
            members = self._local.get(slot.user)
            if members is not None:
                members.discard(slot.member)
                if not members:
                    del self._local[slot.user]
            return
        self._held.pop(slot.member, None)  # no longer renewed: its lease ends it at the latest
        task = asyncio.get_running_loop().create_task(self._remove(slot))
        self._removals.add(task)
        task.add_done_callback(self._removals.discard)

    async def _remove(self, slot: Slot) -> None:
        redis = self.kv.redis
        if redis is None:
            return
        try:
            await redis.zrem(self._key(slot.user), slot.member)
        except REDIS_ERRORS as exc:
            log.info("could not release a stream slot now (%s); its lease ends it", type(exc).__name__)

    def _start_renewing(self) -> None:
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew())

    async def _renew(self) -> None:
        while self._held:
            await asyncio.sleep(RENEW_EVERY)
            redis = self.kv.redis
            if redis is None:
                return
            expiry = time.time() + LEASE_SECONDS
            try:
                async with redis.pipeline(transaction=False) as pipe:
                    for slot in list(self._held.values()):
                        pipe.zadd(self._key(slot.user), {slot.member: expiry}, xx=True)
                    await pipe.execute()
            except REDIS_ERRORS as exc:
                log.info("could not renew stream slots (%s)", type(exc).__name__)

    async def close(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer

"""Fixed-rate load for latency: each user sends one request per second whatever the answer time
(constant_throughput), so a slow answer does not slow the sender down and hide tail latency.
The target paths and token come from the environment (set by bench_gateway.py). Locust's own
statistics round to whole milliseconds; exact times are kept here and written to BENCH_OUT."""

import json
import os

from locust import FastHttpUser, constant_throughput, events, task

PATHS = [p for p in os.environ.get("BENCH_PATHS", "/live").split(",") if p]
TOKEN = os.environ.get("BENCH_TOKEN", "")
TIMES: list[float] = []
FAILURES = [0]


@events.request.add_listener
def record(response_time: float, exception: BaseException | None, **_: object) -> None:
    if exception is not None:
        FAILURES[0] += 1
    else:
        TIMES.append(response_time)


@events.quitting.add_listener
def dump(**_: object) -> None:
    out = os.environ.get("BENCH_OUT")
    if out:
        with open(out, "w") as fh:
            json.dump({"times_ms": TIMES, "failures": FAILURES[0]}, fh)


class Client(FastHttpUser):
    wait_time = constant_throughput(1.0)

    @task
    def mix(self) -> None:
        headers = {"Authorization": f"Bearer {TOKEN}"} if TOKEN else {}
        for path in PATHS:
            self.client.get(path, headers=headers, name=path.split("?")[0])

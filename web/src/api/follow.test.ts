import { describe, expect, it } from "vitest";
import { followStream, type EventSourceLike } from "./follow";

class FakeSource implements EventSourceLike {
  onerror: ((event: Event) => void) | null = null;
  closed = false;
  private listeners = new Map<string, ((e: MessageEvent) => void)[]>();
  constructor(
    readonly ticket: string,
    readonly lastEventId: string | null,
  ) {}
  addEventListener(type: string, listener: (event: MessageEvent) => void): void {
    this.listeners.set(type, [...(this.listeners.get(type) ?? []), listener]);
  }
  close(): void {
    this.closed = true;
  }
  emit(type: string, id: string, data: unknown): void {
    for (const l of this.listeners.get(type) ?? []) l({ lastEventId: id, data: JSON.stringify(data) } as MessageEvent);
  }
  fail(): void {
    this.onerror?.(new Event("error"));
  }
}

const tick = () => new Promise((r) => setTimeout(r, 0));

function setup(overrides: Partial<Parameters<typeof followStream>[0]> = {}) {
  const sources: FakeSource[] = [];
  const received: [string, unknown, string][] = [];
  let tickets = 0;
  const retries: number[] = [];
  const follower = followStream({
    events: ["status", "model", "completed", "failed"],
    terminal: ["completed", "failed"],
    ticket: async () => `ticket-${++tickets}`,
    connect: (ticket, last) => {
      const s = new FakeSource(ticket, last);
      sources.push(s);
      return s;
    },
    onEvent: (name, data, id) => received.push([name, data, id]),
    onRetry: (attempt) => retries.push(attempt),
    sleep: async () => undefined,
    ...overrides,
  });
  return { follower, sources, received, retries };
}

describe("followStream", () => {
  it("reconnects with a new ticket after an error, passing the last id and skipping ids seen", async () => {
    const { follower, sources, received, retries } = setup();
    await tick();
    expect(sources).toHaveLength(1);
    sources[0].emit("status", "1", { status: "running" });
    sources[0].emit("model", "2", { model: "demo/echo", status: "ok" });
    sources[0].fail();
    await tick();
    await tick();
    expect(sources[0].closed).toBe(true);
    expect(sources).toHaveLength(2);
    expect(sources[1].ticket).toBe("ticket-2");
    expect(sources[1].lastEventId).toBe("2");
    expect(retries).toEqual([1]);
    // The new stream starts over: 1 and 2 again, then 3 and the end.
    sources[1].emit("status", "1", { status: "running" });
    sources[1].emit("model", "2", { model: "demo/echo", status: "ok" });
    sources[1].emit("model", "3", { model: "demo/brief", status: "ok" });
    sources[1].emit("completed", "4", { status: "completed" });
    await follower.done;
    expect(received.map(([name, , id]) => `${id}:${name}`)).toEqual(["1:status", "2:model", "3:model", "4:completed"]);
    expect(sources[1].closed).toBe(true);
  });

  it("ignores events from a source it already closed", async () => {
    const { sources, received } = setup();
    await tick();
    sources[0].fail();
    await tick();
    await tick();
    sources[0].emit("status", "9", { status: "late" });
    expect(received).toEqual([]);
  });

  it("retries a failed ticket, then gives up after maxAttempts", async () => {
    let fatal: unknown = null;
    let calls = 0;
    const { follower, sources } = setup({
      ticket: async () => {
        calls++;
        throw new Error("down");
      },
      maxAttempts: 3,
      onFatal: (e) => (fatal = e),
    });
    await follower.done;
    expect(calls).toBe(4);
    expect(sources).toHaveLength(0);
    expect((fatal as Error).message).toBe("down");
  });

  it("does not retry what retrying cannot help", async () => {
    let fatal: unknown = null;
    const { follower } = setup({
      ticket: async () => {
        throw new Error("not yours");
      },
      retryable: () => false,
      onFatal: (e) => (fatal = e),
    });
    await follower.done;
    expect(fatal).not.toBeNull();
  });

  it("close() stops it and closes the source", async () => {
    const { follower, sources } = setup();
    await tick();
    follower.close();
    await follower.done;
    expect(sources[0].closed).toBe(true);
  });
});

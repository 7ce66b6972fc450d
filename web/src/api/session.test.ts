import { describe, expect, it } from "vitest";
import { ApiClient } from "./client";
import { SignedOutError } from "./problem";
import { Session, type ChannelLike, type LockManagerLike } from "./session";

const json = (status: number, body: unknown) =>
  new Response(JSON.stringify(body), { status, headers: { "Content-Type": "application/json" } });

/** A fake server: /refresh hands out t1, t2, …; other paths answer 200 for the current token. */
function server(options: { refreshFails?: boolean } = {}) {
  const calls: string[] = [];
  let issued = 0;
  let current = "t0";
  const fetch = async (url: string, init?: RequestInit): Promise<Response> => {
    const path = new URL(url).pathname;
    calls.push(path);
    if (path === "/api/v1/auth/refresh") {
      expect(init?.credentials).toBe("include");
      expect(init?.body).toBeUndefined();
      await new Promise((r) => setTimeout(r, 5));
      if (options.refreshFails) return json(401, { detail: "Session expired." });
      issued += 1;
      current = `t${issued}`;
      return json(200, { access_token: current, expires_in: 900, token_type: "Bearer" });
    }
    const auth = new Headers(init?.headers).get("Authorization");
    if (auth !== `Bearer ${current}`) return json(401, { detail: "expired" });
    return json(200, { ok: path });
  };
  return { fetch, calls, expire: () => (current = "never-issued") };
}

/** Web Locks between "tabs" in one process: one holder at a time, in order. */
class Locks implements LockManagerLike {
  private tail: Promise<unknown> = Promise.resolve();
  request<T>(_name: string, callback: () => Promise<T>): Promise<T> {
    const run = this.tail.then(callback, callback);
    this.tail = run.catch(() => undefined);
    return run;
  }
}

/** A BroadcastChannel between tabs. */
class Hub {
  private members: ((e: MessageEvent) => void)[] = [];
  channel(): ChannelLike {
    let mine: ((e: MessageEvent) => void) | null = null;
    return {
      postMessage: (message) => {
        for (const m of this.members) if (m !== mine) m({ data: message } as MessageEvent);
      },
      addEventListener: (_type, listener) => {
        mine = listener;
        this.members.push(listener);
      },
    };
  }
}

describe("single-flight refresh", () => {
  it("refreshes once for two concurrent 401s, then retries both", async () => {
    const srv = server();
    const session = new Session({ base: () => "http://api", fetch: srv.fetch, locks: null, channel: null });
    await session.refresh();
    expect(session.token).toBe("t1");
    srv.expire();
    // The server now takes t2 only: both calls get a 401 with t1.
    const client = new ApiClient(session, () => "http://api", srv.fetch);
    const before = srv.calls.length;
    const [a, b] = await Promise.all([client.json("/api/v1/a"), client.json("/api/v1/b")]);
    expect(a).toEqual({ ok: "/api/v1/a" });
    expect(b).toEqual({ ok: "/api/v1/b" });
    const refreshes = srv.calls.slice(before).filter((p) => p.endsWith("/refresh"));
    expect(refreshes).toHaveLength(1);
    expect(session.token).toBe("t2");
  });

  it("shares one refresh among callers that start with no token", async () => {
    const srv = server();
    const session = new Session({ base: () => "http://api", fetch: srv.fetch, locks: null, channel: null });
    const client = new ApiClient(session, () => "http://api", srv.fetch);
    await Promise.all([client.json("/x"), client.json("/y"), client.json("/z")]);
    expect(srv.calls.filter((p) => p.endsWith("/refresh"))).toHaveLength(1);
  });

  it("signs out when the refresh is refused, and says so to listeners", async () => {
    const srv = server({ refreshFails: true });
    const session = new Session({ base: () => "http://api", fetch: srv.fetch, locks: null, channel: null });
    const heard: boolean[] = [];
    session.subscribe((signedIn) => heard.push(signedIn));
    (session as unknown as { access: string }).access = "old";
    const client = new ApiClient(session, () => "http://api", srv.fetch);
    await expect(client.json("/x")).rejects.toBeInstanceOf(SignedOutError);
    expect(session.token).toBeNull();
    expect(heard).toEqual([false]);
  });

  it("two tabs: the second waits for the lock and takes the token the first shared", async () => {
    const srv = server();
    const locks = new Locks();
    const hub = new Hub();
    const tab1 = new Session({ base: () => "http://api", fetch: srv.fetch, locks, channel: hub.channel() });
    const tab2 = new Session({ base: () => "http://api", fetch: srv.fetch, locks, channel: hub.channel() });
    const [one, two] = await Promise.all([tab1.refresh(), tab2.refresh()]);
    expect(srv.calls.filter((p) => p.endsWith("/refresh"))).toHaveLength(1);
    expect(one).toBe("t1");
    expect(two).toBe("t1");
  });

  it("a server error on refresh is thrown, not taken for a signed-out session", async () => {
    const session = new Session({
      base: () => "http://api",
      fetch: async () => json(503, { detail: "auth is unavailable", service: "auth" }),
      locks: null,
      channel: null,
    });
    (session as unknown as { access: string }).access = "old";
    await expect(session.refresh("old")).rejects.toMatchObject({ status: 503 });
    expect(session.token).toBe("old");
  });
});

describe("a call that checks a password", () => {
  /** The fake server, plus auth's password change: 401 for a refused token or a wrong password alike. */
  function withPassword(options: { refreshFails?: boolean } = {}) {
    const srv = server(options);
    let current = "t0";
    const fetch = async (url: string, init?: RequestInit): Promise<Response> => {
      if (!url.endsWith("/api/v1/auth/password")) {
        const resp = await srv.fetch(url, init);
        if (url.endsWith("/refresh") && resp.ok) current = ((await resp.clone().json()) as { access_token: string }).access_token;
        return resp;
      }
      srv.calls.push("/api/v1/auth/password");
      if (new Headers(init?.headers).get("Authorization") !== `Bearer ${current}`) return json(401, { detail: "The token has expired." });
      const body = JSON.parse(String(init?.body)) as { current_password: string };
      if (body.current_password !== "right") return json(401, { detail: "The current password is not correct." });
      return new Response(null, { status: 204 });
    };
    return { fetch, calls: srv.calls };
  }
  const change = (client: ApiClient, password: string) =>
    client.request("/api/v1/auth/password", { method: "POST", json: { current_password: password, new_password: "n" }, checksPassword: true });

  it("throws a wrong password's 401 as it is: sent once, no retry, still signed in", async () => {
    const srv = withPassword();
    const session = new Session({ base: () => "http://api", fetch: srv.fetch, locks: null, channel: null });
    await session.refresh();
    const heard: boolean[] = [];
    session.subscribe((signedIn) => heard.push(signedIn));
    const client = new ApiClient(session, () => "http://api", srv.fetch);
    await expect(change(client, "wrong")).rejects.toMatchObject({ status: 401, message: "The current password is not correct." });
    expect(srv.calls.filter((p) => p.endsWith("/password"))).toHaveLength(1);
    expect(session.signedIn).toBe(true);
    expect(heard).toEqual([]);
  });

  it("is sent with a token just refreshed, so an expired one is no wrong password", async () => {
    const srv = withPassword();
    const session = new Session({ base: () => "http://api", fetch: srv.fetch, locks: null, channel: null });
    (session as unknown as { access: string }).access = "expired";
    const client = new ApiClient(session, () => "http://api", srv.fetch);
    const resp = await change(client, "right");
    expect(resp.status).toBe(204);
    expect(srv.calls).toEqual(["/api/v1/auth/refresh", "/api/v1/auth/password"]);
  });

  it("is not sent when the session is over", async () => {
    const srv = withPassword({ refreshFails: true });
    const session = new Session({ base: () => "http://api", fetch: srv.fetch, locks: null, channel: null });
    (session as unknown as { access: string }).access = "old";
    const client = new ApiClient(session, () => "http://api", srv.fetch);
    await expect(change(client, "right")).rejects.toBeInstanceOf(SignedOutError);
    expect(srv.calls.filter((p) => p.endsWith("/password"))).toHaveLength(0);
  });
});

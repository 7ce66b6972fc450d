/** The signed-in session: the access token in memory only, the refresh token in auth's HttpOnly
 * cookie. One refresh at a time: concurrent callers in a tab share one call (single flight), and
 * tabs take turns through a Web Lock; a tab that waited for the lock uses the token another tab
 * just got (shared over a BroadcastChannel) instead of refreshing again. */

import { errorFromResponse, NetworkError } from "./problem";

export interface LockManagerLike {
  request<T>(name: string, callback: () => Promise<T>): Promise<T>;
}

export interface ChannelLike {
  postMessage(message: unknown): void;
  addEventListener(type: "message", listener: (event: MessageEvent) => void): void;
  close?(): void;
}

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface SessionOptions {
  base: () => string;
  fetch?: FetchLike;
  /** navigator.locks by default; null to go without (each tab then refreshes on its own). */
  locks?: LockManagerLike | null;
  /** A BroadcastChannel by default; null to go without. */
  channel?: ChannelLike | null;
}

type Message = { type: "token"; access: string } | { type: "signed-out" };
export type SessionListener = (signedIn: boolean) => void;

const LOCK_NAME = "ultrai-session-refresh";
const CHANNEL_NAME = "ultrai-session";

export class Session {
  private access: string | null = null;
  private inflight: Promise<string | null> | null = null;
  private listeners = new Set<SessionListener>();
  private readonly base: () => string;
  private readonly fetchImpl: FetchLike;
  private readonly locks: LockManagerLike | null;
  private readonly channel: ChannelLike | null;

  constructor(options: SessionOptions) {
    this.base = options.base;
    this.fetchImpl = options.fetch ?? ((input, init) => fetch(input, init));
    this.locks =
      options.locks !== undefined
        ? options.locks
        : typeof navigator !== "undefined" && navigator.locks
          ? (navigator.locks as unknown as LockManagerLike)
          : null;
    this.channel =
      options.channel !== undefined
        ? options.channel
        : typeof BroadcastChannel !== "undefined"
          ? new BroadcastChannel(CHANNEL_NAME)
          : null;
    this.channel?.addEventListener("message", (event) => this.onMessage(event.data as Message));
  }

  get token(): string | null {
    return this.access;
  }

  get signedIn(): boolean {
    return this.access !== null;
  }

  subscribe(listener: SessionListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** A new access token from the refresh cookie, or null when the session is over. `stale` is the
   * token a request was refused with: when the session already holds another one (this tab or
   * another refreshed meanwhile), that one is returned without a new refresh. */
  refresh(stale: string | null = null): Promise<string | null> {
    if (this.access !== null && this.access !== stale) return Promise.resolve(this.access);
    if (!this.inflight) {
      this.inflight = this.withLock(async () => {
        // While this tab waited for the lock another tab may have refreshed and shared its token.
        if (this.access !== null && this.access !== stale) return this.access;
        return this.refreshNow();
      }).finally(() => {
        this.inflight = null;
      });
    }
    return this.inflight;
  }

  async login(email: string, password: string): Promise<void> {
    const resp = await this.send("/api/v1/auth/login", {
      method: "POST",
      credentials: "include",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email, password, cookie: true }),
    });
    if (!resp.ok) throw await errorFromResponse(resp);
    const body = (await resp.json()) as { access_token: string };
    this.setToken(body.access_token, true);
  }

  async register(email: string, password: string): Promise<void> {
    const resp = await this.send("/api/v1/auth/register", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ email, password }),
    });
    if (!resp.ok) throw await errorFromResponse(resp);
  }

  /** Ends the session at auth (the cookie is cleared) and here, in every tab. */
  async logout(): Promise<void> {
    try {
      await this.send("/api/v1/auth/logout", { method: "POST", credentials: "include" });
    } finally {
      this.clear(true);
    }
  }

  /** Forget the token (the server refused it and refreshing failed). */
  clear(broadcast = false): void {
    const was = this.access !== null;
    this.access = null;
    if (broadcast) this.channel?.postMessage({ type: "signed-out" } satisfies Message);
    if (was || broadcast) this.emit(false);
  }

  private async refreshNow(): Promise<string | null> {
    const resp = await this.send("/api/v1/auth/refresh", { method: "POST", credentials: "include" });
    if (resp.ok) {
      const body = (await resp.json()) as { access_token: string };
      this.setToken(body.access_token, true);
      return body.access_token;
    }
    if (resp.status === 400 || resp.status === 401 || resp.status === 403) {
      this.clear();
      return null;
    }
    // The server is down or throttling: the session may well be fine; say so instead of signing out.
    throw await errorFromResponse(resp);
  }

  private setToken(access: string, broadcast: boolean): void {
    const was = this.access !== null;
    this.access = access;
    if (broadcast) this.channel?.postMessage({ type: "token", access } satisfies Message);
    if (!was) this.emit(true);
  }

  private onMessage(message: Message): void {
    if (message?.type === "token" && typeof message.access === "string") this.setToken(message.access, false);
    else if (message?.type === "signed-out") this.clear();
  }

  private emit(signedIn: boolean): void {
    for (const listener of [...this.listeners]) listener(signedIn);
  }

  private withLock<T>(work: () => Promise<T>): Promise<T> {
    return this.locks ? this.locks.request(LOCK_NAME, work) : work();
  }

  private async send(path: string, init: RequestInit): Promise<Response> {
    try {
      return await this.fetchImpl(this.base() + path, init);
    } catch (err) {
      if (typeof err === "object" && err !== null && (err as { name?: string }).name === "AbortError") throw err;
      throw new NetworkError(err);
    }
  }
}

/** Calls to the API with the session's access token: on a 401 the token is refreshed (one refresh
 * shared by every caller) and the call is sent once more (not a call that checks a password: see
 * `checksPassword`). Unsuccessful answers become ApiError, a failed network NetworkError, an ended
 * session SignedOutError. */

import { errorFromResponse, NetworkError, SignedOutError } from "./problem";
import type { Session } from "./session";

type FetchLike = (input: string, init?: RequestInit) => Promise<Response>;

export interface RequestOptions extends Omit<RequestInit, "body"> {
  /** Sent as JSON (with its Content-Type). */
  json?: unknown;
  body?: BodyInit | null;
  /** The call checks the account's password (changing it, deleting the account): its 401 may be
   * the answer, a wrong password, which auth words like a refused token. The call is sent once,
   * with a token just refreshed, and a 401 is thrown as the ApiError it is: not refreshed and
   * sent again (the attempt would count twice against the throttle), and not a signing-out. */
  checksPassword?: boolean;
}

export class ApiClient {
  constructor(
    readonly session: Session,
    readonly base: () => string,
    private readonly fetchImpl: FetchLike = (input, init) => fetch(input, init),
  ) {}

  url(path: string): string {
    return path.startsWith("http") ? path : this.base() + path;
  }

  /** The access token to send now, refreshing the session when there is none. */
  async accessToken(): Promise<string> {
    const token = this.session.token ?? (await this.session.refresh(null));
    if (!token) throw new SignedOutError();
    return token;
  }

  /** The answer of a successful call (2xx); throws for anything else. */
  async request(path: string, { checksPassword, ...options }: RequestOptions = {}): Promise<Response> {
    if (checksPassword) {
      // A token of the session as it is now (null: it is over), so the 401 can only be the password's.
      const fresh = await this.session.refresh(this.session.token);
      if (!fresh) throw new SignedOutError();
      const resp = await this.send(path, options, fresh);
      if (!resp.ok) throw await errorFromResponse(resp);
      return resp;
    }
    let token = await this.accessToken();
    let resp = await this.send(path, options, token);
    if (resp.status === 401) {
      const fresh = await this.session.refresh(token);
      if (!fresh) throw new SignedOutError();
      token = fresh;
      resp = await this.send(path, options, token);
      if (resp.status === 401) {
        this.session.clear();
        throw new SignedOutError();
      }
    }
    if (!resp.ok) throw await errorFromResponse(resp);
    return resp;
  }

  async json<T>(path: string, options: RequestOptions = {}): Promise<T> {
    const resp = await this.request(path, options);
    if (resp.status === 204) return undefined as T;
    return (await resp.json()) as T;
  }

  private async send(path: string, options: RequestOptions, token: string): Promise<Response> {
    const { json, headers, body, ...rest } = options;
    const all = new Headers(headers);
    all.set("Authorization", `Bearer ${token}`);
    let payload = body;
    if (json !== undefined) {
      all.set("Content-Type", "application/json");
      payload = JSON.stringify(json);
    }
    try {
      return await this.fetchImpl(this.url(path), { ...rest, headers: all, body: payload });
    } catch (err) {
      if (isAbort(err)) throw err;
      throw new NetworkError(err);
    }
  }
}

export function isAbort(err: unknown): boolean {
  return typeof err === "object" && err !== null && (err as { name?: string }).name === "AbortError";
}

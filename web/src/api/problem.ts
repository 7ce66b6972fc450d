/** Errors from the API (application/problem+json, RFC 9457) and from the network, as values a
 * page can show a person. */

export interface FieldError {
  field: string;
  message: string;
  type?: string;
}

export interface Problem {
  type?: string;
  title?: string;
  status?: number;
  detail?: string;
  request_id?: string;
  errors?: FieldError[];
  service?: string;
  [key: string]: unknown;
}

const STATUS_TEXT: Record<number, string> = {
  400: "The request was not accepted.",
  401: "You are not signed in.",
  403: "You are not allowed to do that.",
  404: "Not found.",
  409: "That conflicts with something that already exists.",
  413: "That is too large.",
  415: "That type of file is not supported.",
  422: "Some of what you entered is not valid.",
  429: "Too many requests.",
  500: "Something went wrong on the server.",
  502: "A service did not answer properly.",
  503: "A service is unavailable.",
  504: "A service took too long to answer.",
};

export class ApiError extends Error {
  readonly status: number;
  readonly problem: Problem;
  /** Seconds to wait before retrying (the Retry-After header), when the answer gave one. */
  readonly retryAfter: number | null;
  readonly requestId: string | null;

  constructor(status: number, problem: Problem, retryAfter: number | null, requestId: string | null) {
    super(messageOf(status, problem));
    this.name = "ApiError";
    this.status = status;
    this.problem = problem;
    this.retryAfter = retryAfter;
    this.requestId = requestId;
  }

  /** The service a 502/503/504 names, if any. */
  get service(): string | null {
    return typeof this.problem.service === "string" ? this.problem.service : null;
  }

  /** The fields the API refused: its `errors` list, or else the one field a 422's detail names
   * ("Invalid request: new_password: …", as auth refuses a password the policy does not allow). */
  get fieldErrors(): FieldError[] {
    if (Array.isArray(this.problem.errors)) return this.problem.errors;
    const named = this.status === 422 && typeof this.problem.detail === "string" ? /^Invalid request: ([\w.]+): (.+)$/s.exec(this.problem.detail.trim()) : null;
    return named ? [{ field: named[1], message: named[2] }] : [];
  }
}

/** The network failed (offline, DNS, an origin the API does not allow): no answer to read. */
export class NetworkError extends Error {
  constructor(cause?: unknown) {
    super("Cannot reach the server. Check your connection and try again.");
    this.name = "NetworkError";
    if (cause !== undefined) (this as { cause?: unknown }).cause = cause;
  }
}

/** The session is over (refresh failed): the person has to sign in again. */
export class SignedOutError extends Error {
  constructor() {
    super("Your session has ended. Please sign in again.");
    this.name = "SignedOutError";
  }
}

function messageOf(status: number, problem: Problem): string {
  const detail = typeof problem.detail === "string" && problem.detail.trim() ? problem.detail.trim() : "";
  let text = detail || STATUS_TEXT[status] || (typeof problem.title === "string" ? problem.title : "") || `HTTP ${status}`;
  const errors = Array.isArray(problem.errors) ? problem.errors : [];
  if (errors.length && !detail) {
    text += " " + errors.map((e) => `${fieldName(e.field)}: ${e.message}`).join("; ");
  }
  return text;
}

/** "body.email" -> "email". */
export function fieldName(field: string): string {
  return field.replace(/^(body|query|path|header)\./, "");
}

/** Seconds from a Retry-After header: a number of seconds or an HTTP date. */
export function parseRetryAfter(value: string | null, now: number = Date.now()): number | null {
  if (!value) return null;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return parseInt(trimmed, 10);
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return null;
  return Math.max(0, Math.ceil((date - now) / 1000));
}

/** The error an unsuccessful answer stands for, read from its problem+json body (or whatever
 * body it has: a proxy's HTML page, nothing at all). */
export async function errorFromResponse(resp: Response): Promise<ApiError> {
  let problem: Problem = {};
  const type = resp.headers.get("Content-Type") ?? "";
  try {
    const text = await resp.text();
    if (text && (type.includes("json") || /^\s*\{/.test(text))) {
      const parsed: unknown = JSON.parse(text);
      if (parsed && typeof parsed === "object" && !Array.isArray(parsed)) problem = parsed as Problem;
    }
  } catch {
    // Not JSON: keep the status alone.
  }
  // OpenAI-style bodies carry the message in error.message.
  if (!problem.detail && problem.error && typeof problem.error === "object") {
    const message = (problem.error as { message?: unknown }).message;
    if (typeof message === "string") problem = { ...problem, detail: message };
  }
  const requestId = resp.headers.get("X-Request-ID") ?? (typeof problem.request_id === "string" ? problem.request_id : null);
  return new ApiError(resp.status, problem, parseRetryAfter(resp.headers.get("Retry-After")), requestId);
}

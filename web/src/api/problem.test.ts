import { describe, expect, it } from "vitest";
import { ApiClient } from "./client";
import { ApiError, errorFromResponse, NetworkError, parseRetryAfter } from "./problem";
import { Session } from "./session";

const problem = (status: number, body: unknown, headers: Record<string, string> = {}) =>
  new Response(JSON.stringify(body), {
    status,
    headers: { "Content-Type": "application/problem+json", ...headers },
  });

describe("errorFromResponse", () => {
  it("reads detail, status, request id and Retry-After from a problem+json body", async () => {
    const err = await errorFromResponse(
      problem(429, { title: "Too Many Requests", status: 429, detail: "Slow down.", request_id: "abc" }, {
        "Retry-After": "7",
        "X-Request-ID": "abc",
      }),
    );
    expect(err).toBeInstanceOf(ApiError);
    expect(err.status).toBe(429);
    expect(err.message).toBe("Slow down.");
    expect(err.retryAfter).toBe(7);
    expect(err.requestId).toBe("abc");
  });

  it("names the fields of a validation failure when there is no detail", async () => {
    const err = await errorFromResponse(
      problem(422, {
        title: "Unprocessable Content",
        errors: [{ field: "body.email", message: "value is not a valid email address", type: "value_error" }],
      }),
    );
    expect(err.message).toContain("email: value is not a valid email address");
    expect(err.fieldErrors).toHaveLength(1);
  });

  it("reads the field a 422's detail names when the body has no errors list", async () => {
    const err = await errorFromResponse(
      problem(422, { title: "Validation failed", detail: "Invalid request: new_password: The password must have at least 8 characters." }),
    );
    expect(err.message).toBe("Invalid request: new_password: The password must have at least 8 characters.");
    expect(err.fieldErrors).toEqual([{ field: "new_password", message: "The password must have at least 8 characters." }]);
    // Only a 422's, and only a detail of that form.
    expect((await errorFromResponse(problem(400, { detail: "Invalid request: name: too long" }))).fieldErrors).toEqual([]);
    expect((await errorFromResponse(problem(422, { detail: "The analysis is not finished." }))).fieldErrors).toEqual([]);
  });

  it("reads the service a 503 names", async () => {
    const err = await errorFromResponse(problem(503, { detail: "The llm service is unavailable.", service: "llm" }));
    expect(err.service).toBe("llm");
  });

  it("reads an OpenAI-style error member", async () => {
    const err = await errorFromResponse(problem(404, { error: { message: "The model 'x' does not exist." } }));
    expect(err.message).toBe("The model 'x' does not exist.");
  });

  it("falls back to a sentence for the status when the body is not JSON", async () => {
    const err = await errorFromResponse(new Response("<html>bad gateway</html>", { status: 502, headers: { "Content-Type": "text/html" } }));
    expect(err.status).toBe(502);
    expect(err.message).toBe("A service did not answer properly.");
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    expect(parseRetryAfter("12")).toBe(12);
    expect(parseRetryAfter(null)).toBeNull();
    expect(parseRetryAfter("soon")).toBeNull();
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(parseRetryAfter("Thu, 01 Jan 2026 00:00:30 GMT", now)).toBe(30);
  });
});

describe("ApiClient errors", () => {
  const session = () => {
    const s = new Session({ base: () => "http://api", locks: null, channel: null, fetch: async () => new Response(null, { status: 401 }) });
    return s;
  };

  it("throws the problem of an unsuccessful answer", async () => {
    const s = session();
    (s as unknown as { access: string }).access = "t";
    const client = new ApiClient(s, () => "http://api", async () => problem(413, { detail: "The file is over 25 MiB." }));
    await expect(client.json("/api/v1/documents")).rejects.toMatchObject({ status: 413, message: "The file is over 25 MiB." });
  });

  it("turns a failed fetch into a NetworkError", async () => {
    const s = session();
    (s as unknown as { access: string }).access = "t";
    const client = new ApiClient(s, () => "http://api", async () => {
      throw new TypeError("Failed to fetch");
    });
    await expect(client.json("/x")).rejects.toBeInstanceOf(NetworkError);
  });
});

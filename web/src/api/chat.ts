/** Streaming chat completions (OpenAI wire format) from a fetch answer. */

import { ApiError } from "./problem";
import type { SSEEvent } from "./sse";

export interface ChatUsage {
  prompt_tokens: number;
  completion_tokens: number;
  total_tokens?: number;
}

export type ChatPiece = { type: "text"; text: string } | { type: "usage"; usage: ChatUsage } | { type: "done" };

/** What one server-sent event of a chat completion stream means; an `error` member becomes an
 * ApiError (the stream had already started, so its status is 200 and the error is in the data). */
export function chatPiece(event: SSEEvent): ChatPiece | null {
  if (event.data === "[DONE]") return { type: "done" };
  let body: unknown;
  try {
    body = JSON.parse(event.data);
  } catch {
    return null;
  }
  if (!body || typeof body !== "object") return null;
  const b = body as {
    error?: { message?: string; type?: string; code?: string | null };
    choices?: { delta?: { content?: string | null } }[];
    usage?: ChatUsage;
  };
  if (b.error) {
    const status = b.error.code === "rate_limit_exceeded" ? 429 : 502;
    throw new ApiError(status, { detail: b.error.message ?? "The model failed.", title: b.error.type }, null, null);
  }
  if (b.usage) return { type: "usage", usage: b.usage };
  const text = b.choices?.[0]?.delta?.content;
  return text ? { type: "text", text } : null;
}

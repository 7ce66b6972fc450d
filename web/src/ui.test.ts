import { describe, expect, it } from "vitest";
import { chatPiece } from "./api/chat";
import { ApiError } from "./api/problem";
import type { AnalysisEstimate, AnalysisOut } from "./api/types";
import { renderMarkdown } from "./components/MarkdownView";
import { safeNext } from "./next";
import { noticeOf, signInWith, withoutNotice } from "./notice";
import { analysisBody, estimateText } from "./pages/AnalysisForm";
import { analysisMarkdown } from "./pages/exportMarkdown";
import { dailyBars, dayRange, niceMax } from "./pages/usageChart";

describe("renderMarkdown", () => {
  it("shows raw HTML as text, never as markup", () => {
    const html = renderMarkdown("Hi <img src=x onerror=alert(1)> and <script>alert(2)</script>\n\n<div onclick=x>block</div>");
    expect(html).not.toMatch(/<img|<script|<div/);
    expect(html).toContain("&lt;img src=x onerror=alert(1)&gt;");
    expect(html).toContain("&lt;script&gt;");
  });

  it("renders Markdown, and refuses javascript: links", () => {
    const html = renderMarkdown("**bold**\n\n- a\n- b\n\n[ok](https://example.com) [bad](javascript:alert(1))");
    expect(html).toContain("<strong>bold</strong>");
    expect(html).toContain("<li>a</li>");
    expect(html).toContain('href="https://example.com"');
    expect(html).toContain('rel="noopener noreferrer nofollow"');
    expect(html).not.toContain("javascript:alert(1)\"");
    expect(html).not.toMatch(/href="javascript/i);
  });
});

describe("chatPiece", () => {
  const ev = (data: string) => ({ event: "message", data, id: "", hasId: false });
  it("reads content deltas, usage and [DONE]", () => {
    expect(chatPiece(ev('{"choices":[{"delta":{"content":"Hi"}}]}'))).toEqual({ type: "text", text: "Hi" });
    expect(chatPiece(ev('{"choices":[{"delta":{"role":"assistant","content":""}}]}'))).toBeNull();
    expect(chatPiece(ev('{"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":4}}'))).toEqual({
      type: "usage",
      usage: { prompt_tokens: 3, completion_tokens: 4 },
    });
    expect(chatPiece(ev("[DONE]"))).toEqual({ type: "done" });
  });
  it("turns an error in the stream into an ApiError with its message", () => {
    expect(() => chatPiece(ev('{"error":{"message":"The provider failed.","type":"server_error","code":null}}'))).toThrow(ApiError);
    expect(() => chatPiece(ev('{"error":{"message":"The provider failed.","type":"server_error","code":null}}'))).toThrow("The provider failed.");
  });
});

describe("safeNext", () => {
  it("returns paths of this app only", () => {
    expect(safeNext("?next=%2Fdocuments%2Fabc")).toBe("/documents/abc");
    expect(safeNext("?next=https%3A%2F%2Fevil.example")).toBe("/documents");
    expect(safeNext("?next=%2F%2Fevil.example")).toBe("/documents");
    expect(safeNext("?next=%2F%5Cevil.example")).toBe("/documents");
    expect(safeNext("?next=%2Fsignin")).toBe("/documents");
    expect(safeNext("")).toBe("/documents");
  });
});

describe("sign-in notices", () => {
  it("says what the app sent the person to sign-in for, and nothing a link makes up", () => {
    expect(noticeOf(signInWith("password-changed").slice("/signin".length))).toBe("Password changed: sign in with the new one.");
    expect(noticeOf("?notice=account-deleted")).toMatch(/^Your account was deleted/);
    expect(noticeOf("?notice=Your%20bank%20called")).toBeNull();
    expect(noticeOf("?notice=toString")).toBeNull();
    expect(noticeOf("?next=%2Fchat")).toBeNull();
  });

  it("is not carried over by the links between sign-in and sign-up", () => {
    expect(withoutNotice("?notice=account-deleted")).toBe("");
    expect(withoutNotice("?notice=account-deleted&next=%2Fchat")).toBe("?next=%2Fchat");
    expect(withoutNotice("?next=%2Fchat")).toBe("?next=%2Fchat");
    expect(withoutNotice("")).toBe("");
  });
});

describe("usage chart", () => {
  it("makes one bar per day, empty days included, models stacked in a stable order", () => {
    const days = dayRange(3, new Date("2026-03-02T12:00:00Z"));
    expect(days).toEqual(["2026-02-28", "2026-03-01", "2026-03-02"]);
    const rows = [
      { day: "2026-02-28", model: "b", prompt_tokens: 10, completion_tokens: 5, cost_usd: 0.5, requests: 1 },
      { day: "2026-02-28", model: "a", prompt_tokens: 1, completion_tokens: 1, cost_usd: 0.25, requests: 1 },
      { day: "2026-03-02", model: "a", prompt_tokens: 100, completion_tokens: 0, cost_usd: 1, requests: 2 },
    ];
    const tokens = dailyBars(rows, days, "tokens");
    expect(tokens.models).toEqual(["a", "b"]);
    expect(tokens.bars.map((b) => b.total)).toEqual([17, 0, 100]);
    expect(tokens.bars[0].segments.map((s) => s.model)).toEqual(["a", "b"]);
    expect(tokens.max).toBe(100);
    expect(dailyBars(rows, days, "cost").bars.map((b) => b.total)).toEqual([0.75, 0, 1]);
  });
  it("rounds the axis up to 1, 2 or 5 times a power of ten", () => {
    expect(niceMax(0)).toBe(1);
    expect(niceMax(17)).toBe(20);
    expect(niceMax(100)).toBe(100);
    expect(niceMax(0.3)).toBe(0.5);
    expect(niceMax(501)).toBe(1000);
  });
});

describe("analysisMarkdown", () => {
  it("puts the synthesis first, then each model with its figures or its error", () => {
    const analysis: AnalysisOut = {
      id: "an1",
      document_id: "d1",
      kind: "qa",
      params: { question: "Who?", models: ["m/a", "m/b"], synthesis_model: "m/a" },
      status: "completed",
      stage: null,
      result: {
        answer: "Both.",
        synthesis: { model: "m/a", status: "ok", text: "Both.", error: null, latency_ms: 12, prompt_tokens: 1, completion_tokens: 2, cost_usd: 0.001 },
        models: [
          { model: "m/a", status: "ok", text: "Acme.", error: null, latency_ms: 5, prompt_tokens: 3, completion_tokens: 4, cost_usd: 0 },
          { model: "m/b", status: "error", text: null, error: "timed out", latency_ms: 9, prompt_tokens: 0, completion_tokens: 0, cost_usd: 0 },
        ],
        usage: { prompt_tokens: 4, completion_tokens: 6, cost_usd: 0.001 },
      },
      error: null,
      prompt_tokens: 4,
      completion_tokens: 6,
      cost_usd: 0.001,
      created_at: "2026-01-01T00:00:00",
      started_at: null,
      finished_at: "2026-01-01T00:00:05",
      links: {},
    };
    const md = analysisMarkdown(analysis, "contract.pdf");
    expect(md.startsWith("# Question of contract.pdf\n")).toBe(true);
    expect(md.indexOf("## Synthesis (m/a)")).toBeLessThan(md.indexOf("## m/a"));
    expect(md).toContain("## Question\n\nWho?");
    expect(md).toContain("## m/b\n\n_0 prompt + 0 completion tokens · $0.000000 · 9 ms_\n\nFailed: timed out");
  });
});

describe("the new-analysis form's estimate", () => {
  const estimate = (over: Partial<AnalysisEstimate>, budget: Partial<AnalysisEstimate["budget"]> = {}): AnalysisEstimate => ({
    models: ["a", "b"],
    synthesis_model: null,
    map_reduce: null,
    orchestrations: 2,
    orchestrations_per_step: { answer: 2 },
    calls: 2,
    refused: {},
    input_tokens: { low: 100, high: 100 },
    output_tokens: 50,
    cost_usd: { low: 0.0001, high: 0.0003 },
    wall_time_ms: null,
    ...over,
    budget: {
      usd_per_day: 1,
      key_usd_per_day: null,
      remaining_usd: 0.5,
      fits: true,
      over_by_usd: null,
      tokens_per_day: null,
      remaining_tokens: null,
      fits_tokens: true,
      ...budget,
    },
  });

  it("asks with the body the start sends: the kind's own field only, trimmed", () => {
    const choices = { kind: "extract" as const, question: "ignored", instruction: "", fields: " party,\ndate , ", models: ["a"], synthesisModel: null, fresh: false };
    expect(analysisBody(choices)).toEqual({ kind: "extract", models: ["a"], fresh: false, fields: ["party", "date"], synthesis_model: null });
    expect(analysisBody({ ...choices, kind: "qa", question: " why? ", synthesisModel: "s" })).toEqual({
      kind: "qa",
      models: ["a"],
      fresh: false,
      question: "why?",
      synthesis_model: "s",
    });
  });

  it("says the cost range, the calls and whether it fits", () => {
    const text = estimateText(estimate({}));
    expect(text.cost).toBe("$0.000100 to $0.000300");
    expect(text.plan).toBe("2 model calls");
    expect(text.fits).toBe(true);
    expect(text.budget).toBe("Fits your budget ($0.50 left today).");
  });

  it("names a long document's parts, the time, the models it is too long for, and an overrun", () => {
    const text = estimateText(
      estimate(
        { map_reduce: { chunks: 12 }, calls: 13, wall_time_ms: 2500, refused: { small: "too long" }, cost_usd: { low: 2, high: 2 } },
        { remaining_usd: 1, fits: false, over_by_usd: 1 },
      ),
    );
    expect(text.cost).toBe("about $2.00");
    expect(text.plan).toBe("13 model calls, the document read in 12 parts, about 2.5 s; too long for small");
    expect(text.fits).toBe(false);
    expect(text.budget).toBe("Over your budget by $1.00 ($1.00 left today): it would be refused.");
    expect(estimateText(estimate({}, { remaining_usd: null })).budget).toBe("No budget limit applies.");
  });
});

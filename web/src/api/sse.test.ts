import { describe, expect, it } from "vitest";
import { readEvents, SSEParser } from "./sse";

describe("SSEParser", () => {
  it("reads id, event and data lines of a block", () => {
    const p = new SSEParser();
    expect(p.push('id: 3\nevent: model\ndata: {"a":1}\n\n')).toEqual([{ event: "model", data: '{"a":1}', id: "3", hasId: true }]);
  });

  it("joins multi-line data with newlines and defaults the type to message", () => {
    const p = new SSEParser();
    expect(p.push("data: one\ndata:two\ndata\n\n")).toEqual([{ event: "message", data: "one\ntwo\n", id: "", hasId: false }]);
  });

  it("keeps blocks and lines split across chunks", () => {
    const p = new SSEParser();
    const text = 'id: 1\nevent: status\ndata: {"status":"running"}\n\nid: 2\nevent: stage\ndata: {"stage":"models"}\n\n';
    const out = [];
    for (const ch of text) out.push(...p.push(ch));
    expect(out.map((e) => [e.id, e.event, e.data])).toEqual([
      ["1", "status", '{"status":"running"}'],
      ["2", "stage", '{"stage":"models"}'],
    ]);
  });

  it("ignores comments (keep-alives) and blocks without data", () => {
    const p = new SSEParser();
    expect(p.push(": keep-alive\n\n")).toEqual([]);
    expect(p.push("event: nothing\n\n")).toEqual([]);
    expect(p.push(":c\ndata: x\n\n")).toEqual([{ event: "message", data: "x", id: "", hasId: false }]);
  });

  it("handles CRLF and CR line ends, also when CRLF is split between chunks", () => {
    const p = new SSEParser();
    const out = [...p.push("data: a\r"), ...p.push("\n\r\n"), ...p.push("data: b\r\r")];
    expect(out.map((e) => e.data)).toEqual(["a", "b"]);
  });

  it("keeps the last id across blocks until changed, and drops an unterminated block", () => {
    const p = new SSEParser();
    const out = p.push("id: 7\ndata: a\n\ndata: b\n\ndata: c");
    expect(out.map((e) => [e.id, e.hasId])).toEqual([
      ["7", true],
      ["7", false],
    ]);
    expect(p.end()).toEqual([]);
    expect(p.lastEventId).toBe("7");
  });

  it("reads the OpenAI chunks and [DONE] from a fetch body", async () => {
    const enc = new TextEncoder();
    const parts = ['data: {"choices":[{"delta":{"content":"He', 'llo"}}]}\n\ndata: [DONE]\n\n'];
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        for (const part of parts) controller.enqueue(enc.encode(part));
        controller.close();
      },
    });
    const events = [];
    for await (const e of readEvents(body)) events.push(e.data);
    expect(events).toEqual(['{"choices":[{"delta":{"content":"Hello"}}]}', "[DONE]"]);
  });

  it("decodes a multi-byte character split between chunks", async () => {
    const bytes = new TextEncoder().encode("data: café\n\n");
    const body = new ReadableStream<Uint8Array>({
      start(controller) {
        controller.enqueue(bytes.slice(0, 9));
        controller.enqueue(bytes.slice(9));
        controller.close();
      },
    });
    const events = [];
    for await (const e of readEvents(body)) events.push(e.data);
    expect(events).toEqual(["café"]);
  });
});

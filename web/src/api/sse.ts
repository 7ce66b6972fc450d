/** A parser for server-sent events (the text/event-stream format of the HTML standard), fed the
 * text of a stream in chunks of any size: a line or a block may be split across chunks. */

export interface SSEEvent {
  /** The event's type: "message" unless an `event:` line names it. */
  event: string;
  /** The `data:` lines joined with "\n". */
  data: string;
  /** The last event id seen on the stream so far (ids persist until changed). */
  id: string;
  /** Whether this block itself had an `id:` line. */
  hasId: boolean;
}

export class SSEParser {
  private buffer = "";
  private data: string[] = [];
  private eventType = "";
  private lastId = "";
  private blockHasId = false;
  private sawCR = false;

  /** Feeds a chunk; returns the events completed by it. */
  push(chunk: string): SSEEvent[] {
    const out: SSEEvent[] = [];
    let text = chunk;
    // A "\r\n" split across two chunks: the "\n" belongs to the line the "\r" ended.
    if (this.sawCR && text.startsWith("\n")) text = text.slice(1);
    this.sawCR = false;
    this.buffer += text;
    let start = 0;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i];
      if (ch !== "\n" && ch !== "\r") continue;
      const line = this.buffer.slice(start, i);
      if (ch === "\r") {
        if (i + 1 < this.buffer.length) {
          if (this.buffer[i + 1] === "\n") i++;
        } else {
          this.sawCR = true;
        }
      }
      start = i + 1;
      this.line(line, out);
    }
    this.buffer = this.buffer.slice(start);
    return out;
  }

  /** The stream ended: an unterminated last block is dropped, as the standard says. */
  end(): SSEEvent[] {
    this.buffer = "";
    this.data = [];
    this.eventType = "";
    this.blockHasId = false;
    return [];
  }

  get lastEventId(): string {
    return this.lastId;
  }

  private line(line: string, out: SSEEvent[]): void {
    if (line === "") {
      this.dispatch(out);
      return;
    }
    if (line.startsWith(":")) return; // a comment (keep-alive)
    const colon = line.indexOf(":");
    let field = line;
    let value = "";
    if (colon >= 0) {
      field = line.slice(0, colon);
      value = line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
    }
    switch (field) {
      case "data":
        this.data.push(value);
        break;
      case "event":
        this.eventType = value;
        break;
      case "id":
        if (!value.includes("\0")) {
          this.lastId = value;
          this.blockHasId = true;
        }
        break;
      default:
        // "retry" and unknown fields are ignored.
        break;
    }
  }

  private dispatch(out: SSEEvent[]): void {
    const hasId = this.blockHasId;
    this.blockHasId = false;
    if (this.data.length === 0) {
      this.eventType = "";
      return;
    }
    out.push({ event: this.eventType || "message", data: this.data.join("\n"), id: this.lastId, hasId });
    this.data = [];
    this.eventType = "";
  }
}

/** The events of a fetch() answer's body, as they arrive. */
export async function* readEvents(body: ReadableStream<Uint8Array>, signal?: AbortSignal): AsyncGenerator<SSEEvent> {
  const reader = body.getReader();
  const decoder = new TextDecoder();
  const parser = new SSEParser();
  let finished = false;
  try {
    while (!signal?.aborted) {
      const { value, done } = await reader.read();
      if (done) {
        finished = true;
        break;
      }
      for (const event of parser.push(decoder.decode(value, { stream: true }))) yield event;
    }
    if (finished) for (const event of parser.push(decoder.decode())) yield event;
  } finally {
    // Left early (the caller stopped, or aborted): let the connection go.
    if (!finished) await reader.cancel().catch(() => undefined);
    reader.releaseLock();
  }
}

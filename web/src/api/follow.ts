/** Following an analysis' event stream through EventSource with single-use tickets.
 *
 * A ticket is spent when the stream opens, so EventSource's own reconnection cannot work: on an
 * error the source is closed, a new ticket fetched and a new source opened. A new stream starts
 * again from the first event, so ids already handled are skipped. */

export interface EventSourceLike {
  addEventListener(type: string, listener: (event: MessageEvent) => void): void;
  onerror: ((event: Event) => void) | null;
  close(): void;
}

export interface FollowOptions {
  /** The event names to listen for. */
  events: readonly string[];
  /** Events after which the stream is over. */
  terminal: readonly string[];
  /** A fresh ticket (called before every connection). */
  ticket: () => Promise<string>;
  /** Opens a source with the ticket. `lastEventId` is the last id handled: a transport that can
   * send it (Last-Event-ID) resumes after it; EventSource with a ticket starts over, and the ids
   * seen are skipped here. */
  connect: (ticket: string, lastEventId: string | null) => EventSourceLike;
  onEvent: (event: string, data: unknown, id: string) => void;
  /** The connection dropped (or a ticket could not be had) and is being retried; attempt >= 1. */
  onRetry?: (attempt: number, error: unknown) => void;
  /** Giving up (too many failures, or an error retrying cannot help). */
  onFatal?: (error: unknown) => void;
  /** Whether an error from ticket() is worth retrying (default: yes). */
  retryable?: (error: unknown) => boolean;
  /** Milliseconds before the attempt-th retry (default 1 s, 2 s, 4 s … up to 15 s), or the wait
   * the error itself asks for. */
  delay?: (attempt: number, error: unknown) => number;
  maxAttempts?: number;
  sleep?: (ms: number) => Promise<void>;
}

export interface Follower {
  close(): void;
  /** Settles when the stream reached a terminal event, was closed, or gave up. */
  readonly done: Promise<void>;
  readonly seen: ReadonlySet<string>;
}

const defaultDelay = (attempt: number): number => Math.min(15000, 1000 * 2 ** (attempt - 1));
const defaultSleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

export function followStream(options: FollowOptions): Follower {
  const seen = new Set<string>();
  let lastId: string | null = null;
  let closed = false;
  let source: EventSourceLike | null = null;
  let failures = 0;
  const maxAttempts = options.maxAttempts ?? 8;
  const delay = options.delay ?? defaultDelay;
  const sleep = options.sleep ?? defaultSleep;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    finish = resolve;
  });

  const stop = (): void => {
    if (closed) return;
    closed = true;
    source?.close();
    source = null;
    finish();
  };

  const retry = async (error: unknown): Promise<void> => {
    failures += 1;
    if (failures > maxAttempts || (options.retryable && !options.retryable(error))) {
      stop();
      options.onFatal?.(error);
      return;
    }
    options.onRetry?.(failures, error);
    await sleep(delay(failures, error));
    if (!closed) void open();
  };

  const open = async (): Promise<void> => {
    let ticket: string;
    try {
      ticket = await options.ticket();
    } catch (error) {
      if (!closed) await retry(error);
      return;
    }
    if (closed) return;
    const current = options.connect(ticket, lastId);
    source = current;
    for (const name of options.events) {
      current.addEventListener(name, (event: MessageEvent) => {
        if (closed || source !== current) return;
        const id = event.lastEventId ?? "";
        if (id) {
          if (seen.has(id)) return;
          seen.add(id);
          lastId = id;
        }
        failures = 0;
        let data: unknown = event.data;
        try {
          data = JSON.parse(event.data as string);
        } catch {
          // Not JSON: hand over the text.
        }
        options.onEvent(name, data, id);
        if (options.terminal.includes(name)) stop();
      });
    }
    current.onerror = (event: Event) => {
      if (closed || source !== current) return;
      current.close();
      source = null;
      void retry(event);
    };
  };

  void open();
  return { close: stop, done, seen };
}

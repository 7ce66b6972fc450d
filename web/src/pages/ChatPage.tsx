import { useEffect, useRef, useState, type FormEvent, type KeyboardEvent } from "react";
import { api } from "../api";
import { chatPiece, type ChatUsage } from "../api/chat";
import { isAbort } from "../api/client";
import { readEvents } from "../api/sse";
import { ErrorMessage } from "../components/ErrorMessage";
import { Markdown } from "../components/Markdown";
import { useDraft, usePageHeading } from "../hooks";

interface OpenAIModel {
  id: string;
  owned_by?: string;
  status?: string;
}

interface Message {
  role: "user" | "assistant";
  content: string;
  model?: string;
  usage?: ChatUsage;
  stopped?: boolean;
}

export function ChatPage() {
  const heading = usePageHeading("Chat");
  const [models, setModels] = useState<OpenAIModel[] | null>(null);
  const [modelsError, setModelsError] = useState<unknown>(null);
  const [model, setModel] = useDraft("chat:model", "");
  const [message, setMessage] = useDraft("chat:message", "");
  const [messages, setMessages, clearMessages] = useDraft<Message[]>("chat:messages", []);
  const [streaming, setStreaming] = useState(false);
  const [error, setError] = useState<unknown>(null);
  const abort = useRef<AbortController | null>(null);
  const messageBox = useRef<HTMLTextAreaElement>(null);

  const loadModels = async () => {
    setModelsError(null);
    try {
      const list = await api.json<{ data: OpenAIModel[] }>("/v1/models");
      setModels(list.data);
    } catch (err) {
      setModelsError(err);
    }
  };

  useEffect(() => {
    void loadModels();
    return () => abort.current?.abort();
  }, []);

  const virtual = (models ?? []).filter((m) => m.id.startsWith("ultrai/"));
  const plain = (models ?? []).filter((m) => !m.id.startsWith("ultrai/"));
  const chosen = model && models?.some((m) => m.id === model) ? model : (plain.find((m) => m.status !== "cooling_down")?.id ?? virtual[0]?.id ?? "");

  const send = async (event?: FormEvent) => {
    event?.preventDefault();
    const text = message.trim();
    if (!text || streaming || !chosen) return;
    setError(null);
    const history: Message[] = [...messages, { role: "user", content: text }];
    const answer: Message = { role: "assistant", content: "", model: chosen };
    setMessages([...history, answer]);
    setMessage("");
    const controller = new AbortController();
    abort.current = controller;
    setStreaming(true);
    let content = "";
    let usage: ChatUsage | undefined;
    const update = (extra: Partial<Message> = {}) => setMessages([...history, { ...answer, content, usage, ...extra }]);
    try {
      const resp = await api.request("/v1/chat/completions", {
        method: "POST",
        json: {
          model: chosen,
          messages: history.map((m) => ({ role: m.role, content: m.content })),
          stream: true,
          stream_options: { include_usage: true },
        },
        headers: { Accept: "text/event-stream" },
        signal: controller.signal,
      });
      if (!resp.body) throw new Error("The answer had no body to stream.");
      for await (const ev of readEvents(resp.body, controller.signal)) {
        const piece = chatPiece(ev);
        if (!piece) continue;
        if (piece.type === "done") break;
        if (piece.type === "usage") usage = piece.usage;
        else content += piece.text;
        update();
      }
      update();
    } catch (err) {
      if (isAbort(err) || controller.signal.aborted) {
        update({ stopped: true });
      } else {
        setError(err);
        // Keep what the person wrote: the message goes back in the box.
        if (!content) {
          setMessages(messages);
          setMessage(text);
        } else update({ stopped: true });
      }
    } finally {
      setStreaming(false);
      abort.current = null;
      messageBox.current?.focus();
    }
  };

  const stop = () => abort.current?.abort();

  const onKeyDown = (event: KeyboardEvent<HTMLTextAreaElement>) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      void send();
    }
  };

  return (
    <main id="main" className="main">
      <h1 ref={heading} tabIndex={-1}>
        Chat
      </h1>
      <p className="hint">
        The <code>ultrai/*</code> models ask several models and combine their answers; the others are single models. Answers stream as they are
        written; Stop ends the request and the calls behind it.
      </p>
      {modelsError !== null && <ErrorMessage error={modelsError} onRetry={loadModels} />}
      {models !== null && models.length === 0 && (
        <div role="alert" className="alert">
          <strong className="alert-heading">No LLM provider is configured. </strong>
          No model is available. Set a provider key (OPENAI_API_KEY, ANTHROPIC_API_KEY, …) or LLM_MODELS_FILE on the llm service, or turn on the demo models.
        </div>
      )}

      <section aria-label="Conversation" className="conversation">
        {messages.length === 0 ? (
          <p className="hint">No messages yet.</p>
        ) : (
          <div role="log" aria-live="polite" aria-busy={streaming} aria-label="Messages">
          <ol className="messages">
            {messages.map((m, i) => (
              <li key={i} className={`message ${m.role}`}>
                <p className="who">{m.role === "user" ? "You" : m.model}</p>
                {m.role === "user" ? <p className="user-text">{m.content}</p> : m.content ? <Markdown text={m.content} /> : <p className="hint">{streaming && i === messages.length - 1 ? "Thinking…" : "(no answer)"}</p>}
                {m.stopped && <p className="hint">Stopped.</p>}
                {m.usage && (
                  <p className="meta">
                    {m.usage.prompt_tokens} prompt + {m.usage.completion_tokens} completion tokens
                  </p>
                )}
              </li>
            ))}
          </ol>
          </div>
        )}
      </section>

      {error !== null && <ErrorMessage error={error} />}

      <form onSubmit={send} className="form chat-form">
        <div className="field">
          <label htmlFor="chat-model">Model</label>
          <select id="chat-model" value={chosen} onChange={(e) => setModel(e.target.value)} disabled={streaming}>
            {virtual.length > 0 && (
              <optgroup label="UltrAI (several models)">
                {virtual.map((m) => (
                  <option key={m.id} value={m.id}>
                    {m.id}
                  </option>
                ))}
              </optgroup>
            )}
            {plain.length > 0 && (
              <optgroup label="Models">
                {plain.map((m) => (
                  <option key={m.id} value={m.id} disabled={m.status === "cooling_down"}>
                    {m.id}
                    {m.id.startsWith("demo/") ? " (demo)" : ""}
                    {m.status === "cooling_down" ? " (cooling down)" : ""}
                  </option>
                ))}
              </optgroup>
            )}
          </select>
        </div>
        <div className="field">
          <label htmlFor="chat-message">Message</label>
          <textarea
            id="chat-message"
            ref={messageBox}
            rows={3}
            value={message}
            onChange={(e) => setMessage(e.target.value)}
            onKeyDown={onKeyDown}
            aria-describedby="chat-message-hint"
          />
          <p id="chat-message-hint" className="hint">
            Ctrl+Enter sends.
          </p>
        </div>
        <div className="actions">
          <button type="submit" disabled={streaming || !message.trim() || !chosen}>
            Send
          </button>
          <button type="button" className="secondary" onClick={stop} disabled={!streaming}>
            Stop
          </button>
          <button
            type="button"
            className="secondary"
            disabled={streaming || messages.length === 0}
            onClick={() => {
              clearMessages();
              setMessages([]);
            }}
          >
            Clear conversation
          </button>
        </div>
      </form>
    </main>
  );
}

import { useEffect, useState } from "react";
import { api } from "../api";
import { followStream } from "../api/follow";
import { ApiError, SignedOutError } from "../api/problem";
import type { AnalysisOut, ModelResult } from "../api/types";
import { ErrorMessage } from "../components/ErrorMessage";
import { Markdown } from "../components/Markdown";
import { formatDate, formatMs, formatNumber, formatUsd } from "../format";
import { usePageHeading } from "../hooks";
import { Link } from "../router";
import { analysisMarkdown, downloadText } from "./exportMarkdown";
import { KIND_LABELS } from "./DocumentPage";

const EVENTS = ["status", "stage", "progress", "model", "synthesis", "completed", "failed"] as const;
const TERMINAL = ["completed", "failed"] as const;
const STAGES = [
  { key: "extraction", label: "Reading the document" },
  { key: "models", label: "Asking the models" },
  { key: "synthesis", label: "Synthesis" },
];

type Live = Partial<ModelResult> & { model: string; phase?: string };

export function AnalysisPage({ documentId, analysisId }: { documentId: string; analysisId: string }) {
  const heading = usePageHeading("Analysis");
  const base = `/api/v1/documents/${encodeURIComponent(documentId)}/analyses/${encodeURIComponent(analysisId)}`;
  const [analysis, setAnalysis] = useState<AnalysisOut | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [status, setStatus] = useState<string>("queued");
  const [stage, setStage] = useState<string | null>(null);
  const [stagesSeen, setStagesSeen] = useState<string[]>([]);
  const [live, setLive] = useState<Record<string, Live>>({});
  const [liveSynthesis, setLiveSynthesis] = useState<Live | null>(null);
  const [streamNote, setStreamNote] = useState<string | null>(null);
  const [streamError, setStreamError] = useState<unknown>(null);
  const [failure, setFailure] = useState<string | null>(null);
  const [docName, setDocName] = useState<string | null>(null);
  useEffect(() => {
    // Per run of this effect: a page left (or re-run) before its fetches answer opens no stream.
    const mounted = { current: true };
    let follower: { close(): void } | null = null;

    const reload = async (): Promise<AnalysisOut | null> => {
      try {
        const a = await api.json<AnalysisOut>(base);
        if (!mounted.current) return null;
        setAnalysis(a);
        setStatus(a.status);
        setStage(a.stage);
        if (a.error) setFailure(a.error);
        return a;
      } catch (err) {
        if (mounted.current) setError(err);
        return null;
      }
    };

    const start = async () => {
      const a = await reload();
      if (!mounted.current || !a || a.status === "completed" || a.status === "failed") return;
      follower = followStream({
        events: EVENTS,
        terminal: TERMINAL,
        ticket: async () => (await api.json<{ ticket: string }>(`${base}/ticket`, { method: "POST" })).ticket,
        connect: (ticket) => new EventSource(api.url(`${base}/events?ticket=${encodeURIComponent(ticket)}`)),
        onEvent: (name, data) => {
          if (!mounted.current) return;
          setStreamNote(null);
          const d = (data ?? {}) as Record<string, unknown>;
          if (name === "status" && typeof d.status === "string") setStatus(d.status);
          if (name === "stage" && typeof d.stage === "string") {
            const s = d.stage;
            setStatus("running");
            setStage(s);
            setStagesSeen((seen) => (seen.includes(s) ? seen : [...seen, s]));
            if (s === "models" && Array.isArray(d.models)) {
              setLive((prev) => {
                const next = { ...prev };
                for (const m of d.models as string[]) next[m] = next[m] ?? { model: m, phase: "working" };
                return next;
              });
            }
            if (s === "synthesis" && typeof d.model === "string") setLiveSynthesis({ model: d.model, phase: "working" });
          }
          if (name === "progress" && typeof d.model === "string") {
            const m = d.model;
            setLive((prev) => ({ ...prev, [m]: { ...prev[m], model: m, phase: `combining ${String(d.parts ?? "")} parts` } }));
          }
          if (name === "model" && typeof d.model === "string") {
            const m = d.model;
            setLive((prev) => ({ ...prev, [m]: { ...(d as unknown as ModelResult), phase: "done" } }));
          }
          if (name === "synthesis") setLiveSynthesis({ ...(d as unknown as ModelResult), phase: "done" });
          if (name === "failed") {
            setStatus("failed");
            if (typeof d.error === "string") setFailure(d.error);
          }
          if (name === "completed" || name === "failed") void reload();
        },
        onRetry: (attempt, err) => {
          if (!mounted.current) return;
          setStreamNote(`The live connection dropped; reconnecting (attempt ${attempt})…`);
          if (err instanceof ApiError) setStreamError(err);
        },
        onFatal: (err) => {
          if (!mounted.current) return;
          setStreamNote(null);
          setStreamError(err instanceof Event ? new Error("The live connection could not be restored. Reload the page to see the latest state.") : err);
          void reload();
        },
        retryable: (err) => !(err instanceof SignedOutError) && !(err instanceof ApiError && [400, 401, 403, 404].includes(err.status)),
        delay: (attempt, err) =>
          err instanceof ApiError && err.retryAfter !== null ? err.retryAfter * 1000 : Math.min(15000, 1000 * 2 ** (attempt - 1)),
      });
    };

    void start();
    api.json<{ name: string }>(`/api/v1/documents/${encodeURIComponent(documentId)}`).then(
      (d) => mounted.current && setDocName(d.name),
      () => undefined,
    );
    return () => {
      mounted.current = false;
      follower?.close();
    };
  }, [base, documentId]);

  const result = analysis?.result ?? null;
  const modelNames = analysis?.params.models ?? Object.keys(live);
  const rows: Live[] = modelNames.map((name) => {
    const final = result?.models.find((m) => m.model === name);
    return final ? { ...final, phase: "done" } : (live[name] ?? { model: name, phase: status === "queued" ? "waiting" : "working" });
  });
  const synthesisName = analysis?.params.synthesis_model ?? null;
  const synthesis: Live | null = result?.synthesis
    ? { ...result.synthesis, phase: "done" }
    : (liveSynthesis ?? (synthesisName ? { model: synthesisName, phase: "waiting" } : null));
  const finished = status === "completed" || status === "failed";
  const statusText = status === "completed" ? "Completed" : status === "failed" ? "Failed" : status === "queued" ? "Queued" : "Running";

  const exportMd = () => {
    if (!analysis) return;
    downloadText(`analysis-${analysis.id}.md`, analysisMarkdown(analysis, docName), "text/markdown");
  };

  return (
    <main id="main" className="main wide">
      <p className="breadcrumb">
        <Link to={`/documents/${encodeURIComponent(documentId)}`}>Back to {docName ?? "the document"}</Link>
      </p>
      <h1 ref={heading} tabIndex={-1}>
        Analysis{analysis ? `: ${KIND_LABELS[analysis.kind] ?? analysis.kind}` : ""}
      </h1>
      {error !== null && <ErrorMessage error={error} />}
      {analysis && (
        <>
          {analysis.params.question && <p className="task">Question: {analysis.params.question}</p>}
          {analysis.params.instruction && <p className="task">Instruction: {analysis.params.instruction}</p>}
          {analysis.params.fields && <p className="task">Fields: {analysis.params.fields.join(", ")}</p>}

          <div className="status-line">
            <p role="status" aria-live="polite">
              Status: <strong className={`status-text status-${status}`}>{statusText}</strong>
              {!finished && stage && <span> — {STAGES.find((s) => s.key === stage)?.label ?? stage}</span>}
            </p>
            {finished && (
              <button type="button" onClick={exportMd}>
                Export Markdown
              </button>
            )}
          </div>
          {streamNote && <p className="note">{streamNote}</p>}
          {streamError !== null && !finished && <ErrorMessage error={streamError} />}
          {status === "failed" && failure && (
            <div role="alert" className="alert">
              <strong className="alert-heading">The analysis failed. </strong>
              {failure}
            </div>
          )}

          {!finished && (
            <ol className="stages" aria-label="Progress">
              {STAGES.filter((s) => s.key !== "synthesis" || synthesisName).map((s) => {
                const current = stage === s.key;
                const done = !current && (stagesSeen.includes(s.key) || isAfter(stage, s.key));
                return (
                  <li key={s.key} className={current ? "current" : done ? "done" : ""} aria-current={current ? "step" : undefined}>
                    {s.label}
                    {current ? " (in progress)" : done ? " (done)" : ""}
                  </li>
                );
              })}
            </ol>
          )}

          <p className="meta">
            Started {formatDate(analysis.created_at)}
            {analysis.finished_at ? ` · finished ${formatDate(analysis.finished_at)}` : ""}
            {finished ? ` · ${formatNumber(analysis.prompt_tokens + analysis.completion_tokens)} tokens · ${formatUsd(analysis.cost_usd)}` : ""}
            {analysis.reused ? " · reused an identical earlier analysis" : ""}
          </p>

          {synthesis && <ModelPanel title="Synthesis" row={synthesis} finished={finished} synthesis />}
          <div className="answers">
            {rows.map((row) => (
              <ModelPanel key={row.model} title={row.model} row={row} finished={finished} />
            ))}
          </div>
        </>
      )}
    </main>
  );
}

function isAfter(current: string | null, key: string): boolean {
  const order = STAGES.map((s) => s.key);
  return current !== null && order.indexOf(current) > order.indexOf(key);
}

function ModelPanel({ title, row, finished, synthesis }: { title: string; row: Live; finished: boolean; synthesis?: boolean }) {
  const ok = row.status === "ok";
  const failed = row.status !== undefined && row.status !== "ok";
  const state = ok ? "Answered" : failed ? "Error" : row.phase === "waiting" ? "Waiting" : finished ? "No answer" : `Working${row.phase && row.phase !== "working" ? ` (${row.phase})` : ""}…`;
  return (
    <section aria-label={title} className={`panel${synthesis ? " synthesis" : ""}${failed ? " failed" : ""}`}>
      <h2>
        {title}
        {synthesis && row.model ? <span className="panel-model"> by {row.model}</span> : null}
      </h2>
      <p className="panel-state">
        <span className={`pill ${ok ? "status-completed" : failed ? "status-failed" : "status-running"}`}>{state}</span>
      </p>
      {row.status !== undefined && (
        <dl className="panel-facts">
          <div>
            <dt>Tokens</dt>
            <dd>
              {formatNumber(row.prompt_tokens ?? 0)} in / {formatNumber(row.completion_tokens ?? 0)} out
            </dd>
          </div>
          <div>
            <dt>Cost</dt>
            <dd>{formatUsd(row.cost_usd ?? 0)}</dd>
          </div>
          <div>
            <dt>Latency</dt>
            <dd>{formatMs(row.latency_ms)}</dd>
          </div>
        </dl>
      )}
      {failed && row.error && <p className="model-error">Error: {row.error}</p>}
      {ok && row.text && <Markdown text={row.text} />}
      {ok && !row.text && <p className="hint">The answer appears when the analysis completes.</p>}
    </section>
  );
}

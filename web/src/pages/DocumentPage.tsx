import { useEffect, useState } from "react";
import { api } from "../api";
import type { AnalysisOut, DocumentOut } from "../api/types";
import { ErrorMessage } from "../components/ErrorMessage";
import { formatBytes, formatDate, formatNumber, formatUsd } from "../format";
import { usePageHeading } from "../hooks";
import { Link } from "../router";
import { AnalysisForm } from "./AnalysisForm";

/** The most of the extracted text shown at once (the rest is behind "Show all"). */
const PREVIEW_CHARS = 20_000;

export const KIND_LABELS: Record<string, string> = { summary: "Summary", qa: "Question", extract: "Fields", custom: "Instruction" };

export function DocumentPage({ id }: { id: string }) {
  const [doc, setDoc] = useState<DocumentOut | null>(null);
  const [text, setText] = useState<string | null>(null);
  const [analyses, setAnalyses] = useState<AnalysisOut[] | null>(null);
  const [error, setError] = useState<unknown>(null);
  const [textError, setTextError] = useState<unknown>(null);
  const [showAll, setShowAll] = useState(false);
  const heading = usePageHeading(doc?.name ?? "Document");
  const base = `/api/v1/documents/${encodeURIComponent(id)}`;

  const load = async () => {
    setError(null);
    try {
      setDoc(await api.json<DocumentOut>(base));
    } catch (err) {
      setError(err);
      return;
    }
    api.request(`${base}/text`).then(
      (resp) => resp.text().then(setText),
      (err) => setTextError(err),
    );
    api.json<AnalysisOut[]>(`${base}/analyses`).then(setAnalyses, () => setAnalyses([]));
  };

  useEffect(() => {
    void load();
  }, [id]);

  return (
    <main id="main" className="main">
      <h1 ref={heading} tabIndex={-1}>
        {doc?.name ?? "Document"}
      </h1>
      {error !== null && <ErrorMessage error={error} onRetry={load} />}
      {doc && (
        <>
          <dl className="facts">
            <div>
              <dt>Type</dt>
              <dd>{doc.kind.toUpperCase()}</dd>
            </div>
            <div>
              <dt>Size</dt>
              <dd>{formatBytes(doc.size_bytes)}</dd>
            </div>
            {doc.page_count !== null && (
              <div>
                <dt>Pages</dt>
                <dd>{doc.page_count}</dd>
              </div>
            )}
            <div>
              <dt>Tokens</dt>
              <dd>{formatNumber(doc.token_count)}</dd>
            </div>
            <div>
              <dt>Chunks</dt>
              <dd>{doc.chunk_count}</dd>
            </div>
            <div>
              <dt>Uploaded</dt>
              <dd>{formatDate(doc.created_at)}</dd>
            </div>
          </dl>

          <div className="columns">
            <div className="card">
              <AnalysisForm documentId={id} />
            </div>

            <section className="card" aria-labelledby="history-heading">
              <h2 id="history-heading">Earlier analyses</h2>
              {analyses === null && <p>Loading…</p>}
              {analyses?.length === 0 && <p>None yet.</p>}
              {analyses && analyses.length > 0 && (
                <ul className="history">
                  {analyses.map((a) => (
                    <li key={a.id}>
                      <Link to={`/documents/${encodeURIComponent(id)}/analyses/${encodeURIComponent(a.id)}`}>
                        {KIND_LABELS[a.kind] ?? a.kind}
                        {a.params.question ? `: ${truncate(a.params.question, 60)}` : ""}
                      </Link>{" "}
                      <span className={`pill status-${a.status}`}>{a.status}</span>
                      <span className="meta">
                        {" "}
                        {formatDate(a.created_at)} · {(a.params.models ?? []).join(", ")} · {formatUsd(a.cost_usd)}
                      </span>
                    </li>
                  ))}
                </ul>
              )}
            </section>
          </div>

          <section aria-labelledby="text-heading" className="card">
            <h2 id="text-heading">Extracted text</h2>
            {textError !== null && <ErrorMessage error={textError} />}
            {text === null && textError === null && <p>Loading…</p>}
            {text !== null && (
              <>
                <pre className="extracted" tabIndex={0} aria-labelledby="text-heading">
                  {showAll ? text : text.slice(0, PREVIEW_CHARS)}
                </pre>
                {text.length > PREVIEW_CHARS && !showAll && (
                  <button type="button" className="secondary" onClick={() => setShowAll(true)}>
                    Show all {formatNumber(text.length)} characters
                  </button>
                )}
              </>
            )}
          </section>
        </>
      )}
    </main>
  );
}

function truncate(s: string, n: number): string {
  return s.length > n ? s.slice(0, n - 1) + "…" : s;
}

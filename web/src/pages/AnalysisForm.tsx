import { useEffect, useRef, useState, type FormEvent } from "react";
import { api } from "../api";
import { isAbort } from "../api/client";
import type { AnalysisEstimate, AnalysisOut, ModelOut, ModelsResponse } from "../api/types";
import { ErrorMessage } from "../components/ErrorMessage";
import { formatMs, formatNumber, formatUsd } from "../format";
import { useDraft } from "../hooks";
import { latestOnly } from "../latest";
import { useRouter } from "../router";

type Kind = "summary" | "qa" | "extract" | "custom";

const KINDS: { value: Kind; label: string; hint: string }[] = [
  { value: "summary", label: "Summary", hint: "A summary of the document." },
  { value: "qa", label: "Question", hint: "An answer to your question, from the document." },
  { value: "extract", label: "Fields", hint: "The values of the fields you name." },
  { value: "custom", label: "Instruction", hint: "Whatever your instruction asks of the document." },
];

/** The ways an analysis can combine its models' answers (the documents API's synthesis_model). */
const PATTERNS = [
  { value: "synthesis", label: "Synthesis", hint: "The synthesis model combines the answers into one." },
  { value: "parallel", label: "Side by side", hint: "The answers alone, with no synthesis." },
];

export function isAvailable(model: ModelOut): boolean {
  return model.status === "available";
}

export function unavailableReason(model: ModelOut): string {
  if (model.reason) return model.reason;
  if (model.detail) return model.detail;
  if (model.status === "cooling_down") return "cooling down after failures or rate limits; try again shortly";
  return model.status.replace(/_/g, " ");
}

/** The wait after the last change before the estimate is asked again. */
export const ESTIMATE_DEBOUNCE_MS = 400;

export interface AnalysisChoices {
  kind: Kind;
  question: string;
  instruction: string;
  fields: string;
  models: string[];
  synthesisModel: string | null;
  fresh: boolean;
}

/** The body of POST .../analyses (and of its estimate) for the form's choices. */
export function analysisBody(c: AnalysisChoices): Record<string, unknown> {
  const body: Record<string, unknown> = { kind: c.kind, models: c.models, fresh: c.fresh };
  if (c.kind === "qa") body.question = c.question.trim();
  if (c.kind === "custom") body.instruction = c.instruction.trim();
  if (c.kind === "extract")
    body.fields = c.fields
      .split(/[\n,]/)
      .map((f) => f.trim())
      .filter(Boolean);
  body.synthesis_model = c.synthesisModel || null;
  return body;
}

/** The estimate in a few words: cost range, calls, time, and whether it fits the budget. */
export function estimateText(e: AnalysisEstimate): { cost: string; plan: string; budget: string; fits: boolean } {
  const cost =
    e.cost_usd.low === e.cost_usd.high
      ? `about ${formatUsd(e.cost_usd.high)}`
      : `${formatUsd(e.cost_usd.low)} to ${formatUsd(e.cost_usd.high)}`;
  const calls = `${formatNumber(e.calls)} model call${e.calls === 1 ? "" : "s"}`;
  const chunks = e.map_reduce ? `, the document read in ${formatNumber(e.map_reduce.chunks)} parts` : "";
  const time = e.wall_time_ms !== null ? `, about ${formatMs(e.wall_time_ms)}` : "";
  const refused = Object.keys(e.refused);
  const plan = `${calls}${chunks}${time}${refused.length ? `; too long for ${refused.join(", ")}` : ""}`;
  const left = e.budget.remaining_usd;
  let budget: string;
  if (left === null) budget = "No budget limit applies.";
  else if (e.budget.fits) budget = `Fits your budget (${formatUsd(left)} left today).`;
  else budget = `Over your budget by ${formatUsd(e.budget.over_by_usd)} (${formatUsd(left)} left today): it would be refused.`;
  return { cost, plan, budget, fits: e.budget.fits };
}

export function AnalysisForm({ documentId }: { documentId: string }) {
  const { navigate } = useRouter();
  const draft = `analysis:${documentId}`;
  const [kind, setKind, clearKind] = useDraft<Kind>(`${draft}:kind`, "summary");
  const [question, setQuestion, clearQuestion] = useDraft(`${draft}:question`, "");
  const [instruction, setInstruction, clearInstruction] = useDraft(`${draft}:instruction`, "");
  const [fields, setFields, clearFields] = useDraft(`${draft}:fields`, "");
  const [chosen, setChosen] = useDraft<string[] | null>(`${draft}:models`, null);
  const [pattern, setPattern] = useDraft(`${draft}:pattern`, "synthesis");
  const [synthesis, setSynthesis] = useDraft(`${draft}:synthesis`, "");
  const [fresh, setFresh] = useState(false);

  const [models, setModels] = useState<ModelsResponse | null>(null);
  const [modelsError, setModelsError] = useState<unknown>(null);
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);

  const loadModels = async () => {
    setModelsError(null);
    try {
      setModels(await api.json<ModelsResponse>("/api/v1/llm/models"));
    } catch (err) {
      setModelsError(err);
    }
  };

  useEffect(() => {
    void loadModels();
  }, []);

  const available = (models?.models ?? []).filter(isAvailable);
  // Until the person picks, the first three available models (as the API would choose).
  const selected = chosen ?? available.slice(0, 3).map((m) => m.name);
  const synthesisModel = synthesis || selected[0] || available[0]?.name || "";

  const toggle = (name: string, on: boolean) => {
    const next = on ? [...selected.filter((n) => n !== name), name] : selected.filter((n) => n !== name);
    setChosen(next);
  };

  const body = analysisBody({
    kind,
    question,
    instruction,
    fields,
    models: selected,
    synthesisModel: pattern === "synthesis" ? synthesisModel || null : null,
    fresh,
  });

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setBusy(true);
    try {
      const analysis = await api.json<AnalysisOut>(`/api/v1/documents/${encodeURIComponent(documentId)}/analyses`, {
        method: "POST",
        json: body,
      });
      clearKind();
      clearQuestion();
      clearInstruction();
      clearFields();
      navigate(`/documents/${encodeURIComponent(documentId)}/analyses/${encodeURIComponent(analysis.id)}`);
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  const noProvider = models !== null && models.models.length === 0;
  const missing =
    selected.length === 0
      ? "Choose at least one model."
      : kind === "qa" && !question.trim()
        ? "Write your question."
        : kind === "custom" && !instruction.trim()
          ? "Write your instruction."
          : kind === "extract" && !fields.trim()
            ? "Name at least one field."
            : null;

  // The estimate of the current choices, asked again (debounced) whenever they change; a request
  // still in flight for older choices is abandoned, and its answer dropped.
  const [estimate, setEstimate] = useState<AnalysisEstimate | null>(null);
  const [estimateError, setEstimateError] = useState<unknown>(null);
  const estimateRun = useRef(latestOnly()).current;
  // `fresh` changes nothing of the estimate: not asked again for it.
  const bodyKey = JSON.stringify({ ...body, fresh: false });
  const ready = models !== null && !noProvider && missing === null;
  useEffect(() => {
    setEstimate(null);
    setEstimateError(null);
    if (!ready) return;
    const abort = new AbortController();
    const timer = setTimeout(() => {
      void estimateRun(
        api.json<AnalysisEstimate>(`/api/v1/documents/${encodeURIComponent(documentId)}/analyses/estimate`, {
          method: "POST",
          json: JSON.parse(bodyKey) as unknown,
          signal: abort.signal,
        }),
        setEstimate,
        (err) => {
          if (!isAbort(err)) setEstimateError(err);
        },
      );
    }, ESTIMATE_DEBOUNCE_MS);
    return () => {
      clearTimeout(timer);
      abort.abort();
    };
  }, [bodyKey, ready, documentId, estimateRun]);
  const shown = estimate ? estimateText(estimate) : null;

  return (
    <form onSubmit={submit} className="form analysis-form" aria-labelledby="new-analysis-heading">
      <h2 id="new-analysis-heading">New analysis</h2>

      <div role="radiogroup" aria-labelledby="kind-label" className="radio-group">
        <span id="kind-label" className="group-label">
          Kind
        </span>
        {KINDS.map((k) => (
          <div key={k.value} className="choice">
            <input
              type="radio"
              id={`kind-${k.value}`}
              name="kind"
              value={k.value}
              checked={kind === k.value}
              onChange={() => setKind(k.value)}
              aria-describedby={`kind-${k.value}-hint`}
            />
            <label htmlFor={`kind-${k.value}`}>{k.label}</label>
            <span id={`kind-${k.value}-hint`} className="hint">
              {k.hint}
            </span>
          </div>
        ))}
      </div>

      {kind === "qa" && (
        <div className="field">
          <label htmlFor="question">Question</label>
          <textarea id="question" rows={3} maxLength={4000} required value={question} onChange={(e) => setQuestion(e.target.value)} />
        </div>
      )}
      {kind === "custom" && (
        <div className="field">
          <label htmlFor="instruction">Instruction</label>
          <textarea id="instruction" rows={4} maxLength={8000} required value={instruction} onChange={(e) => setInstruction(e.target.value)} />
        </div>
      )}
      {kind === "extract" && (
        <div className="field">
          <label htmlFor="fields">Fields</label>
          <textarea
            id="fields"
            rows={3}
            required
            value={fields}
            onChange={(e) => setFields(e.target.value)}
            aria-describedby="fields-hint"
          />
          <p id="fields-hint" className="hint">
            One field name per line, or separated by commas (for example: party, date, amount).
          </p>
        </div>
      )}

      <fieldset className="models">
        <legend>Models</legend>
        {modelsError !== null && <ErrorMessage error={modelsError} onRetry={loadModels} />}
        {models === null && modelsError === null && <p>Loading models…</p>}
        {noProvider && (
          <div role="alert" className="alert">
            {models?.detail ?? "No LLM provider is configured: ask the operator to configure one."}
          </div>
        )}
        {models?.models.map((m) => {
          const ok = isAvailable(m);
          const id = `model-${m.name.replace(/[^A-Za-z0-9_-]/g, "-")}`;
          return (
            <div key={m.name} className={`choice${ok ? "" : " disabled"}`}>
              <input
                type="checkbox"
                id={id}
                checked={ok && selected.includes(m.name)}
                disabled={!ok}
                onChange={(e) => toggle(m.name, e.target.checked)}
                aria-describedby={`${id}-about`}
              />
              <label htmlFor={id}>{m.name}</label>
              <span id={`${id}-about`} className="hint">
                {m.demo && <span className="badge">demo</span>} {m.provider}
                {m.context_window ? `, ${m.context_window.toLocaleString("en")} tokens of context` : ""}
                {!ok && <span className="unavailable"> — unavailable: {unavailableReason(m)}</span>}
              </span>
            </div>
          );
        })}
      </fieldset>

      <div className="field-row">
        <div className="field">
          <label htmlFor="pattern">Pattern</label>
          <select id="pattern" value={pattern} onChange={(e) => setPattern(e.target.value)} aria-describedby="pattern-hint">
            {PATTERNS.map((p) => (
              <option key={p.value} value={p.value}>
                {p.label}
              </option>
            ))}
          </select>
          <p id="pattern-hint" className="hint">
            {PATTERNS.find((p) => p.value === pattern)?.hint}
          </p>
        </div>
        <div className="field">
          <label htmlFor="synthesis-model">Synthesis model</label>
          <select
            id="synthesis-model"
            value={synthesisModel}
            disabled={pattern !== "synthesis" || available.length === 0}
            onChange={(e) => setSynthesis(e.target.value)}
          >
            {available.map((m) => (
              <option key={m.name} value={m.name}>
                {m.name}
                {m.demo ? " (demo)" : ""}
              </option>
            ))}
          </select>
        </div>
      </div>

      <div className="choice">
        <input type="checkbox" id="fresh" checked={fresh} onChange={(e) => setFresh(e.target.checked)} />
        <label htmlFor="fresh">Run again even if the same analysis was made before</label>
      </div>

      <div className="estimate" aria-live="polite">
        {shown && (
          <p>
            <strong>Estimated cost: {shown.cost}</strong> ({shown.plan}).{" "}
            <span className={shown.fits ? "fits" : "over"}>{shown.budget}</span>
          </p>
        )}
        {estimateError !== null && (
          <p className="hint">
            No estimate: {estimateError instanceof Error ? estimateError.message : "the estimate failed"}
          </p>
        )}
      </div>

      {error !== null && <ErrorMessage error={error} />}
      {missing && !noProvider && <p className="hint">{missing}</p>}
      <button type="submit" disabled={busy || missing !== null || noProvider}>
        Start analysis
      </button>
    </form>
  );
}

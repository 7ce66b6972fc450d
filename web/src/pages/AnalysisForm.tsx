import { useEffect, useState, type FormEvent } from "react";
import { api } from "../api";
import type { AnalysisOut, ModelOut, ModelsResponse } from "../api/types";
import { ErrorMessage } from "../components/ErrorMessage";
import { useDraft } from "../hooks";
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

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    const body: Record<string, unknown> = { kind, models: selected, fresh };
    if (kind === "qa") body.question = question.trim();
    if (kind === "custom") body.instruction = instruction.trim();
    if (kind === "extract")
      body.fields = fields
        .split(/[\n,]/)
        .map((f) => f.trim())
        .filter(Boolean);
    body.synthesis_model = pattern === "synthesis" ? synthesisModel || null : null;
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

      {error !== null && <ErrorMessage error={error} />}
      {missing && !noProvider && <p className="hint">{missing}</p>}
      <button type="submit" disabled={busy || missing !== null || noProvider}>
        Start analysis
      </button>
    </form>
  );
}

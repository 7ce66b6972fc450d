import type { AnalysisOut, ModelResult } from "../api/types";

const KINDS: Record<string, string> = { summary: "Summary", qa: "Question", extract: "Fields", custom: "Instruction" };

function facts(r: ModelResult): string {
  const latency = r.latency_ms === null || r.latency_ms === undefined ? "—" : `${Math.round(r.latency_ms)} ms`;
  return `_${r.prompt_tokens} prompt + ${r.completion_tokens} completion tokens · $${(r.cost_usd ?? 0).toFixed(6)} · ${latency}_`;
}

/** The analysis as a Markdown document: the task, the synthesis, then each model's answer. */
export function analysisMarkdown(a: AnalysisOut, documentName: string | null): string {
  const lines: string[] = [];
  lines.push(`# ${KINDS[a.kind] ?? a.kind} of ${documentName ?? a.document_id}`, "");
  lines.push(`- Analysis: ${a.id}`, `- Status: ${a.status}`, `- Created: ${a.created_at}`);
  if (a.finished_at) lines.push(`- Finished: ${a.finished_at}`);
  lines.push(`- Models: ${(a.params.models ?? []).join(", ")}`);
  if (a.params.synthesis_model) lines.push(`- Synthesis model: ${a.params.synthesis_model}`);
  lines.push(`- Tokens: ${a.prompt_tokens} prompt + ${a.completion_tokens} completion`, `- Cost: $${a.cost_usd.toFixed(6)}`, "");
  if (a.params.question) lines.push("## Question", "", a.params.question, "");
  if (a.params.instruction) lines.push("## Instruction", "", a.params.instruction, "");
  if (a.params.fields) lines.push("## Fields", "", ...a.params.fields.map((f) => `- ${f}`), "");
  if (a.error) lines.push("## Error", "", a.error, "");
  const result = a.result;
  if (result?.synthesis) {
    lines.push(`## Synthesis (${result.synthesis.model})`, "", facts(result.synthesis), "");
    lines.push(result.synthesis.text ?? `Failed: ${result.synthesis.error ?? "no answer"}`, "");
  }
  for (const m of result?.models ?? []) {
    lines.push(`## ${m.model}`, "", facts(m), "");
    lines.push(m.status === "ok" ? (m.text ?? "") : `Failed: ${m.error ?? "no answer"}`, "");
  }
  return lines.join("\n").replace(/\n{3,}/g, "\n\n").trimEnd() + "\n";
}

/** Saves text as a file through a temporary blob URL. */
export function downloadText(filename: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type: `${type};charset=utf-8` }));
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

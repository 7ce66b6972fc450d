import { useState, type FormEvent } from "react";
import { api } from "../api";
import { ApiError, fieldName } from "../api/problem";
import { KEY_SCOPES, type KeyInfo, type NewKey } from "../api/types";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { ErrorMessage } from "../components/ErrorMessage";
import { Field } from "../components/Field";
import { formatDate, formatNumber, formatUsd } from "../format";
import { useDraft, useLoaded, usePageHeading } from "../hooks";

const SCOPE_TEXT: Record<string, string> = {
  llm: "llm: chat completions, orchestration, usage",
  "documents:read": "documents:read: list and read documents and analyses",
  "documents:write": "documents:write: upload, delete, start analyses",
};

interface Draft {
  name: string;
  scopes: string[];
  expires: string;
  budget: string;
  rpm: string;
  tpm: string;
}

const EMPTY: Draft = { name: "", scopes: [...KEY_SCOPES], expires: "90", budget: "", rpm: "", tpm: "" };

export function KeysPage() {
  const heading = usePageHeading("API keys");
  const { data: keys, error: listError, reload: load } = useLoaded(async () => (await api.json<{ keys: KeyInfo[] }>("/api/v1/auth/keys")).keys, []);
  const [draft, setDraft, clearDraft] = useDraft<Draft>("keys:new", EMPTY);
  const [createError, setCreateError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const [created, setCreated] = useState<NewKey | null>(null);
  const [copied, setCopied] = useState(false);
  const [revoking, setRevoking] = useState<KeyInfo | null>(null);
  const [revokeError, setRevokeError] = useState<unknown>(null);
  const [status, setStatus] = useState("");

  const set = (patch: Partial<Draft>) => setDraft({ ...draft, ...patch });

  const create = async (event: FormEvent) => {
    event.preventDefault();
    setCreateError(null);
    setCreated(null);
    setCopied(false);
    const number = (s: string) => (s.trim() === "" ? null : Number(s));
    const body = {
      name: draft.name.trim(),
      scopes: draft.scopes,
      expires_in_days: number(draft.expires),
      budget_usd: number(draft.budget),
      rpm: number(draft.rpm),
      tpm: number(draft.tpm),
    };
    setBusy(true);
    try {
      const key = await api.json<NewKey>("/api/v1/auth/keys", { method: "POST", json: body });
      setCreated(key);
      clearDraft();
      setDraft(EMPTY);
      load();
    } catch (err) {
      setCreateError(err);
    } finally {
      setBusy(false);
    }
  };

  const copy = async () => {
    if (!created) return;
    try {
      await navigator.clipboard.writeText(created.key);
      setCopied(true);
    } catch {
      setCopied(false);
      setStatus("Copying was refused by the browser: select the key and copy it by hand.");
    }
  };

  const revoke = async () => {
    if (!revoking) return;
    setRevokeError(null);
    try {
      await api.request(`/api/v1/auth/keys/${encodeURIComponent(revoking.id)}`, { method: "DELETE" });
      setStatus(`Revoked ${revoking.name}.`);
      if (created?.id === revoking.id) setCreated(null);
      setRevoking(null);
      load();
    } catch (err) {
      setRevokeError(err);
      setRevoking(null);
    }
  };

  const errors = createError instanceof ApiError ? createError.fieldErrors : [];
  const errorOf = (name: string) => errors.find((e) => fieldName(e.field) === name)?.message;

  return (
    <main id="main" className="main">
      <h1 ref={heading} tabIndex={-1}>
        API keys
      </h1>
      <p className="hint">
        Keys let scripts and servers call UltrAI (the OpenAI SDKs included) without your password. A key is shown once, when it is made.
      </p>
      <p role="status" className="visually-hidden">
        {status}
      </p>

      <section aria-labelledby="new-key-heading" className="card">
        <h2 id="new-key-heading">New key</h2>
        <form onSubmit={create} className="form">
          <Field id="key-name" label="Name" error={errorOf("name")}>
            <input id="key-name" required maxLength={100} value={draft.name} onChange={(e) => set({ name: e.target.value })} />
          </Field>
          <fieldset>
            <legend>Scopes</legend>
            {KEY_SCOPES.map((scope) => (
              <div key={scope} className="choice">
                <input
                  type="checkbox"
                  id={`scope-${scope}`}
                  checked={draft.scopes.includes(scope)}
                  onChange={(e) => set({ scopes: e.target.checked ? [...draft.scopes, scope] : draft.scopes.filter((s) => s !== scope) })}
                />
                <label htmlFor={`scope-${scope}`}>{SCOPE_TEXT[scope]}</label>
              </div>
            ))}
          </fieldset>
          <div className="field-row">
            <Field id="key-expires" label="Expires after (days)" hint="Empty: never." error={errorOf("expires_in_days")}>
              <input id="key-expires" type="number" min={1} max={3650} inputMode="numeric" value={draft.expires} onChange={(e) => set({ expires: e.target.value })} />
            </Field>
            <Field id="key-budget" label="Budget (USD per day)" hint="Empty: your account's budget only." error={errorOf("budget_usd")}>
              <input id="key-budget" type="number" min={0} step="0.01" inputMode="decimal" value={draft.budget} onChange={(e) => set({ budget: e.target.value })} />
            </Field>
            <Field id="key-rpm" label="Requests per minute" hint="Empty: no limit of its own." error={errorOf("rpm")}>
              <input id="key-rpm" type="number" min={1} inputMode="numeric" value={draft.rpm} onChange={(e) => set({ rpm: e.target.value })} />
            </Field>
            <Field id="key-tpm" label="Tokens per minute" hint="Empty: no limit of its own." error={errorOf("tpm")}>
              <input id="key-tpm" type="number" min={1} inputMode="numeric" value={draft.tpm} onChange={(e) => set({ tpm: e.target.value })} />
            </Field>
          </div>
          {createError !== null && <ErrorMessage error={createError} />}
          <button type="submit" disabled={busy || !draft.name.trim() || draft.scopes.length === 0}>
            Create key
          </button>
        </form>
        {created && (
          <div className="new-key" role="region" aria-label="Your new key">
            <p>
              <strong>Copy your key now: it will not be shown again.</strong>
            </p>
            <label htmlFor="new-key-value">Key for {created.name}</label>
            <div className="copy-row">
              <input id="new-key-value" readOnly value={created.key} onFocus={(e) => e.target.select()} />
              <button type="button" onClick={copy}>
                {copied ? "Copied" : "Copy"}
              </button>
            </div>
            <p className="hint" aria-live="polite">
              {copied ? "The key is on your clipboard." : ""}
            </p>
            <button type="button" className="secondary small" onClick={() => setCreated(null)}>
              I have saved it
            </button>
          </div>
        )}
      </section>

      <section aria-labelledby="keys-heading">
        <h2 id="keys-heading">Your keys</h2>
        {listError !== null && <ErrorMessage error={listError} onRetry={load} />}
        {revokeError !== null && <ErrorMessage error={revokeError} />}
        {keys === null && listError === null && <p>Loading…</p>}
        {keys?.length === 0 && <p>No keys yet.</p>}
        {keys && keys.length > 0 && (
          <div className="table-wrap" tabIndex={0} role="group" aria-labelledby="keys-heading">
            <table>
              <thead>
                <tr>
                  <th scope="col">Name</th>
                  <th scope="col">Key</th>
                  <th scope="col">Scopes</th>
                  <th scope="col">Limits</th>
                  <th scope="col">Spent today</th>
                  <th scope="col">Last used</th>
                  <th scope="col">Expires</th>
                  <th scope="col">
                    <span className="visually-hidden">Actions</span>
                  </th>
                </tr>
              </thead>
              <tbody>
                {keys.map((k) => (
                  <tr key={k.id}>
                    <th scope="row">{k.name}</th>
                    <td>
                      <code>{k.prefix}…</code>
                    </td>
                    <td>{k.scopes.join(", ") || "—"}</td>
                    <td>
                      {[
                        k.budget_usd !== null ? `${formatUsd(k.budget_usd)}/day` : null,
                        k.rpm !== null ? `${formatNumber(k.rpm)} req/min` : null,
                        k.tpm !== null ? `${formatNumber(k.tpm)} tok/min` : null,
                      ]
                        .filter(Boolean)
                        .join(", ") || "—"}
                    </td>
                    <td>{formatUsd(k.spent_usd)}</td>
                    <td>{k.last_used_at ? formatDate(k.last_used_at) : "never"}</td>
                    <td>{k.expires_at ? formatDate(k.expires_at) : "never"}</td>
                    <td>
                      <button type="button" className="danger small" onClick={() => setRevoking(k)} aria-label={`Revoke ${k.name}`}>
                        Revoke
                      </button>
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        )}
      </section>

      {revoking && (
        <ConfirmDialog title={`Revoke ${revoking.name}?`} confirmLabel="Revoke key" onConfirm={revoke} onCancel={() => setRevoking(null)}>
          <p>Anything using this key stops working at once. This cannot be undone.</p>
        </ConfirmDialog>
      )}
    </main>
  );
}

import { useState, type FormEvent } from "react";
import { api } from "../api";
import { ApiError, fieldName } from "../api/problem";
import type { Account } from "../api/types";
import { ConfirmDialog } from "../components/ConfirmDialog";
import { ErrorMessage } from "../components/ErrorMessage";
import { Field } from "../components/Field";
import { formatDate } from "../format";
import { useLoaded, usePageHeading } from "../hooks";
import { signInWith, type Notice } from "../notice";
import { useRouter } from "../router";
import { endSession } from "../signout";

const ERASED = "documents, analyses, usage and conversations";

/** The message a 422 gives the field `name`, if it names it. */
function fieldError(error: unknown, name: string): string | undefined {
  const errors = error instanceof ApiError ? error.fieldErrors : [];
  return errors.find((e) => fieldName(e.field) === name)?.message;
}

export function AccountPage() {
  const heading = usePageHeading("Account");
  const { navigate } = useRouter();
  const { data: account, error: loadError, reload } = useLoaded(() => api.json<Account>("/api/v1/auth/me"), []);

  // Passwords stay in memory only: never drafts.
  const [current, setCurrent] = useState("");
  const [next, setNext] = useState("");
  const [changeError, setChangeError] = useState<unknown>(null);
  const [changing, setChanging] = useState(false);

  const [password, setPassword] = useState("");
  const [missing, setMissing] = useState(false);
  const [confirming, setConfirming] = useState(false);
  const [deleting, setDeleting] = useState(false);
  const [deleteError, setDeleteError] = useState<unknown>(null);

  // Auth has ended every session of the account: forget this one too, and say why on sign-in.
  const leave = async (notice: Notice) => {
    await endSession();
    navigate(signInWith(notice), { replace: true });
  };

  const change = async (event: FormEvent) => {
    event.preventDefault();
    setChangeError(null);
    setChanging(true);
    try {
      await api.request("/api/v1/auth/password", {
        method: "POST",
        json: { current_password: current, new_password: next },
        checksPassword: true,
      });
    } catch (err) {
      setChangeError(err);
      setChanging(false);
      return;
    }
    await leave("password-changed");
  };

  const askToDelete = (event: FormEvent) => {
    event.preventDefault();
    setDeleteError(null);
    setMissing(password === "");
    if (password !== "") setConfirming(true);
  };

  const remove = async () => {
    setDeleting(true);
    try {
      await api.request("/api/v1/auth/me", { method: "DELETE", json: { password }, checksPassword: true });
    } catch (err) {
      setDeleteError(err);
      setConfirming(false);
      setDeleting(false);
      return;
    }
    await leave("account-deleted");
  };

  return (
    <main id="main" className="main narrow">
      <h1 ref={heading} tabIndex={-1}>
        Account
      </h1>
      {loadError !== null && <ErrorMessage error={loadError} onRetry={reload} />}
      {account === null && loadError === null && <p className="loading">Loading…</p>}
      {account && (
        <dl className="facts">
          <div>
            <dt>Email</dt>
            <dd>{account.email}</dd>
          </div>
          <div>
            <dt>Created</dt>
            <dd>{formatDate(account.created_at)}</dd>
          </div>
        </dl>
      )}

      <section aria-labelledby="password-heading" className="card">
        <h2 id="password-heading">Change password</h2>
        <form onSubmit={change} className="form" noValidate>
          <Field id="current-password" label="Current password" error={fieldError(changeError, "current_password")}>
            <input
              id="current-password"
              type="password"
              autoComplete="current-password"
              required
              value={current}
              onChange={(e) => setCurrent(e.target.value)}
            />
          </Field>
          <Field
            id="new-password"
            label="New password"
            hint="Every session of your account ends, this one too: you sign in again with the new password."
            error={fieldError(changeError, "new_password")}
          >
            <input id="new-password" type="password" autoComplete="new-password" required value={next} onChange={(e) => setNext(e.target.value)} />
          </Field>
          {changeError !== null && <ErrorMessage error={changeError} />}
          <button type="submit" disabled={changing}>
            Change password
          </button>
        </form>
      </section>

      <section aria-labelledby="delete-heading" className="card">
        <h2 id="delete-heading">Delete account</h2>
        <p>
          This deletes your account and its API keys at once, and ends every session of it. Its {ERASED} are erased
          shortly after. <strong>This cannot be undone.</strong>
        </p>
        <form onSubmit={askToDelete} className="form" noValidate>
          <Field
            id="delete-password"
            label="Password"
            hint="Your current password, to confirm that it is you."
            error={missing ? "Enter your password to delete the account." : fieldError(deleteError, "password")}
          >
            <input
              id="delete-password"
              type="password"
              autoComplete="current-password"
              required
              value={password}
              onChange={(e) => setPassword(e.target.value)}
            />
          </Field>
          {deleteError !== null && <ErrorMessage error={deleteError} />}
          <button type="submit" className="danger" disabled={deleting}>
            Delete account
          </button>
        </form>
      </section>

      {confirming && (
        <ConfirmDialog
          title="Delete your account?"
          confirmLabel="Delete my account"
          busy={deleting}
          onConfirm={remove}
          onCancel={() => setConfirming(false)}
        >
          <p>
            {account ? <>The account {account.email}</> : <>Your account</>}, its API keys, and its {ERASED} will be deleted. This cannot be
            undone.
          </p>
        </ConfirmDialog>
      )}
    </main>
  );
}

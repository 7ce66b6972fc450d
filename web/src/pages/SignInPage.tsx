import { useState, type FormEvent } from "react";
import { session } from "../api";
import { ApiError } from "../api/problem";
import { ErrorMessage } from "../components/ErrorMessage";
import { Field } from "../components/Field";
import { useDraft, usePageHeading } from "../hooks";
import { Link, useRouter } from "../router";
import { safeNext } from "../next";
import { noticeOf, withoutNotice } from "../notice";

function AuthForm({ mode }: { mode: "signin" | "signup" }) {
  const signUp = mode === "signup";
  const title = signUp ? "Create your account" : "Sign in to UltrAI";
  const heading = usePageHeading(signUp ? "Create account" : "Sign in");
  const { search, navigate } = useRouter();
  // The email is kept as a draft; the password never leaves memory.
  const [email, setEmail] = useDraft("auth-email", "");
  const [password, setPassword] = useState("");
  const [error, setError] = useState<unknown>(null);
  const [busy, setBusy] = useState(false);
  const sessionEnded = new URLSearchParams(search).has("next");
  // Why the app sent the person here (their password changed, their account deleted), if it did.
  const notice = signUp ? null : noticeOf(search);
  const carried = withoutNotice(search);

  const submit = async (event: FormEvent) => {
    event.preventDefault();
    setError(null);
    setBusy(true);
    try {
      if (signUp) await session.register(email.trim(), password);
      await session.login(email.trim(), password);
      navigate(safeNext(search), { replace: true });
    } catch (err) {
      setError(err);
      setBusy(false);
    }
  };

  const fieldErrors = error instanceof ApiError ? error.fieldErrors : [];
  const errorFor = (name: string) => fieldErrors.find((e) => e.field.endsWith(name))?.message;

  return (
    <main id="main" className="main narrow">
      <h1 ref={heading} tabIndex={-1}>
        {title}
      </h1>
      {notice && (
        <p role="status" className="note">
          {notice}
        </p>
      )}
      {sessionEnded && !signUp && <p className="note">Sign in to continue where you left off; what you typed is kept.</p>}
      <form onSubmit={submit} className="form" noValidate>
        <Field id="email" label="Email" error={errorFor("email")}>
          <input
            id="email"
            type="email"
            autoComplete={signUp ? "email" : "username"}
            required
            value={email}
            onChange={(e) => setEmail(e.target.value)}
          />
        </Field>
        <Field id="password" label="Password" error={errorFor("password")}>
          <input
            id="password"
            type="password"
            autoComplete={signUp ? "new-password" : "current-password"}
            required
            value={password}
            onChange={(e) => setPassword(e.target.value)}
          />
        </Field>
        {error !== null && <ErrorMessage error={error} />}
        <button type="submit" disabled={busy}>
          {signUp ? "Create account" : "Sign in"}
        </button>
      </form>
      <p>
        {signUp ? (
          <>
            Have an account? <Link to={`/signin${carried}`}>Sign in instead</Link>
          </>
        ) : (
          <>
            New to UltrAI? <Link to={`/signup${carried}`}>Create an account</Link>
          </>
        )}
      </p>
    </main>
  );
}

export function SignInPage() {
  return <AuthForm key="signin" mode="signin" />;
}

export function SignUpPage() {
  return <AuthForm key="signup" mode="signup" />;
}

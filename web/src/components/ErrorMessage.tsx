/** An error as a person can act on it, in role=alert: what the API said (its `detail`), a
 * countdown for a 429, the service a 5xx names, the network for a failed fetch. */

import { ApiError, NetworkError, SignedOutError } from "../api/problem";
import { useCountdown } from "../hooks";
import { Link } from "../router";

interface Props {
  error: unknown;
  /** Offered once a 429's wait is over, or for a network or server failure. */
  onRetry?: () => void;
}

export function ErrorMessage({ error, onRetry }: Props) {
  const retryAfter = error instanceof ApiError && (error.status === 429 || error.status === 503) ? error.retryAfter : null;
  const left = useCountdown(retryAfter);
  if (!error) return null;

  let heading = "Something went wrong.";
  let text = error instanceof Error ? error.message : String(error);
  let reference: string | null = null;
  let signIn = false;
  if (error instanceof ApiError) {
    reference = error.requestId;
    if (error.status === 429) heading = "Too many requests.";
    else if (error.status === 402) heading = "Budget spent.";
    else if (error.status === 503 && /provider/i.test(error.problem.title ?? "")) heading = /^no llm provider/i.test(text) ? "" : "No LLM provider is configured.";
    else if (error.status >= 500) heading = error.service ? `The ${error.service} service is unavailable.` : "The server could not answer.";
    else if (error.status === 413) heading = "Too large.";
    else if (error.status === 415) heading = "Unsupported file type.";
    else heading = "";
  } else if (error instanceof NetworkError) {
    heading = navigator.onLine ? "Cannot reach the server." : "You are offline.";
    text = navigator.onLine ? "Check your connection, or whether the API is running, and try again." : "Reconnect to the internet and try again.";
  } else if (error instanceof SignedOutError) {
    heading = "";
    signIn = true;
  }
  const waiting = left !== null && left > 0;

  return (
    <div role="alert" className="alert">
      {heading && <strong className="alert-heading">{heading} </strong>}
      <span>{text}</span>
      {retryAfter !== null && <span className="countdown">{waiting ? ` Try again in ${left} s.` : " You can try again now."}</span>}
      {signIn && (
        <>
          {" "}
          <Link to="/signin">Sign in</Link>
        </>
      )}
      {reference && <small className="reference">Reference: {reference}</small>}
      {onRetry && !waiting && !signIn && (
        <button type="button" className="secondary small" onClick={onRetry}>
          Try again
        </button>
      )}
    </div>
  );
}

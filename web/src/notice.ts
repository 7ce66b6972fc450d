/** What the sign-in page tells a person the app sent there on purpose (after a password change or
 * an account deletion): a code in the address (`?notice=`), never its text, so that a link cannot
 * make the app say something of the linker's choosing. */

const NOTICES = {
  "password-changed": "Password changed: sign in with the new one.",
  "account-deleted":
    "Your account was deleted, with its API keys. Its documents, analyses, usage and conversations are being erased.",
} as const;

export type Notice = keyof typeof NOTICES;

/** The sign-in page's address with `notice`. */
export function signInWith(notice: Notice): string {
  return `/signin?notice=${notice}`;
}

/** The text of the notice a sign-in address carries, or null (none, or a code this app does not know). */
export function noticeOf(search: string): string | null {
  const code = new URLSearchParams(search).get("notice");
  return code !== null && Object.hasOwn(NOTICES, code) ? NOTICES[code as Notice] : null;
}

/** The query without its notice: what the links between sign-in and sign-up carry over (`next`). */
export function withoutNotice(search: string): string {
  const params = new URLSearchParams(search);
  if (!params.has("notice")) return search;
  params.delete("notice");
  const rest = params.toString();
  return rest ? `?${rest}` : "";
}

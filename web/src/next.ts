/** Where to go after signing in: the `next` path when it is a path of this app (not another
 * site, not the sign-in pages themselves), else /documents. */
export function safeNext(search: string): string {
  const next = new URLSearchParams(search).get("next");
  if (next && next.startsWith("/") && !next.startsWith("//") && !next.startsWith("/\\") && !/^\/(signin|signup)\b/.test(next)) return next;
  return "/documents";
}

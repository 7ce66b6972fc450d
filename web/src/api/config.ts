/** The gateway's base URL: VITE_API_URL when set at build time, otherwise this page's own
 * protocol and host name on port 8000 (so http://localhost:5173 calls http://localhost:8000,
 * the same site, and the session cookie works). */
export function apiBase(): string {
  const configured = import.meta.env.VITE_API_URL as string | undefined;
  if (configured) return configured.replace(/\/+$/, "");
  return `${location.protocol}//${location.hostname}:8000`;
}

import { loadEnv } from "vite";
import { defineConfig } from "vitest/config";
import react from "@vitejs/plugin-react";

// The policy the built app runs under (no inline script or style anywhere); `vite preview` sends
// it so a violation shows in the browser console before a deployment does.
function csp(apiUrl: string | undefined): string {
  const api = apiUrl || "http://localhost:8000 http://127.0.0.1:8000";
  return [
    "default-src 'self'",
    "script-src 'self'",
    "style-src 'self'",
    "img-src 'self' data: blob:",
    `connect-src 'self' ${api}`,
    "frame-ancestors 'none'",
    "base-uri 'self'",
    "form-action 'self'",
  ].join("; ");
}

export default defineConfig(({ mode }) => ({
  plugins: [react()],
  server: { host: "127.0.0.1", port: 5173, strictPort: true },
  preview: {
    host: "127.0.0.1",
    port: 4173,
    headers: { "Content-Security-Policy": csp(loadEnv(mode, ".", "VITE_").VITE_API_URL) },
  },
  build: {
    // No inline module-preload polyfill script: the page runs under script-src 'self'.
    modulePreload: { polyfill: false },
    assetsInlineLimit: 0,
    sourcemap: false,
  },
  test: {
    environment: "node",
    include: ["src/**/*.test.ts"],
  },
}));

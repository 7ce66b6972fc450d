/** Banners for what stops the whole app: offline, or a service the gateway's /health reports down. */

import { useEffect, useState } from "react";
import { apiBase } from "../api/config";
import { useOnline } from "../hooks";

interface HealthEntry {
  componentType?: string;
  status?: string;
  output?: string;
}

interface Down {
  service: string;
  reason: string;
}

const POLL_MS = 30_000;
const POLL_WHILE_DOWN_MS = 10_000;

export function StatusBanner() {
  const online = useOnline();
  const [down, setDown] = useState<Down[]>([]);
  const [unreachable, setUnreachable] = useState(false);

  useEffect(() => {
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const poll = async () => {
      let next = POLL_MS;
      try {
        const resp = await fetch(`${apiBase()}/health`, { headers: { Accept: "application/health+json, application/json" } });
        const body = (await resp.json()) as { checks?: Record<string, HealthEntry[]> };
        const failing: Down[] = [];
        for (const [key, entries] of Object.entries(body.checks ?? {})) {
          const entry = entries?.[0];
          if (entry && entry.componentType === "service" && entry.status === "fail") {
            failing.push({ service: key.split(":")[0], reason: entry.output ?? "not answering" });
          }
        }
        if (!stopped) {
          setDown(failing);
          setUnreachable(false);
        }
        if (failing.length) next = POLL_WHILE_DOWN_MS;
      } catch {
        if (!stopped) setUnreachable(true);
        next = POLL_WHILE_DOWN_MS;
      }
      if (!stopped) timer = setTimeout(poll, next);
    };
    void poll();
    const again = () => {
      clearTimeout(timer);
      void poll();
    };
    window.addEventListener("online", again);
    return () => {
      stopped = true;
      clearTimeout(timer);
      window.removeEventListener("online", again);
    };
  }, []);

  if (!online) {
    return (
      <div role="alert" className="banner banner-offline">
        You are offline. What you type is kept; reconnect to continue.
      </div>
    );
  }
  if (unreachable) {
    return (
      <div role="alert" className="banner banner-down">
        Cannot reach the UltrAI API at {apiBase()}. It may be down or restarting; this page checks again every few seconds.
      </div>
    );
  }
  if (down.length) {
    return (
      <div role="alert" className="banner banner-down">
        {down.map((d) => (
          <p key={d.service}>
            The <strong>{d.service}</strong> service is down ({d.reason}). Some features will not work until it is back.
          </p>
        ))}
      </div>
    );
  }
  return null;
}

import { useCallback, useEffect, useRef, useState } from "react";

import { DRAFT_PREFIX } from "./drafts";
import { latestOnly } from "./latest";

/** A form value kept in sessionStorage as the person types, so it survives a trip to the sign-in
 * page when the session ends; `clear` forgets it (after a successful submit). */
export function useDraft<T>(key: string, initial: T): [T, (value: T) => void, () => void] {
  const storageKey = DRAFT_PREFIX + key;
  const [value, setValue] = useState<T>(() => {
    try {
      const stored = sessionStorage.getItem(storageKey);
      return stored !== null ? (JSON.parse(stored) as T) : initial;
    } catch {
      return initial;
    }
  });
  const set = useCallback(
    (next: T) => {
      setValue(next);
      try {
        sessionStorage.setItem(storageKey, JSON.stringify(next));
      } catch {
        // Storage full or disabled: the draft lives in memory only.
      }
    },
    [storageKey],
  );
  const clear = useCallback(() => {
    sessionStorage.removeItem(storageKey);
  }, [storageKey]);
  return [value, set, clear];
}

/** Seconds left of a countdown from `seconds` (null: none), ticking once a second. */
export function useCountdown(seconds: number | null): number | null {
  const [left, setLeft] = useState(seconds);
  useEffect(() => {
    setLeft(seconds);
    if (seconds === null) return;
    const end = Date.now() + seconds * 1000;
    const timer = setInterval(() => {
      const remaining = Math.max(0, Math.ceil((end - Date.now()) / 1000));
      setLeft(remaining);
      if (remaining === 0) clearInterval(timer);
    }, 1000);
    return () => clearInterval(timer);
  }, [seconds]);
  return left;
}

/** Sets the document title and returns a ref for the page's h1, focused when the page opens. */
export function usePageHeading(title: string) {
  const ref = useRef<HTMLHeadingElement>(null);
  useEffect(() => {
    document.title = `${title} · UltrAI`;
  }, [title]);
  useEffect(() => {
    // Only after a navigation inside the app, not on the first load (focus stays at the top).
    if (document.body.dataset.navigated) ref.current?.focus({ preventScroll: true });
    document.body.dataset.navigated = "1";
  }, []);
  return ref;
}

/** Whether the browser says it is online, kept up to date. */
export function useOnline(): boolean {
  const [online, setOnline] = useState(() => navigator.onLine);
  useEffect(() => {
    const on = () => setOnline(true);
    const off = () => setOnline(false);
    window.addEventListener("online", on);
    window.addEventListener("offline", off);
    return () => {
      window.removeEventListener("online", on);
      window.removeEventListener("offline", off);
    };
  }, []);
  return online;
}

/** What `load()` answers, asked when the page opens and again whenever `deps` change; `reload`
 * asks again (a retry button, or after a change the page made). An answer that arrives after a
 * newer request began is dropped. While an error is shown the last data stays. */
export function useLoaded<T>(load: () => Promise<T>, deps: readonly unknown[]): { data: T | null; error: unknown; reload: () => void } {
  const [data, setData] = useState<T | null>(null);
  const [error, setError] = useState<unknown>(null);
  const run = useRef(latestOnly()).current;
  const loader = useRef(load);
  loader.current = load;
  const reload = useCallback(() => {
    setError(null);
    void run(loader.current(), setData, setError);
  }, [run]);
  useEffect(reload, [reload, ...deps]);
  return { data, error, reload };
}

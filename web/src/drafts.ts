export const DRAFT_PREFIX = "ultrai:draft:";

/** Forgets every form draft (on sign-out: the next person on this browser must not see them). */
export function clearDrafts(): void {
  for (let i = sessionStorage.length - 1; i >= 0; i--) {
    const key = sessionStorage.key(i);
    if (key?.startsWith(DRAFT_PREFIX)) sessionStorage.removeItem(key);
  }
}

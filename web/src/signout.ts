import { session } from "./api";
import { clearDrafts } from "./drafts";

/** Ends the session on this browser: the drafts are forgotten (the next person here must not see
 * them), and the session too, in every tab and at auth (which clears the refresh cookie). A failed
 * logout call is no failure: the session is forgotten here whatever the server said, and after a
 * password change or an account deletion auth has ended it already. */
export async function endSession(): Promise<void> {
  clearDrafts();
  try {
    await session.logout();
  } catch {
    // Forgotten here all the same (logout clears the session whatever the answer).
  }
}

/** The app's one session and API client. */

import { ApiClient } from "./client";
import { apiBase } from "./config";
import { Session } from "./session";

export const session = new Session({ base: apiBase });
export const api = new ApiClient(session, apiBase);

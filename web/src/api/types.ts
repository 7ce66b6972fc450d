/** The shapes of the API's answers this app reads (see tests/openapi/*.json). */

export interface DocumentOut {
  id: string;
  name: string;
  kind: string;
  media_type: string;
  size_bytes: number;
  sha256: string;
  page_count: number | null;
  encoding: string | null;
  char_count: number;
  token_count: number;
  chunk_count: number;
  created_at: string;
  links: Record<string, string>;
}

export interface DocumentCreated extends DocumentOut {
  duplicate?: boolean;
}

export interface DocumentPage {
  items: DocumentOut[];
  next_cursor: string | null;
}

export interface ModelResult {
  model: string;
  status: string;
  text?: string | null;
  error: string | null;
  latency_ms: number | null;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
}

export interface AnalysisResult {
  answer: string | null;
  models: ModelResult[];
  synthesis: ModelResult | null;
  map_reduce?: { chunks: number } | null;
  usage: { prompt_tokens: number; completion_tokens: number; cost_usd: number };
  latency_ms?: number;
}

export interface AnalysisOut {
  id: string;
  document_id: string;
  kind: string;
  params: {
    kind?: string;
    question?: string | null;
    fields?: string[] | null;
    instruction?: string | null;
    models?: string[];
    synthesis_model?: string | null;
  };
  status: string;
  stage: string | null;
  result: AnalysisResult | null;
  error: string | null;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
  created_at: string;
  started_at: string | null;
  finished_at: string | null;
  links: Record<string, string>;
  reused?: boolean;
}

export interface ModelOut {
  name: string;
  provider: string;
  status: string;
  context_window: number | null;
  max_output_tokens?: number | null;
  source?: string | null;
  demo?: boolean;
  /** Why the model is not available, when the API says. */
  reason?: string | null;
  detail?: string | null;
}

export interface ModelsResponse {
  models: ModelOut[];
  patterns: string[];
  detail?: string | null;
}

export interface UsageRow {
  model: string;
  requests: number;
  cached: number;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
}

export interface DailyUsage {
  day: string;
  model: string;
  prompt_tokens: number;
  completion_tokens: number;
  cost_usd: number;
  requests: number;
}

export interface UsageResponse {
  user_id: string;
  since: string;
  models: UsageRow[];
  total: { prompt_tokens: number; completion_tokens: number; cost_usd: number };
  budget: {
    usd_per_day?: number | null;
    tokens_per_day?: number | null;
    spent_usd_today?: number;
    spent_tokens_today?: number;
    [key: string]: unknown;
  };
  daily?: DailyUsage[];
}

export interface KeyInfo {
  id: string;
  name: string;
  prefix: string;
  scopes: string[];
  created_at: number;
  expires_at: number | null;
  last_used_at: number | null;
  spent_usd: number;
  budget_usd: number | null;
  rpm: number | null;
  tpm: number | null;
}

export interface NewKey extends KeyInfo {
  key: string;
}

export interface Account {
  id: string;
  email: string;
  created_at: number;
}

export const KEY_SCOPES = ["llm", "documents:read", "documents:write"] as const;

/** What an analysis would cost before any call (POST .../analyses/estimate). */
export interface AnalysisEstimate {
  models: string[];
  synthesis_model: string | null;
  map_reduce: { chunks: number } | null;
  orchestrations: number;
  orchestrations_per_step: Record<string, number>;
  calls: number;
  refused: Record<string, string>;
  input_tokens: { low: number; high: number };
  output_tokens: number;
  cost_usd: { low: number; high: number };
  wall_time_ms: number | null;
  budget: {
    usd_per_day: number | null;
    key_usd_per_day: number | null;
    remaining_usd: number | null;
    fits: boolean;
    over_by_usd: number | null;
    tokens_per_day: number | null;
    remaining_tokens: number | null;
    fits_tokens: boolean;
  };
}

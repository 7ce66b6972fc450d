import type { DailyUsage } from "../api/types";

export type Metric = "tokens" | "cost";

export interface DayBar {
  day: string;
  total: number;
  segments: { model: string; value: number; series: number }[];
}

/** Every UTC day from `days - 1` days before `today` up to it, "YYYY-MM-DD", oldest first. */
export function dayRange(days: number, today: Date = new Date()): string[] {
  const out: string[] = [];
  const end = Date.UTC(today.getUTCFullYear(), today.getUTCMonth(), today.getUTCDate());
  for (let i = days - 1; i >= 0; i--) out.push(new Date(end - i * 86_400_000).toISOString().slice(0, 10));
  return out;
}

/** The daily rows as one stacked bar per day (days with no use get an empty bar), the models
 * in a stable order so each keeps its colour. */
export function dailyBars(rows: DailyUsage[], days: string[], metric: Metric): { bars: DayBar[]; models: string[]; max: number } {
  const models = [...new Set(rows.map((r) => r.model))].sort();
  const byDay = new Map<string, DailyUsage[]>();
  for (const r of rows) byDay.set(r.day, [...(byDay.get(r.day) ?? []), r]);
  const allDays = [...new Set([...days, ...byDay.keys()])].sort();
  const bars = allDays.map((day) => {
    const segments = (byDay.get(day) ?? [])
      .map((r) => ({
        model: r.model,
        value: metric === "tokens" ? r.prompt_tokens + r.completion_tokens : r.cost_usd,
        series: models.indexOf(r.model),
      }))
      .filter((s) => s.value > 0)
      .sort((a, b) => a.series - b.series);
    return { day, total: segments.reduce((sum, s) => sum + s.value, 0), segments };
  });
  const max = Math.max(0, ...bars.map((b) => b.total));
  return { bars, models, max };
}

/** A round upper bound for the axis: 1, 2 or 5 times a power of ten at or above `max`. */
export function niceMax(max: number): number {
  if (max <= 0) return 1;
  const power = 10 ** Math.floor(Math.log10(max));
  for (const step of [1, 2, 5, 10]) if (step * power >= max) return step * power;
  return 10 * power;
}

import { useState } from "react";
import { api } from "../api";
import type { UsageResponse } from "../api/types";
import { ErrorMessage } from "../components/ErrorMessage";
import { formatNumber, formatUsd } from "../format";
import { useLoaded, usePageHeading } from "../hooks";
import { dailyBars, dayRange, niceMax, type Metric } from "./usageChart";

const PERIODS = [7, 30, 90];
const SERIES = 8; // colours in styles.css: .series-0 … .series-7

export function UsagePage() {
  const heading = usePageHeading("Usage");
  const [days, setDays] = useState(7);
  const [metric, setMetric] = useState<Metric>("tokens");
  const { data: usage, error, reload } = useLoaded(() => api.json<UsageResponse>(`/api/v1/llm/usage?days=${days}`), [days]);

  return (
    <main id="main" className="main">
      <h1 ref={heading} tabIndex={-1}>
        Usage
      </h1>
      <div className="field-row">
        <div className="field">
          <label htmlFor="period">Period</label>
          <select id="period" value={days} onChange={(e) => setDays(Number(e.target.value))}>
            {PERIODS.map((p) => (
              <option key={p} value={p}>
                Last {p} days
              </option>
            ))}
          </select>
        </div>
        <div className="field">
          <label htmlFor="metric">Show</label>
          <select id="metric" value={metric} onChange={(e) => setMetric(e.target.value as Metric)}>
            <option value="tokens">Tokens</option>
            <option value="cost">Cost (USD)</option>
          </select>
        </div>
      </div>
      {error !== null && <ErrorMessage error={error} onRetry={reload} />}
      {usage && (
        <>
          <Budget usage={usage} />
          <section aria-labelledby="daily-heading" className="card">
            <h2 id="daily-heading">Per day</h2>
            {usage.daily ? <Chart usage={usage} days={days} metric={metric} /> : <p>This API does not report usage per day yet.</p>}
          </section>
          <section aria-labelledby="models-heading" className="card">
            <h2 id="models-heading">Per model, last {days} days</h2>
            {usage.models.length === 0 ? (
              <p>No use in this period.</p>
            ) : (
              <div className="table-wrap" tabIndex={0} role="group" aria-labelledby="models-heading">
                <table>
                  <thead>
                    <tr>
                      <th scope="col">Model</th>
                      <th scope="col">Requests</th>
                      <th scope="col">Cached</th>
                      <th scope="col">Prompt tokens</th>
                      <th scope="col">Completion tokens</th>
                      <th scope="col">Cost</th>
                    </tr>
                  </thead>
                  <tbody>
                    {usage.models.map((m) => (
                      <tr key={m.model}>
                        <th scope="row">{m.model}</th>
                        <td>{formatNumber(m.requests)}</td>
                        <td>{formatNumber(m.cached)}</td>
                        <td>{formatNumber(m.prompt_tokens)}</td>
                        <td>{formatNumber(m.completion_tokens)}</td>
                        <td>{formatUsd(m.cost_usd)}</td>
                      </tr>
                    ))}
                  </tbody>
                  <tfoot>
                    <tr>
                      <th scope="row">Total</th>
                      <td>{formatNumber(usage.models.reduce((s, m) => s + m.requests, 0))}</td>
                      <td>{formatNumber(usage.models.reduce((s, m) => s + m.cached, 0))}</td>
                      <td>{formatNumber(usage.total.prompt_tokens)}</td>
                      <td>{formatNumber(usage.total.completion_tokens)}</td>
                      <td>{formatUsd(usage.total.cost_usd)}</td>
                    </tr>
                  </tfoot>
                </table>
              </div>
            )}
          </section>
        </>
      )}
    </main>
  );
}

function Budget({ usage }: { usage: UsageResponse }) {
  const b = usage.budget;
  const usd = typeof b.usd_per_day === "number" ? b.usd_per_day : null;
  const tokens = typeof b.tokens_per_day === "number" ? b.tokens_per_day : null;
  const spentUsd = typeof b.spent_usd_today === "number" ? b.spent_usd_today : 0;
  const spentTokens = typeof b.spent_tokens_today === "number" ? b.spent_tokens_today : 0;
  return (
    <section aria-labelledby="budget-heading" className="card budget">
      <h2 id="budget-heading">Budget left</h2>
      {usd === null && tokens === null && <p>No daily budget is set: {formatUsd(spentUsd)} and {formatNumber(spentTokens)} tokens used today (UTC).</p>}
      {usd !== null && (
        <div className="budget-line">
          <p>
            <strong>{formatUsd(Math.max(0, usd - spentUsd))}</strong> of {formatUsd(usd)} left today ({formatUsd(spentUsd)} spent).
          </p>
          <progress aria-label="Daily cost budget used" max={usd} value={Math.min(usd, spentUsd)} />
        </div>
      )}
      {tokens !== null && (
        <div className="budget-line">
          <p>
            <strong>{formatNumber(Math.max(0, tokens - spentTokens))}</strong> of {formatNumber(tokens)} tokens left today ({formatNumber(spentTokens)}{" "}
            used).
          </p>
          <progress aria-label="Daily token budget used" max={tokens} value={Math.min(tokens, spentTokens)} />
        </div>
      )}
      <p className="hint">Budgets renew at 00:00 UTC.</p>
    </section>
  );
}

const W = 640;
const H = 240;
const PAD = { top: 12, right: 8, bottom: 36, left: 64 };

function Chart({ usage, days, metric }: { usage: UsageResponse; days: number; metric: Metric }) {
  const { bars, models, max } = dailyBars(usage.daily ?? [], dayRange(days), metric);
  const top = niceMax(max);
  const plotW = W - PAD.left - PAD.right;
  const plotH = H - PAD.top - PAD.bottom;
  const slot = plotW / Math.max(1, bars.length);
  const barW = Math.max(2, slot * 0.7);
  const fmt = (v: number) => (metric === "cost" ? formatUsd(v) : formatNumber(Math.round(v)));
  const labelEvery = Math.ceil(bars.length / 8);
  const summary =
    max === 0
      ? `No use in the last ${days} days.`
      : `${metric === "cost" ? "Cost" : "Tokens"} per day over the last ${days} days; the most in one day was ${fmt(max)}.`;
  return (
    <figure className="chart">
      <svg viewBox={`0 0 ${W} ${H}`} role="img" aria-label={summary} className="chart-svg">
        {[0, 0.5, 1].map((f) => {
          const y = PAD.top + plotH * (1 - f);
          return (
            <g key={f} className="grid">
              <line x1={PAD.left} x2={W - PAD.right} y1={y} y2={y} />
              <text x={PAD.left - 6} y={y + 4} textAnchor="end">
                {fmt(top * f)}
              </text>
            </g>
          );
        })}
        {bars.map((bar, i) => {
          const x = PAD.left + i * slot + (slot - barW) / 2;
          let y = PAD.top + plotH;
          return (
            <g key={bar.day}>
              {bar.segments.map((s) => {
                const h = (s.value / top) * plotH;
                y -= h;
                return (
                  <rect key={s.model} x={x} y={y} width={barW} height={Math.max(h, 0.5)} className={`series-${s.series % SERIES}`}>
                    <title>{`${bar.day} · ${s.model}: ${fmt(s.value)}`}</title>
                  </rect>
                );
              })}
              {i % labelEvery === 0 && (
                <text x={x + barW / 2} y={H - PAD.bottom + 16} textAnchor="middle" className="axis-label">
                  {bar.day.slice(5)}
                </text>
              )}
            </g>
          );
        })}
      </svg>
      <figcaption>
        {models.length > 0 && (
          <ul className="legend" aria-label="Models">
            {models.map((m, i) => (
              <li key={m}>
                <svg width="12" height="12" aria-hidden="true" className="swatch">
                  <rect width="12" height="12" className={`series-${i % SERIES}`} />
                </svg>{" "}
                {m}
              </li>
            ))}
          </ul>
        )}
        <details>
          <summary>The figures as a table</summary>
          <div className="table-wrap" tabIndex={0} role="group" aria-label="Usage per day and model">
            <table>
              <thead>
                <tr>
                  <th scope="col">Day (UTC)</th>
                  <th scope="col">Model</th>
                  <th scope="col">Requests</th>
                  <th scope="col">Prompt tokens</th>
                  <th scope="col">Completion tokens</th>
                  <th scope="col">Cost</th>
                </tr>
              </thead>
              <tbody>
                {(usage.daily ?? []).map((r) => (
                  <tr key={`${r.day}-${r.model}`}>
                    <td>{r.day}</td>
                    <td>{r.model}</td>
                    <td>{formatNumber(r.requests)}</td>
                    <td>{formatNumber(r.prompt_tokens)}</td>
                    <td>{formatNumber(r.completion_tokens)}</td>
                    <td>{formatUsd(r.cost_usd)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </div>
        </details>
      </figcaption>
    </figure>
  );
}

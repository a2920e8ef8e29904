import { useState } from "react";
import { ipc, toIpcError, type Health as HealthT, type IpcError, type ServiceHealth } from "../ipc";
import { formatDuration, formatRate, formatTime } from "../format";
import { ErrorBox, usePolling } from "./common";

export const HEALTH_MS = 5000;

const SERVICES: { name: ServiceHealth["name"]; label: string }[] = [
  { name: "management", label: "Management" },
  { name: "vault", label: "Vault" },
  { name: "relay", label: "Relay" },
];

function stateOf(s: ServiceHealth | undefined): { cls: string; text: string } {
  if (!s || s.ready === null) return { cls: "badge-expired", text: "not configured" };
  return s.ready ? { cls: "badge-executed", text: "ready" } : { cls: "badge-denied", text: "not ready" };
}

function checkValue(v: unknown): string {
  if (v === null || v === undefined) return "—";
  if (typeof v === "string" || typeof v === "number" || typeof v === "boolean") return String(v);
  return JSON.stringify(v);
}

export function Health() {
  const [health, setHealth] = useState<HealthT | null>(null);
  const [error, setError] = useState<IpcError | null>(null);

  usePolling(
    async () => {
      try {
        setHealth(await ipc.health());
        setError(null);
      } catch (e) {
        setError(toIpcError(e));
      }
    },
    HEALTH_MS,
    true,
    true,
  );

  const relay = health?.relay ?? null;

  return (
    <div className="stack">
      <div className="toolbar">
        <span className="muted small">
          Refreshed every 5 s{health ? ` · last sample ${formatTime(health.sampled_at_ms)}` : ""}
        </span>
      </div>
      <ErrorBox error={error} testId="health-error" />
      {!health && !error ? <p className="empty">Sampling…</p> : null}
      {health ? (
        <>
          <div className="grid-3">
            {SERVICES.map(({ name, label }) => {
              const s = health.services.find((x) => x.name === name);
              const st = stateOf(s);
              const checks = Object.entries(s?.checks ?? {});
              return (
                <section key={name} className="card service" data-testid={`service-${name}`} data-ready={String(s?.ready ?? null)}>
                  <header className="service-head">
                    <h2 className="section-title">{label}</h2>
                    <span className={`badge ${st.cls}`} data-testid="service-state">
                      {st.text}
                    </span>
                  </header>
                  <dl className="kv kv-compact">
                    <dt>URL</dt>
                    <dd className="mono small">{s?.url ?? "—"}</dd>
                    <dt>HTTP status</dt>
                    <dd className="mono">{s?.status ?? "—"}</dd>
                    <dt>Latency</dt>
                    <dd className="mono" data-testid="service-latency">
                      {s?.latency_ms !== null && s?.latency_ms !== undefined ? `${s.latency_ms} ms` : "—"}
                    </dd>
                    {checks.map(([k, v]) => (
                      <CheckRow key={k} k={k} v={checkValue(v)} />
                    ))}
                  </dl>
                  {s?.error ? <div className="alert alert-error small">{s.error}</div> : null}
                </section>
              );
            })}
          </div>
          <section className="card section">
            <h2 className="section-title">Relay</h2>
            {health.relay_error ? <div className="alert alert-error">{health.relay_error}</div> : null}
            {relay ? (
              <div className="stats">
                <Stat label="Connections" testId="relay-connections" value={String(relay.connections)} />
                <Stat label="Mailbox depth" testId="mailbox-depth" value={String(relay.mailbox_depth)} />
                <div className="stat stat-wide" data-testid="relay-rates">
                  <div className="stat-label">Per second (accepted / delivered / refused)</div>
                  <div className="stat-value mono">
                    <span data-testid="rate-accepted">{formatRate(relay.accepted_per_sec)}</span>
                    {" / "}
                    <span data-testid="rate-delivered">{formatRate(relay.delivered_per_sec)}</span>
                    {" / "}
                    <span data-testid="rate-refused" className={relay.refused_per_sec ? "text-bad" : undefined}>
                      {formatRate(relay.refused_per_sec)}
                    </span>
                  </div>
                  {relay.accepted_per_sec === null ? <div className="muted small">Rates appear after the second sample.</div> : null}
                </div>
                <Stat
                  label="Totals (accepted / delivered / refused)"
                  value={`${relay.accepted_total} / ${relay.delivered_total} / ${relay.refused_total}`}
                />
                <Stat
                  label="Revocation view age"
                  testId="revocation-age"
                  value={relay.revocation_view_age_seconds === null ? "—" : formatDuration(relay.revocation_view_age_seconds)}
                />
              </div>
            ) : !health.relay_error ? (
              <p className="empty small">No relay statistics (no relay URL configured).</p>
            ) : null}
          </section>
        </>
      ) : null}
    </div>
  );
}

function CheckRow(props: { k: string; v: string }) {
  return (
    <>
      <dt>{props.k}</dt>
      <dd className="mono small">{props.v}</dd>
    </>
  );
}

function Stat(props: { label: string; value: string; testId?: string }) {
  return (
    <div className="stat">
      <div className="stat-label">{props.label}</div>
      <div className="stat-value mono" data-testid={props.testId}>
        {props.value}
      </div>
    </div>
  );
}

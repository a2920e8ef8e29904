import { useEffect, useRef, useState, type ReactNode } from "react";
import type { IpcError } from "../ipc";
import { errorText, needsSignIn } from "../format";

/** The current time, re-rendered every `periodMs`. */
export function useNow(periodMs = 1000): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    const t = setInterval(() => setNow(Date.now()), periodMs);
    return () => clearInterval(t);
  }, [periodMs]);
  return now;
}

/**
 * Runs `fn` now (if `immediate`) and then every `periodMs` while `enabled`, never two at once:
 * the next run is scheduled after the previous one settled.
 */
export function usePolling(
  fn: () => Promise<unknown>,
  periodMs: number,
  enabled: boolean,
  immediate = true,
): void {
  const ref = useRef(fn);
  ref.current = fn;
  useEffect(() => {
    if (!enabled) return undefined;
    let stopped = false;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const tick = async () => {
      try {
        await ref.current();
      } catch {
        /* the callback reports its own errors */
      }
      if (!stopped) timer = setTimeout(tick, periodMs);
    };
    if (immediate) void tick();
    else timer = setTimeout(tick, periodMs);
    return () => {
      stopped = true;
      if (timer) clearTimeout(timer);
    };
  }, [periodMs, enabled, immediate]);
}

export function ErrorBox(props: {
  error: IpcError | null;
  testId?: string;
  onSignInAgain?: () => void;
}) {
  const { error, testId, onSignInAgain } = props;
  if (!error) return null;
  return (
    <div className="alert alert-error" role="alert" data-testid={testId}>
      <span className="alert-text">{errorText(error)}</span>
      <code className="alert-code">{error.code}</code>
      {needsSignIn(error) && onSignInAgain ? (
        <button type="button" className="btn btn-small" onClick={onSignInAgain}>
          Sign in again
        </button>
      ) : null}
    </div>
  );
}

export function Field(props: { label: string; hint?: ReactNode; children: ReactNode; htmlFor?: string }) {
  return (
    <div className="field">
      <label className="field-label" htmlFor={props.htmlFor}>
        {props.label}
      </label>
      {props.children}
      {props.hint ? <div className="field-hint">{props.hint}</div> : null}
    </div>
  );
}

export function Spinner() {
  return <span className="spinner" aria-hidden="true" />;
}

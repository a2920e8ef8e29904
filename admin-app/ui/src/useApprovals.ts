import { useCallback, useEffect, useRef, useState } from "react";
import { ipc, onApprovals, subscribe, toIpcError, type Approval, type IpcError } from "./ipc";

function sortNewestFirst(list: Approval[]): Approval[] {
  return [...list].sort((a, b) => b.created_at_ms - a.created_at_ms);
}

export function upsertApproval(list: Approval[], a: Approval): Approval[] {
  const i = list.findIndex((x) => x.id === a.id);
  if (i === -1) return sortNewestFirst([a, ...list]);
  const next = list.slice();
  next[i] = a;
  return next;
}

export interface ApprovalsState {
  list: Approval[] | null;
  error: IpcError | null;
  loading: boolean;
  reload: () => Promise<void>;
  upsert: (a: Approval) => void;
}

/** The approvals list, kept current by the `approvals` event (`lagged` re-reads it). */
export function useApprovals(): ApprovalsState {
  const [list, setList] = useState<Approval[] | null>(null);
  const [error, setError] = useState<IpcError | null>(null);
  const [loading, setLoading] = useState(false);
  const seq = useRef(0);

  const reload = useCallback(async () => {
    const mine = ++seq.current;
    setLoading(true);
    try {
      const l = await ipc.approvalsList();
      if (mine === seq.current) {
        setList(sortNewestFirst(l));
        setError(null);
      }
    } catch (e) {
      if (mine === seq.current) setError(toIpcError(e));
    } finally {
      if (mine === seq.current) setLoading(false);
    }
  }, []);

  const upsert = useCallback((a: Approval) => {
    setList((l) => upsertApproval(l ?? [], a));
  }, []);

  useEffect(() => {
    void reload();
  }, [reload]);

  useEffect(
    () =>
      subscribe(
        onApprovals((e) => {
          if (e.type === "lagged") void reload();
          else if ("approval" in e && e.approval) upsert(e.approval);
        }),
      ),
    [reload, upsert],
  );

  return { list, error, loading, reload, upsert };
}

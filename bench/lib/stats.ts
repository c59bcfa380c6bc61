/** Median and range of repeated measurements. */
export interface Summary {
  median: number;
  min: number;
  max: number;
  n: number;
  values: number[];
}

export function summarize(values: readonly number[]): Summary | undefined {
  const v = values.filter((x) => Number.isFinite(x)).slice().sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = Math.floor(v.length / 2);
  const median = v.length % 2 === 1 ? (v[mid] as number) : ((v[mid - 1] as number) + (v[mid] as number)) / 2;
  return { median, min: v[0] as number, max: v[v.length - 1] as number, n: v.length, values: [...values] };
}

/** The p-th percentile (0–100) by nearest rank. */
export function percentile(values: readonly number[], p: number): number | undefined {
  if (values.length === 0) return undefined;
  const v = values.slice().sort((a, b) => a - b);
  const rank = Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1));
  return v[rank];
}

export function fmt(x: number | undefined, digits = 1): string {
  if (x === undefined || !Number.isFinite(x)) return '–';
  return x.toFixed(digits);
}

export function fmtSummary(s: Summary | undefined, digits = 0): string {
  if (!s) return '–';
  return s.n > 1 ? `${fmt(s.median, digits)} (${fmt(s.min, digits)}–${fmt(s.max, digits)})` : fmt(s.median, digits);
}

/** A share (0–1) as a whole percentage ("3%"); '–' when unknown. */
export function fmtShare(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '–' : `${(x * 100).toFixed(0)}%`;
}

/** Shares (0–1) as percentages: "3%", or "3% (max 35%)" over several runs. */
export function fmtShares(s: Summary | undefined): string {
  if (!s) return '–';
  return s.n > 1 && Math.round(s.max * 100) !== Math.round(s.median * 100) ? `${fmtShare(s.median)} (max ${fmtShare(s.max)})` : fmtShare(s.median);
}

/**
 * Runs `once(entry, rep)` `reps` times for every entry, round the entries (rep 1 of each, then
 * rep 2...): the machine is shared and drifts over minutes, and a ratio is fairest between runs
 * taken side by side. Each round starts one entry further on (rep r at entry r mod n), so that
 * no entry always runs first, right after the warm-ups or the previous round's last entry. An
 * entry whose run throws goes to `failed` and is skipped from then on.
 */
export async function repeatRoundRobin<E>(reps: number, entries: readonly E[], once: (entry: E, rep: number) => Promise<void>, failed: (entry: E, err: unknown) => void): Promise<void> {
  const out = new Set<E>();
  for (let rep = 0; rep < reps; rep++) {
    for (const e of roundOrder(entries, rep)) {
      if (out.has(e)) continue;
      try {
        await once(e, rep);
      } catch (err) {
        out.add(e);
        failed(e, err);
      }
    }
  }
}

/** `entries` rotated to start at entry `rep` mod their count (repeatRoundRobin's round order). */
export function roundOrder<E>(entries: readonly E[], rep: number): E[] {
  const n = entries.length;
  if (n === 0) return [];
  const k = rep % n;
  return [...entries.slice(k), ...entries.slice(0, k)];
}

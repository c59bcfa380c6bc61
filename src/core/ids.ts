/**
 * Connection ids: short, unique within a process run, numbered in accept order.
 * The prefix is the process start time so ids from restarts do not collide in logs.
 *
 * The native engine numbers the connections it carries alone (native/src/engine-only.c) from
 * the same sequence: once the addon is loaded, both draw from its counter (shareConnectionCounter),
 * so an id is never made twice whoever makes it.
 */
const runPrefix = Date.now().toString(36);
let counter = 0;
let shared: BigUint64Array | undefined;

/** What every id starts with: the engine writes its ids as this prefix and the number in base 36. */
export const connectionIdPrefix = `${runPrefix}-`;

export function nextConnectionId(): string {
  const n = shared === undefined ? ++counter : Number(Atomics.add(shared, 0, 1n)) + 1;
  return connectionIdPrefix + n.toString(36);
}

/** From now on, numbers come from `cell` (the addon's counter, connectionCounter()), which starts
 *  after the last number drawn here. */
export function shareConnectionCounter(cell: BigUint64Array): void {
  if (shared !== undefined) return;
  const drawn = BigInt(counter);
  while (true) {
    const now = Atomics.load(cell, 0);
    if (now >= drawn || Atomics.compareExchange(cell, 0, now, drawn) === now) break;
  }
  shared = cell;
}

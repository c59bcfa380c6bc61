/**
 * Connection ids: short, unique within a process run, sortable by accept order.
 * The prefix is the process start time so ids from restarts do not collide in logs.
 */
const runPrefix = Date.now().toString(36);
let counter = 0;

export function nextConnectionId(): string {
  counter += 1;
  return `${runPrefix}-${counter.toString(36)}`;
}

/**
 * Reading a V8 heap snapshot (.heapsnapshot, as v8.writeHeapSnapshot writes it) into bytes and
 * counts per kind of object: objects by constructor name, everything else by node type
 * ("(closure)", "(string)", "(code)", "(array) <name>"…). Two of them diffed and divided by the
 * number of connections say what each connection keeps alive on the JS heap.
 */
import { readFileSync } from 'node:fs';

export interface HeapBucket { key: string; bytes: number; count: number }

export function heapBuckets(file: string): Map<string, HeapBucket> {
  const snap = JSON.parse(readFileSync(file, 'utf8')) as {
    snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]] } };
    nodes: number[];
    strings: string[];
  };
  const fields = snap.snapshot.meta.node_fields;
  const width = fields.length;
  const iType = fields.indexOf('type');
  const iName = fields.indexOf('name');
  const iSize = fields.indexOf('self_size');
  const types = snap.snapshot.meta.node_types[0];
  const out = new Map<string, HeapBucket>();
  const { nodes, strings } = snap;
  for (let i = 0; i < nodes.length; i += width) {
    const type = types[nodes[i + iType] as number] ?? '?';
    const name = strings[nodes[i + iName] as number] ?? '?';
    let key: string;
    if (type === 'object' || type === 'native') key = name.length > 60 ? `${name.slice(0, 57)}...` : name;
    else if (type === 'array' || type === 'hidden' || type === 'object shape') key = `(${type}) ${name.length > 40 ? `${name.slice(0, 37)}...` : name}`;
    else if (type === 'string' || type === 'concatenated string' || type === 'sliced string') key = '(string)';
    else key = `(${type})`;
    let b = out.get(key);
    if (!b) out.set(key, (b = { key, bytes: 0, count: 0 }));
    b.bytes += nodes[i + iSize] as number;
    b.count++;
  }
  return out;
}

/** (after − before) / per, largest first: what each of `per` connections holds. */
export function heapDiffPer(before: Map<string, HeapBucket>, after: Map<string, HeapBucket>, per: number, top = 15): { key: string; bytesPer: number; countPer: number }[] {
  const rows: { key: string; bytesPer: number; countPer: number }[] = [];
  for (const [key, a] of after) {
    const b = before.get(key);
    const bytes = a.bytes - (b?.bytes ?? 0);
    const count = a.count - (b?.count ?? 0);
    if (bytes > 0) rows.push({ key, bytesPer: bytes / per, countPer: count / per });
  }
  rows.sort((x, y) => y.bytesPer - x.bytesPer);
  return rows.slice(0, top);
}

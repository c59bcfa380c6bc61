/**
 * Files of deterministic blob content for nginx to serve (same bytes as the blob server sends,
 * peer-blob-content.ts), cached between runs in the system temp directory; and their SHA-256.
 */
import { createWriteStream, mkdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import * as os from 'node:os';
import { once } from 'node:events';
import { blobChunks, blobSha256, DEFAULT_DOWNLOAD_SEED } from '../../test/helpers/peer-blob-content.js';

export const BLOB_ROOT = join(os.tmpdir(), 'mptcp-proxy-bench-www');
const shaCache = new Map<number, string>();

export function expectedSha256(bytes: number): string {
  let sha = shaCache.get(bytes);
  if (sha === undefined) {
    sha = blobSha256(DEFAULT_DOWNLOAD_SEED, bytes);
    shaCache.set(bytes, sha);
  }
  return sha;
}

export function blobFileName(bytes: number): string {
  return `blob-${bytes}`;
}

/** Make sure BLOB_ROOT/blob-<bytes> exists with the right size. */
export async function ensureBlobFile(bytes: number): Promise<string> {
  mkdirSync(BLOB_ROOT, { recursive: true });
  const file = join(BLOB_ROOT, blobFileName(bytes));
  try {
    if (statSync(file).size === bytes) return file;
  } catch {
    // absent: write it
  }
  const out = createWriteStream(file);
  for (const chunk of blobChunks(DEFAULT_DOWNLOAD_SEED, bytes, 1024 * 1024)) {
    if (!out.write(chunk)) await once(out, 'drain');
  }
  out.end();
  await once(out, 'finish');
  return file;
}

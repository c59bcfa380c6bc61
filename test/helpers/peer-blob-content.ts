/**
 * Deterministic pseudo-random content and the tiny wire protocol shared by the blob peer
 * programs (peer-blob-server.ts, peer-blob-client.ts).
 *
 * Protocol (one TCP/MPTCP connection):
 *   1. client → server: 8-byte big-endian unsigned length D = bytes it wants to download;
 *   2. client → server: its upload, then a half-close (FIN);
 *   3. server → client: D bytes of blobContent(downloadSeed), then FIN (concurrently with 2).
 * Both ends can compute the expected SHA-256 of either direction from (seed, length), so nothing
 * but the data crosses the wire and a corrupted or truncated byte shows up as a hash mismatch.
 *
 * Content: xorshift32 (Marsaglia 2003) words, little-endian, seeded per stream. Chunk boundaries
 * do not change the bytes (the state carries over; only the last chunk may be cut short).
 */
import { createHash } from 'node:crypto';

/** Header size: one u64 download length. */
export const BLOB_HEADER_BYTES = 8;
/** Seeds used when none is given, so client and server agree without configuration. */
export const DEFAULT_UPLOAD_SEED = 0x75706c64; // "upld"
export const DEFAULT_DOWNLOAD_SEED = 0x646f776e; // "down"
/** Chunk size used for writes: big enough that per-write overhead does not limit throughput. */
export const BLOB_CHUNK_BYTES = 256 * 1024;

/** Yields `length` bytes of deterministic content for `seed`, in chunks of `chunkBytes` (multiple of 4). */
export function* blobChunks(seed: number, length: number, chunkBytes = BLOB_CHUNK_BYTES): Generator<Buffer> {
  if (chunkBytes % 4 !== 0 || chunkBytes <= 0) throw new RangeError('chunkBytes must be a positive multiple of 4');
  // xorshift32 must not start at 0 (it would stay 0 forever).
  let x = seed >>> 0 || 0x9e3779b9;
  let remaining = length;
  while (remaining > 0) {
    const words = new Uint32Array(chunkBytes / 4);
    for (let i = 0; i < words.length; i++) {
      x ^= x << 13;
      x >>>= 0;
      x ^= x >>> 17;
      x ^= x << 5;
      x >>>= 0;
      words[i] = x;
    }
    const n = Math.min(remaining, chunkBytes);
    // Uint32Array is host-endian; Linux on x86/arm64 is little-endian, and both ends run here.
    yield Buffer.from(words.buffer, 0, n);
    remaining -= n;
  }
}

/** SHA-256 (hex) of `length` bytes of content for `seed`. */
export function blobSha256(seed: number, length: number): string {
  const hash = createHash('sha256');
  for (const chunk of blobChunks(seed, length)) hash.update(chunk);
  return hash.digest('hex');
}

/** Encode the request header. */
export function encodeBlobHeader(downloadBytes: number): Buffer {
  const b = Buffer.alloc(BLOB_HEADER_BYTES);
  b.writeBigUInt64BE(BigInt(downloadBytes));
  return b;
}

/** Decode the request header (the first 8 bytes of `b`). */
export function decodeBlobHeader(b: Buffer): number {
  const n = b.readBigUInt64BE(0);
  if (n > BigInt(Number.MAX_SAFE_INTEGER)) throw new RangeError(`download length ${n} too large`);
  return Number(n);
}

/** Parse a byte count: `5000`, `64k`, `5M`, `1G` (binary multiples). */
export function parseByteCount(text: string): number {
  const m = /^(\d+(?:\.\d+)?)([kKmMgG]?)$/.exec(text.trim());
  if (!m) throw new RangeError(`invalid byte count ${JSON.stringify(text)} (e.g. 5000, 64k, 5M)`);
  const unit = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3 }[(m[2] as string).toLowerCase() as '' | 'k' | 'm' | 'g'];
  return Math.round(Number(m[1]) * unit);
}

/** Parse a seed given as decimal or 0x-hex. */
export function parseSeed(text: string): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < 0 || n > 0xffffffff) throw new RangeError(`invalid seed ${JSON.stringify(text)} (u32)`);
  return n;
}

/**
 * The credentials file: one user per line,
 *
 *     user:scrypt$N$r$p$saltBase64$hashBase64
 *
 * with `#` comments and blank lines allowed. Read once when the access policy is built;
 * checked for every HTTP Basic or SOCKS5 (RFC 1929) login.
 *
 * Passwords are checked with scrypt (RFC 7914) and compared with timingSafeEqual. An
 * unknown user is checked against a dummy hash with the same parameters, so the time a
 * login takes does not reveal whether the user exists.
 */
import { randomBytes, scrypt, timingSafeEqual } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { ConfigError, isSystemError } from '../core/errors.js';

export interface ScryptParams {
  /** CPU/memory cost, a power of two. */
  N: number;
  /** Block size. */
  r: number;
  /** Parallelisation. */
  p: number;
}

/** 2^15, 8, 1: about 32 MiB and 50-100 ms per check on a small machine (OWASP minimum is 2^17 for
 *  interactive logins; a proxy checks on every connection, so we trade some cost for latency). */
export const DEFAULT_SCRYPT_PARAMS: Readonly<ScryptParams> = { N: 1 << 15, r: 8, p: 1 };
const SALT_BYTES = 16;
const KEY_BYTES = 32;
/** Upper bounds on parameters read from the file, so a typo cannot make every login take minutes. */
const MAX_N = 1 << 20;
const MAX_R = 32;
const MAX_P = 16;
/** How many scrypt computations run at once. scrypt runs on libuv's thread pool (4 threads by
 *  default), which dns.lookup also uses: a flood of logins must not starve upstream DNS. */
const MAX_CONCURRENT_CHECKS = 2;

export interface StoredHash extends ScryptParams {
  salt: Buffer;
  hash: Buffer;
}

export interface CredentialStore {
  /** Number of users. */
  readonly size: number;
  /** True iff `user` exists and `password` matches; takes about as long for unknown users. */
  verify(user: string, password: string): Promise<boolean>;
}

function scryptAsync(password: string | Buffer, salt: Buffer, keyLength: number, params: ScryptParams): Promise<Buffer> {
  // Node refuses when 128 * N * r exceeds maxmem (default 32 MiB); give it twice what it needs.
  const maxmem = 256 * params.N * params.r + 1024 * 1024;
  return new Promise((resolve, reject) => {
    scrypt(password, salt, keyLength, { N: params.N, r: params.r, p: params.p, maxmem }, (err, key) => {
      if (err) reject(err);
      else resolve(key);
    });
  });
}

function isValidScryptParams(p: ScryptParams): boolean {
  const powerOfTwo = p.N > 1 && (p.N & (p.N - 1)) === 0;
  return powerOfTwo && p.N <= MAX_N && Number.isInteger(p.r) && p.r >= 1 && p.r <= MAX_R && Number.isInteger(p.p) && p.p >= 1 && p.p <= MAX_P;
}

/**
 * Hashes a password into the file's format (`scrypt$N$r$p$salt$hash`, without the `user:`),
 * for `mptcp-proxy passwd USER`. `params` exist for tests, which use a small N.
 */
export async function hashPassword(password: string, params: Partial<ScryptParams> = {}): Promise<string> {
  const p: ScryptParams = { ...DEFAULT_SCRYPT_PARAMS, ...params };
  if (!isValidScryptParams(p)) throw new RangeError(`invalid scrypt parameters N=${p.N} r=${p.r} p=${p.p}`);
  const salt = randomBytes(SALT_BYTES);
  const hash = await scryptAsync(password, salt, KEY_BYTES, p);
  return `scrypt$${p.N}$${p.r}$${p.p}$${salt.toString('base64')}$${hash.toString('base64')}`;
}

/** A user name the file (and RFC 1929's one-byte length) can hold. */
export function isValidUserName(user: string): boolean {
  return user.length > 0 && Buffer.byteLength(user) <= 255 && !/[:\s#]/.test(user) && !/[\u0000-\u001f\u007f]/.test(user);
}

/** `user:scrypt$...`, one line of the credentials file. */
export function formatCredentialLine(user: string, hash: string): string {
  if (!isValidUserName(user)) throw new RangeError(`user name "${user}" must be 1-255 bytes without ":", "#", spaces or control characters`);
  return `${user}:${hash}`;
}

const BASE64 = /^[A-Za-z0-9+/]+={0,2}$/;

/** Parses `scrypt$N$r$p$salt$hash`; returns a reason string when it is not valid. */
export function parseStoredHash(text: string): StoredHash | string {
  const parts = text.split('$');
  if (parts[0] !== 'scrypt') return `the hash must start with "scrypt$", found "${parts[0]}"`;
  if (parts.length !== 6) return `expected 6 "$"-separated fields (scrypt$N$r$p$salt$hash), found ${parts.length}`;
  const [, nText, rText, pText, saltText, hashText] = parts as [string, string, string, string, string, string];
  if (![nText, rText, pText].every((t) => /^[1-9][0-9]{0,7}$/.test(t))) return 'N, r and p must be positive integers';
  const params: ScryptParams = { N: Number(nText), r: Number(rText), p: Number(pText) };
  if (!isValidScryptParams(params)) {
    return `scrypt parameters N=${params.N} r=${params.r} p=${params.p} are out of range (N a power of two up to 2^20, r 1-${MAX_R}, p 1-${MAX_P})`;
  }
  if (!BASE64.test(saltText) || !BASE64.test(hashText)) return 'salt and hash must be base64';
  const salt = Buffer.from(saltText, 'base64');
  const hash = Buffer.from(hashText, 'base64');
  if (salt.length < 8) return `the salt is ${salt.length} bytes; at least 8 are needed`;
  if (hash.length < 16 || hash.length > 64) return `the hash is ${hash.length} bytes; 16 to 64 are accepted`;
  return { ...params, salt, hash };
}

/**
 * Parses the whole file. Any malformed line throws ConfigError naming the file and the
 * line number, so a half-valid file never leaves some users locked out silently.
 */
export function parseCredentials(text: string, file: string): Map<string, StoredHash> {
  const key = 'access.credentialsFile';
  const fix = 'each line must be "user:scrypt$N$r$p$salt$hash" as printed by `mptcp-proxy passwd USER`; # starts a comment';
  const users = new Map<string, StoredHash>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i]!.replace(/\r$/, '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${file} line ${i + 1}`;
    const colon = line.indexOf(':');
    if (colon === -1) throw new ConfigError(key, `${where}: no ":" between user and hash`, fix);
    const user = line.slice(0, colon);
    if (!isValidUserName(user)) throw new ConfigError(key, `${where}: user name "${user}" is empty, too long or has spaces/control characters`, fix);
    const stored = parseStoredHash(line.slice(colon + 1));
    if (typeof stored === 'string') throw new ConfigError(key, `${where}: ${stored}`, fix);
    if (users.has(user)) throw new ConfigError(key, `${where}: user "${user}" is defined twice`, 'keep one line per user');
    users.set(user, stored);
  }
  return users;
}

/** Limits concurrent scrypt work; see MAX_CONCURRENT_CHECKS. */
function createGate(limit: number): <T>(work: () => Promise<T>) => Promise<T> {
  let running = 0;
  const waiting: (() => void)[] = [];
  return async (work) => {
    if (running >= limit) await new Promise<void>((resolve) => waiting.push(resolve));
    running++;
    try {
      return await work();
    } finally {
      running--;
      waiting.shift()?.();
    }
  };
}

/** The key derivation a store runs (scrypt; tests pass a counting one). */
export type KeyDerivation = (password: string | Buffer, salt: Buffer, keyLength: number, params: ScryptParams) => Promise<Buffer>;

export function createCredentialStore(users: Map<string, StoredHash>, derive: KeyDerivation = scryptAsync): CredentialStore {
  const first = users.values().next().value as StoredHash | undefined;
  // Same cost and key length as a real entry, so unknown users take as long as known ones.
  const dummy: StoredHash = {
    ...(first ?? { ...DEFAULT_SCRYPT_PARAMS, hash: Buffer.alloc(KEY_BYTES) }),
    salt: randomBytes(SALT_BYTES),
    hash: randomBytes(first?.hash.length ?? KEY_BYTES),
  };
  const gate = createGate(MAX_CONCURRENT_CHECKS);
  return {
    size: users.size,
    async verify(user, password) {
      const known = users.get(user);
      const entry = known ?? dummy;
      const computed = await gate(() => derive(password, entry.salt, entry.hash.length, entry));
      const equal = timingSafeEqual(computed, entry.hash);
      return known !== undefined && equal;
    },
  };
}

/** Reads and parses the file; unreadable, malformed or empty files are ConfigErrors. */
export async function loadCredentials(file: string): Promise<CredentialStore> {
  const key = 'access.credentialsFile';
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (err) {
    const code = isSystemError(err) ? err.code : 'error';
    throw new ConfigError(key, `cannot read "${file}" (${code})`, 'fix the path, or create the file with `mptcp-proxy passwd USER`');
  }
  const users = parseCredentials(text, file);
  if (users.size === 0) {
    throw new ConfigError(key, `"${file}" has no users, so nobody could log in`, 'add a user with `mptcp-proxy passwd USER`, or remove access.credentialsFile to turn authentication off');
  }
  return createCredentialStore(users);
}

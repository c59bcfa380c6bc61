import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError } from '../../src/core/errors.js';
import {
  createCredentialStore, formatCredentialLine, hashPassword, loadCredentials, parseCredentials, parseStoredHash,
} from '../../src/access/credentials.js';

// Tests run from dist/test/unit; the fixtures stay in the source tree.
const fixture = (name: string) => fileURLToPath(new URL(`../../../test/fixtures/${name}`, import.meta.url));
const FAST = { N: 1024 };

test('hashPassword writes scrypt$N$r$p$salt$hash that parses back and verifies', async () => {
  const hash = await hashPassword('correct horse', FAST);
  assert.match(hash, /^scrypt\$1024\$8\$1\$[A-Za-z0-9+/]+=*\$[A-Za-z0-9+/]+=*$/);
  const stored = parseStoredHash(hash);
  assert.ok(typeof stored !== 'string');
  assert.equal(stored.hash.length, 32);
  const store = createCredentialStore(parseCredentials(formatCredentialLine('carol', hash), 'inline'));
  assert.equal(await store.verify('carol', 'correct horse'), true);
  assert.equal(await store.verify('carol', 'correct horse '), false);
});

test('two hashes of one password differ (random salt)', async () => {
  assert.notEqual(await hashPassword('x', FAST), await hashPassword('x', FAST));
});

test('the default cost is used when no parameters are given', async () => {
  assert.match(await hashPassword('x'), /^scrypt\$32768\$8\$1\$/);
});

test('the good fixture loads: comments, blank lines and surrounding spaces are ignored', async () => {
  const store = await loadCredentials(fixture('credentials-good.txt'));
  assert.equal(store.size, 2);
  assert.equal(await store.verify('alice', 'wonderland'), true);
  assert.equal(await store.verify('bob', 'p@ss word:with:colons ü'), true, 'passwords may hold colons, spaces and UTF-8');
});

test('a wrong password, an unknown user and a user name differing in case are all refused', async () => {
  const store = await loadCredentials(fixture('credentials-good.txt'));
  assert.equal(await store.verify('alice', 'Wonderland'), false);
  assert.equal(await store.verify('alice', ''), false);
  assert.equal(await store.verify('mallory', 'wonderland'), false);
  assert.equal(await store.verify('Alice', 'wonderland'), false);
  assert.equal(await store.verify('', ''), false);
});

test('an unknown user costs as much as a known one: the same key derivation, with the same parameters, runs once for each', async () => {
  // Counted, not timed: a timing comparison of two scrypt runs was flaky on a loaded machine.
  const users = parseCredentials(await readFile(fixture('credentials-good.txt'), 'utf8'), 'credentials-good.txt');
  const calls: Array<{ keyLength: number; N: number; r: number; p: number }> = [];
  const store = createCredentialStore(users, async (password, salt, keyLength, params) => {
    calls.push({ keyLength, N: params.N, r: params.r, p: params.p });
    return Buffer.alloc(keyLength);
  });
  assert.equal(await store.verify('alice', 'nope'), false);
  assert.equal(await store.verify('mallory', 'nope'), false);
  assert.equal(calls.length, 2, 'one derivation for the known user, one (the dummy) for the unknown one');
  assert.deepEqual(calls[1], calls[0], 'the dummy has the known entries\' cost and key length');
});

test('the bad fixture fails with ConfigError naming the file and line 4', async () => {
  const file = fixture('credentials-bad.txt');
  await assert.rejects(loadCredentials(file), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.equal(err.key, 'access.credentialsFile');
    assert.ok(err.message.includes(`${file} line 4`), err.message);
    assert.match(err.fix, /passwd/);
    return true;
  });
});

test('each kind of malformed line is rejected with its line number', () => {
  const good = 'scrypt$1024$8$1$KVaqccQFHz86ibcYdES97g==$3z3zR/YHji+aJ/I3ksls1eWyrmB3wRyBQcESkWbkcbI=';
  const cases: [string, RegExp][] = [
    ['alice', /no ":"/],
    [`:${good}`, /user name/],
    [`al ice:${good}`, /user name/],
    ['alice:bcrypt$10$abc', /start with "scrypt\$"/],
    ['alice:scrypt$1024$8$1$salt', /6 "\$"-separated/],
    [`alice:${good.replace('$1024$', '$1000$')}`, /out of range/],
    [`alice:${good.replace('$1024$', '$2097152$')}`, /out of range/],
    [`alice:${good.replace('$8$1$', '$0$1$')}`, /positive integers/],
    [`alice:${good.replace('$8$1$', '$x$1$')}`, /positive integers/],
    ['alice:scrypt$1024$8$1$KVaqccQFHz86ibcYdES97g==$not*base64', /base64/],
    ['alice:scrypt$1024$8$1$AAAA$3z3zR/YHji+aJ/I3ksls1eWyrmB3wRyBQcESkWbkcbI=', /salt is 3 bytes/],
    ['alice:scrypt$1024$8$1$KVaqccQFHz86ibcYdES97g==$AAAA', /hash is 3 bytes/],
    [`alice:${good}\nalice:${good}`, /defined twice/],
  ];
  for (const [text, reason] of cases) {
    const lines = `# header\n\n${text}`;
    const expectedLine = text.includes('\n') ? 4 : 3;
    assert.throws(() => parseCredentials(lines, 'users.txt'), (err: unknown) => {
      assert.ok(err instanceof ConfigError, text);
      assert.ok(err.message.includes(`users.txt line ${expectedLine}`), `${text}: ${err.message}`);
      assert.match(err.message, reason);
      return true;
    });
  }
});

test('a missing file and a file without users are ConfigErrors that say what to do', async (t) => {
  await assert.rejects(loadCredentials('/nonexistent/credentials.txt'), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /ENOENT/);
    return true;
  });
  const dir = await mkdtemp(join(tmpdir(), 'mptcp-proxy-creds-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const empty = join(dir, 'credentials-empty.txt');
  await writeFile(empty, '# nobody yet\n\n');
  await assert.rejects(loadCredentials(empty), (err: unknown) => {
    assert.ok(err instanceof ConfigError);
    assert.match(err.message, /no users/);
    assert.match(err.fix, /passwd/);
    return true;
  });
});

test('formatCredentialLine refuses user names the file cannot hold', () => {
  for (const bad of ['', 'a:b', 'a b', '#a', 'x'.repeat(256), 'a\u0000']) {
    assert.throws(() => formatCredentialLine(bad, 'scrypt$...'), RangeError);
  }
});

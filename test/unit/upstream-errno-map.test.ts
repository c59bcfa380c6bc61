import { test } from 'node:test';
import assert from 'node:assert/strict';
import { toUpstreamError } from '../../src/upstream/errno-map.js';
import { ErrorCode, UpstreamError } from '../../src/core/errors.js';
import { interleaveFamilies } from '../../src/upstream/dialer.js';

const target = { host: 'example.test', port: 80 };
const sysErr = (code: string) => Object.assign(new Error(`connect ${code}`), { code });

test('errno codes map to the upstream error codes the front-ends reply with', () => {
  const cases: Array<[string, string]> = [
    ['ECONNREFUSED', ErrorCode.UPSTREAM_REFUSED],
    ['EHOSTUNREACH', ErrorCode.UPSTREAM_UNREACHABLE],
    ['ENETUNREACH', ErrorCode.UPSTREAM_UNREACHABLE],
    ['ECONNRESET', ErrorCode.UPSTREAM_RESET],
    ['ETIMEDOUT', ErrorCode.CONNECT_TIMEOUT],
    ['ENOTFOUND', ErrorCode.DNS_NOT_FOUND],
    ['EAI_AGAIN', ErrorCode.DNS_TIMEOUT],
  ];
  for (const [errno, code] of cases) {
    const e = toUpstreamError(sysErr(errno), target);
    assert.ok(e instanceof UpstreamError);
    assert.equal(e.code, code, errno);
    assert.equal(e.errno, errno);
    assert.equal(e.side, 'upstream');
    assert.match(e.message, /example\.test:80/);
  }
});

test('an error without errno becomes "unreachable" and keeps its cause', () => {
  const cause = new Error('weird');
  const e = toUpstreamError(cause, target);
  assert.equal(e.code, ErrorCode.UPSTREAM_UNREACHABLE);
  assert.equal(e.cause, cause);
});

test('an UpstreamError passes through unchanged', () => {
  const e = new UpstreamError(ErrorCode.CONNECT_TIMEOUT, target, 'slow');
  assert.equal(toUpstreamError(e, target), e);
});

test('happy eyeballs interleaves address families starting with the first one (RFC 8305 §4)', () => {
  const r = interleaveFamilies([
    { address: '2001:db8::1', family: 6 },
    { address: '2001:db8::2', family: 6 },
    { address: '192.0.2.1', family: 4 },
  ]);
  assert.deepEqual(r.map((a) => a.address), ['2001:db8::1', '192.0.2.1', '2001:db8::2']);
});

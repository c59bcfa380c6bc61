import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  AuthMethod, Reply, encodeAuthStatus, encodeMethodSelection, encodeReply, parseGreeting, parseRequest, parseUserPass,
  type ParseResult,
} from '../../src/frontends/socks5/codec.js';

/** Feeds `bytes` one byte at a time: every proper prefix must be incomplete, the whole must parse. */
function feedBytewise<T>(parse: (b: Buffer) => ParseResult<T>, bytes: Buffer): ParseResult<T> {
  for (let i = 0; i < bytes.length; i++) {
    const r = parse(bytes.subarray(0, i));
    assert.equal(r.status, 'incomplete', `prefix of ${i} bytes must be incomplete, got ${JSON.stringify(r)}`);
  }
  return parse(bytes);
}

const greeting = Buffer.from([0x05, 0x02, 0x00, 0x02]);
const userPass = Buffer.concat([Buffer.from([0x01, 5]), Buffer.from('alice'), Buffer.from([3]), Buffer.from('pw!')]);
const connectV4 = Buffer.from([0x05, 0x01, 0x00, 0x01, 192, 0, 2, 1, 0x01, 0xbb]);
const connectV6 = Buffer.from([0x05, 0x01, 0x00, 0x04, 0x20, 0x01, 0x0d, 0xb8, ...new Array(11).fill(0), 1, 0x00, 0x50]);
const connectDomain = Buffer.concat([Buffer.from([0x05, 0x01, 0x00, 0x03, 11]), Buffer.from('example.com'), Buffer.from([0x1f, 0x90])]);

test('a greeting split into single bytes parses to its methods', () => {
  const r = feedBytewise(parseGreeting, greeting);
  assert.deepEqual(r, { status: 'done', value: { methods: [0x00, 0x02] }, consumed: 4 });
});

test('a greeting with NMETHODS = 0 parses to no methods', () => {
  assert.deepEqual(parseGreeting(Buffer.from([5, 0])), { status: 'done', value: { methods: [] }, consumed: 2 });
});

test('a greeting with another version is invalid from the first byte (SOCKS4, HTTP)', () => {
  assert.equal(parseGreeting(Buffer.from([0x04])).status, 'invalid');
  assert.equal(parseGreeting(Buffer.from('GET / HTTP/1.1\r\n')).status, 'invalid');
});

test('bytes after a message are left for the next parser (pipelined greeting + auth + request)', () => {
  const all = Buffer.concat([greeting, userPass, connectV4, Buffer.from('payload')]);
  const g = parseGreeting(all);
  assert.equal(g.status, 'done');
  const rest1 = all.subarray(g.status === 'done' ? g.consumed : 0);
  const u = parseUserPass(rest1);
  assert.equal(u.status, 'done');
  const rest2 = rest1.subarray(u.status === 'done' ? u.consumed : 0);
  const q = parseRequest(rest2);
  assert.equal(q.status, 'done');
  assert.equal(rest2.subarray(q.status === 'done' ? q.consumed : 0).toString(), 'payload');
});

test('RFC 1929 user/password split into single bytes parses, UTF-8 and empty password included', () => {
  assert.deepEqual(feedBytewise(parseUserPass, userPass), { status: 'done', value: { user: 'alice', password: 'pw!' }, consumed: userPass.length });
  const utf8 = Buffer.concat([Buffer.from([1, 3]), Buffer.from('bob'), Buffer.from([0])]);
  assert.deepEqual(parseUserPass(utf8), { status: 'done', value: { user: 'bob', password: '' }, consumed: 6 });
  const pw = Buffer.from('pässwörd');
  const r = parseUserPass(Buffer.concat([Buffer.from([1, 1]), Buffer.from('u'), Buffer.from([pw.length]), pw]));
  assert.equal(r.status === 'done' && r.value.password, 'pässwörd');
});

test('RFC 1929 with a version other than 1 is invalid', () => {
  const r = parseUserPass(Buffer.from([0x05, 1, 0x61, 1, 0x62]));
  assert.equal(r.status, 'invalid');
});

test('CONNECT requests with IPv4, IPv6 and domain addresses parse from single bytes', () => {
  assert.deepEqual(feedBytewise(parseRequest, connectV4), {
    status: 'done', value: { command: 1, addressType: 1, host: '192.0.2.1', port: 443 }, consumed: 10,
  });
  assert.deepEqual(feedBytewise(parseRequest, connectV6), {
    status: 'done', value: { command: 1, addressType: 4, host: '2001:db8::1', port: 80 }, consumed: 22,
  });
  assert.deepEqual(feedBytewise(parseRequest, connectDomain), {
    status: 'done', value: { command: 1, addressType: 3, host: 'example.com', port: 8080 }, consumed: 18,
  });
});

test('a bracketed IPv6 literal sent as a domain is unbracketed', () => {
  const host = Buffer.from('[::1]');
  const r = parseRequest(Buffer.concat([Buffer.from([5, 1, 0, 3, host.length]), host, Buffer.from([0, 80])]));
  assert.equal(r.status === 'done' && r.value.host, '::1');
});

test('BIND and UDP ASSOCIATE parse (the front-end answers 0x07 with the target known)', () => {
  for (const cmd of [0x02, 0x03, 0x09]) {
    const r = parseRequest(Buffer.from([5, cmd, 0, 1, 127, 0, 0, 1, 0, 80]));
    assert.equal(r.status === 'done' && r.value.command, cmd);
  }
});

test('request errors carry the RFC 1928 reply code: bad version and reserved byte 0x01, unknown ATYP 0x08', () => {
  assert.deepEqual(pick(parseRequest(Buffer.from([0x04, 1, 0, 1]))), { status: 'invalid', reply: Reply.GENERAL_FAILURE });
  assert.deepEqual(pick(parseRequest(Buffer.from([5, 1, 0x01, 1, 127, 0, 0, 1, 0, 80]))), { status: 'invalid', reply: Reply.GENERAL_FAILURE });
  // Unknown ATYP is decided from 4 bytes; the rest cannot be framed anyway.
  assert.deepEqual(pick(parseRequest(Buffer.from([5, 1, 0, 0x05]))), { status: 'invalid', reply: Reply.ADDRESS_TYPE_NOT_SUPPORTED });
  assert.deepEqual(pick(parseRequest(Buffer.from([5, 1, 0, 0x00]))), { status: 'invalid', reply: Reply.ADDRESS_TYPE_NOT_SUPPORTED });
  assert.deepEqual(pick(parseRequest(Buffer.from([5, 1, 0, 3, 0, 0, 80]))), { status: 'invalid', reply: Reply.GENERAL_FAILURE });
  const ctl = Buffer.from('a\nb');
  assert.deepEqual(pick(parseRequest(Buffer.concat([Buffer.from([5, 1, 0, 3, ctl.length]), ctl, Buffer.from([0, 80])]))), { status: 'invalid', reply: Reply.GENERAL_FAILURE });
});

function pick(r: ParseResult<unknown>): unknown {
  return r.status === 'invalid' ? { status: r.status, reply: r.reply } : r;
}

test('random garbage never throws and never consumes more than it was given', () => {
  let seed = 12345;
  const rand = () => (seed = (seed * 1103515245 + 12345) & 0x7fffffff) % 256;
  for (let i = 0; i < 5000; i++) {
    const len = rand() % 64;
    const buf = Buffer.from(Array.from({ length: len }, rand));
    if (i % 3 === 0 && len > 0) buf[0] = 5; // get past the version check more often
    for (const parse of [parseGreeting, parseUserPass, parseRequest] as ((b: Buffer) => ParseResult<unknown>)[]) {
      const r = parse(buf);
      if (r.status === 'done') assert.ok(r.consumed <= buf.length && r.consumed > 0);
    }
  }
});

test('encoders write the RFC 1928/1929 reply layouts', () => {
  assert.deepEqual([...encodeMethodSelection(AuthMethod.USERNAME_PASSWORD)], [5, 2]);
  assert.deepEqual([...encodeMethodSelection(AuthMethod.NO_ACCEPTABLE)], [5, 0xff]);
  assert.deepEqual([...encodeAuthStatus(true)], [1, 0]);
  assert.deepEqual([...encodeAuthStatus(false)], [1, 1]);
  assert.deepEqual([...encodeReply(Reply.CONNECTION_REFUSED)], [5, 5, 0, 1, 0, 0, 0, 0, 0, 0]);
  assert.deepEqual([...encodeReply(Reply.SUCCEEDED, { address: '10.1.2.3', port: 0x1234 })], [5, 0, 0, 1, 10, 1, 2, 3, 0x12, 0x34]);
  assert.deepEqual([...encodeReply(Reply.SUCCEEDED, { address: '::ffff:10.1.2.3', port: 80 })], [5, 0, 0, 1, 10, 1, 2, 3, 0, 80]);
  const v6 = encodeReply(Reply.SUCCEEDED, { address: '2001:db8::1', port: 80 });
  assert.equal(v6.length, 22);
  assert.equal(v6[3], 4);
  assert.deepEqual([...v6.subarray(4, 8)], [0x20, 0x01, 0x0d, 0xb8]);
  assert.equal(v6[19], 1);
  assert.equal(v6.readUInt16BE(20), 80);
});

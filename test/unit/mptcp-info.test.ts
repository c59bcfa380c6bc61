/**
 * Mapping of the addon's raw kernel structs to the typed MptcpInfo / SubflowInfo:
 * names, units, flags, and what happens when an older kernel returns shorter structs.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { subflowAddresses, toMptcpInfo, toSubflowInfo } from '../../src/mptcp/info.js';
import type { RawMptcpInfo, RawSubflow } from '../../src/mptcp/native.js';

/** struct mptcp_info as a Linux 6.1 kernel returns it: 48 bytes, no counters. */
const linux61Info: RawMptcpInfo = {
  subflows: 1,
  add_addr_signal: 0,
  add_addr_accepted: 1,
  subflows_max: 2,
  add_addr_signal_max: 0,
  add_addr_accepted_max: 4,
  flags: 0b10,
  token: 0xdeadbeef,
  write_seq: 2n ** 63n + 5n,
  snd_una: 2n ** 63n + 1n,
  rcv_nxt: 42n,
  local_addr_used: 1,
  local_addr_max: 2,
  csum_enabled: 1,
  size: 48,
};

test('MPTCP_INFO from a 6.1 kernel maps to typed fields, keeps 64-bit sequence numbers exact, and omits newer counters', () => {
  const info = toMptcpInfo(linux61Info);
  assert.equal(info.token, 0xdeadbeef);
  assert.equal(info.extraSubflows, 1);
  assert.equal(info.remoteKeyReceived, true);
  assert.equal(info.fallback, false);
  assert.equal(info.checksumEnabled, true);
  assert.equal(info.writeSeq, 2n ** 63n + 5n);
  assert.equal(info.structSize, 48);
  assert.equal(info.bytesSent, undefined);
  assert.equal(info.subflowsTotal, undefined);
  assert.equal('lastDataSentMs' in info, false);
});

test('MPTCP_INFO from a current kernel exposes counters, subflow total and last-activity times in ms', () => {
  const info = toMptcpInfo({
    ...linux61Info,
    flags: 0b01,
    retransmits: 3,
    bytes_retrans: 10,
    bytes_sent: 1000,
    bytes_received: 2000,
    bytes_acked: 900,
    subflows_total: 2,
    endp_add_addr_max: 0,
    last_data_sent: 5,
    last_data_recv: 6,
    last_ack_recv: 7,
    size: 96,
  });
  assert.equal(info.fallback, true);
  assert.equal(info.bytesSent, 1000);
  assert.equal(info.bytesReceived, 2000);
  assert.equal(info.subflowsTotal, 2);
  assert.equal(info.lastAckRecvMs, 7);
});

const rawSubflow: RawSubflow = {
  id: 2,
  local: { family: 6, address: '2001:db8::1', port: 40000 },
  remote: { family: 4, address: '10.0.0.2', port: 8080 },
  tcp: { state: 1, ca_state: 4, rtt: 1500, rttvar: 200, min_rtt: 900, rto: 204000, snd_cwnd: 10, bytes_sent: 123, pacing_rate: 1e6 },
};

test('subflow tcp_info maps to named states and unit-suffixed fields; fields the kernel did not return read 0', () => {
  const sf = toSubflowInfo(rawSubflow);
  assert.equal(sf.id, 2);
  assert.equal(sf.state, 'ESTABLISHED');
  assert.equal(sf.caState, 'loss');
  assert.equal(sf.rttUs, 1500);
  assert.equal(sf.rttVarUs, 200);
  assert.equal(sf.minRttUs, 900);
  assert.equal(sf.rtoUs, 204000);
  assert.equal(sf.pacingRateBps, 1e6);
  assert.equal(sf.bytesSent, 123);
  assert.equal(sf.bytesRetrans, 0);
  assert.equal(sf.busyTimeUs, 0);
});

test('subflows from MPTCP_TCPINFO + MPTCP_SUBFLOW_ADDRS (no id) leave id undefined', () => {
  const { id: _id, ...legacy } = rawSubflow;
  assert.equal(toSubflowInfo(legacy).id, undefined);
});

test('an unknown TCP state number is reported, not hidden', () => {
  assert.equal(toSubflowInfo({ ...rawSubflow, tcp: { state: 99 } }).state, 'UNKNOWN(99)');
});

test('subflowAddresses formats "local -> remote" (ASCII) with brackets for IPv6 and ? for a missing end', () => {
  assert.equal(subflowAddresses(toSubflowInfo(rawSubflow)), '[2001:db8::1]:40000 -> 10.0.0.2:8080');
  assert.equal(subflowAddresses({ local: null, remote: { family: 4, address: '10.0.0.2', port: 1 } }), '? -> 10.0.0.2:1');
});

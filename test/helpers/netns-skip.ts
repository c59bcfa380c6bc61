/**
 * Skip reason for tests that need the netns testbed: `test(name, { skip: testbedSkipReason() }, fn)`.
 * Undefined means the testbed can run (root, iproute2, MPTCP kernel, `ip netns add` allowed).
 */
export { testbedSkipReason } from '../../testbed/skip-reason.js';

/**
 * The typed MPTCP surface over native/. Everything above src/mptcp imports from here.
 */
export { mptcpSupport, type MptcpSupport } from './support.js';
export {
  listenMptcp,
  connectMptcp,
  socketFd,
  peekReceived,
  originalDestination,
  type ListenMptcpOptions,
  type ListenMptcpResult,
  type ConnectMptcpOptions,
  type SocketAddress,
  type InterceptMode,
} from './socket.js';
export {
  isMptcpSocket,
  readMptcpInfo,
  readSubflowCount,
  sampleSubflowsOfFd,
  type SubflowSample,
  readSubflows,
  subflowAddresses,
  toMptcpInfo,
  toSubflowInfo,
  type MptcpInfo,
  type SubflowInfo,
  type SubflowEndpoint,
} from './info.js';
export { loadNative, NativeAddonUnavailableError, type MptcpNative } from './native.js';

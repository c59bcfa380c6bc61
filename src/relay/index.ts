/**
 * Which relay carries a connection once its front-end is done: the native epoll engine
 * (relay.engine: native, the default) or the JS one. Both honour the contract in ./types.ts.
 */
import type { Logger } from '../core/logger.js';
import { canPumpNative, pumpNative, type BodyPump } from './native-pump.js';
import { connectingRelay, loadNativeRelayEngine, nativeRelay, type ConnectingRelay } from './native-relay.js';
import { relayBothWays } from './relay.js';
import type { Relay } from './types.js';

export type RelayEngine = 'native' | 'js';

export interface SelectRelayOptions {
  /** Where to say that the native engine is missing; omitted = silent. */
  log?: Logger;
  /** Native engine threads (relay.threads); applied when the engine starts. */
  threads?: number;
  /** relay.capBuffers*: the native engine's socket-buffer cap for bulk flows; omitted = the addon's default. */
  capBuffers?: { enabled: boolean; minBytes: number; rateMbit: number; notsentBytes: number };
}

/** The relay for `engine`; 'native' falls back to the JS relay, with a warning, when the addon lacks the engine. */
export function selectRelay(engine: RelayEngine, opts: SelectRelayOptions = {}): Relay {
  if (engine === 'js') return relayBothWays;
  const native = loadNativeRelayEngine();
  if (native === undefined) {
    opts.log?.warn('native relay unavailable (addon not built, or built without native/src/relay.c); using the JS relay', {
      fix: 'npx node-gyp rebuild -C native',
    });
    return relayBothWays;
  }
  if (opts.threads !== undefined) native.relaySetThreads(opts.threads);
  // MPTCP_PROXY_CAP_BUFFERS=off, MPTCP_PROXY_CAP_NOTSENT=<bytes> and MPTCP_PROXY_CAP_MIN=<bytes>:
  // internal switches for A/B runs of the bench, whose forward variant has no config file (like
  // MPTCP_PROXY_ENGINE_CONNECT); not config keys.
  const cap = opts.capBuffers;
  if (process.env.MPTCP_PROXY_CAP_BUFFERS === 'off') native.relaySetQueueCap?.(0, 1, 0);
  else if (cap !== undefined) {
    const notsent = envBytes('MPTCP_PROXY_CAP_NOTSENT') ?? cap.notsentBytes;
    const minBytes = envBytes('MPTCP_PROXY_CAP_MIN') ?? cap.minBytes;
    native.relaySetQueueCap?.(cap.enabled ? minBytes : 0, cap.rateMbit, cap.enabled ? notsent : 0);
  }
  return nativeRelay;
}

/** An internal switch's byte count (digits only), or undefined when unset or not a number. */
function envBytes(name: string): number | undefined {
  const v = process.env[name] ?? '';
  return /^\d+$/.test(v) ? Number(v) : undefined;
}

/** The body pump for `engine` (FrontendDeps.pump): the native one when the engine is 'native'
 *  and the addon has it; undefined means front-ends move bodies in JS. */
export function selectBodyPump(engine: RelayEngine): BodyPump | undefined {
  return engine === 'native' && canPumpNative() ? pumpNative : undefined;
}

/**
 * The relay that completes an upstream's connect itself (FrontendDeps.relayConnecting): present
 * when `engine` is 'native' and the addon has the engine and connect(); undefined otherwise,
 * and then front-ends dial through JS. MPTCP_PROXY_ENGINE_CONNECT=off turns it off (an internal
 * switch, for comparing the two paths; not a config key).
 */
export function selectConnectingRelay(engine: RelayEngine): ConnectingRelay | undefined {
  if (engine !== 'native' || process.env.MPTCP_PROXY_ENGINE_CONNECT === 'off') return undefined;
  const native = loadNativeRelayEngine();
  return native !== undefined && typeof native.connect === 'function' ? connectingRelay : undefined;
}

export { nativeRelay, nativeRelayCounters, loadNativeRelayEngine, connectingRelay } from './native-relay.js';
export type { ConnectingRelay, EngineConnect, NativeConnected } from './native-relay.js';
export { pumpNative, canPumpNative, PumpHandoverError, type BodyPump, type PumpOptions, type PumpResult } from './native-pump.js';
export { relayBothWays } from './relay.js';
export type { Relay, RelayOptions, RelaySummary } from './types.js';

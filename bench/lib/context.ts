/** What every scenario gets: the testbed, options, the peers available, a logger. */
import type { Testbed } from '../../testbed/index.js';
import type { PeerAvailability } from '../peers/install.js';

export interface BenchOptions {
  quick: boolean;
  reps: number;
  /** Relay engines of our proxy to measure; 'default' = no MPTCP_PROXY_RELAY in the env. */
  engines: string[];
  only: string[] | undefined;
  /** Only these variants (e.g. ours-forward,direct); undefined = all. */
  variants: string[] | undefined;
}

export interface BenchContext {
  tb: Testbed;
  /** Temporary directory for configs, logs and captures. */
  dir: string;
  opts: BenchOptions;
  peers: PeerAvailability;
  /** CIDR covering every testbed subnet (for the proxies' access lists). */
  allowNet: string;
  log(line: string): void;
}

/** Name of our proxy's variant for an engine: `ours-forward` or `ours-forward[native]`. */
export function oursLabel(base: string, engine: string): string {
  return engine === 'default' ? base : `${base}[${engine}]`;
}

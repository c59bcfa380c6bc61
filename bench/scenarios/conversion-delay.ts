import type { BenchContext } from '../lib/context.js';
export async function runConversionDelay(_ctx: BenchContext): Promise<Record<string, unknown>> {
  throw new Error('not implemented yet');
}

/**
 * Where a configuration comes from: a YAML file, or the embedded default.
 * Both go through the same validation (schema.ts).
 */
import { readFile } from 'node:fs/promises';
import { parseDocument } from 'yaml';
import { ConfigError } from '../core/errors.js';
import { defaultConfigDocument } from './defaults.js';
import { validateConfig } from './schema.js';
import type { Config } from './types.js';

/** Parses YAML text into a raw document; syntax errors become a ConfigError naming the file, line and column. */
export function parseConfigDocument(text: string, source: string): Record<string, unknown> {
  const doc = parseDocument(text, { uniqueKeys: true });
  const first = doc.errors[0];
  if (first) {
    const pos = first.linePos?.[0];
    const where = pos ? `${source}:${pos.line}:${pos.col}` : source;
    throw new ConfigError(where, `YAML syntax error: ${first.message.split('\n')[0]}`, 'fix the YAML at that line (indentation, quotes, a missing colon)');
  }
  const value: unknown = doc.toJS();
  if (value === null || value === undefined) return {};
  if (typeof value !== 'object' || Array.isArray(value)) {
    throw new ConfigError(source, 'the file must be a YAML mapping (keys: log, listeners, upstream, relay, access)', 'start the file with "listeners:" and the other top-level keys');
  }
  return value as Record<string, unknown>;
}

/** Parses and validates YAML text. */
export function parseConfigText(text: string, source: string): Config {
  return validateConfig(parseConfigDocument(text, source));
}

/** Reads a YAML file into a raw (not yet validated) document. */
export async function readConfigDocument(path: string): Promise<Record<string, unknown>> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code ?? 'error';
    throw new ConfigError('--config', `cannot read "${path}" (${code})`, 'give the path of a readable YAML file, or omit --config to use the embedded default');
  }
  return parseConfigDocument(text, path);
}

export async function loadConfigFile(path: string): Promise<Config> {
  return validateConfig(await readConfigDocument(path));
}

/** A deep copy of the embedded default document (callers may modify it before validation). */
export function defaultConfigDocumentCopy(): Record<string, unknown> {
  return structuredClone(defaultConfigDocument) as unknown as Record<string, unknown>;
}

export function defaultConfig(): Config {
  return validateConfig(defaultConfigDocumentCopy());
}

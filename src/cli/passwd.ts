/**
 * `mptcp-proxy passwd USER`: reads a password from stdin (first line) and prints a
 * credentials-file line `USER:scrypt$...` to append to access.credentialsFile.
 */
import type { Readable, Writable } from 'node:stream';
import { formatCredentialLine, hashPassword, isValidUserName } from '../access/credentials.js';

async function readFirstLine(input: Readable): Promise<string> {
  let text = '';
  for await (const chunk of input) {
    text += String(chunk);
    if (text.includes('\n')) break;
  }
  return text.split(/\r?\n/)[0] ?? '';
}

export async function runPasswd(user: string, input: Readable, output: Writable): Promise<number> {
  if (!isValidUserName(user)) {
    process.stderr.write(`mptcp-proxy: user name "${user}" is not allowed: use 1-255 bytes without ":", "#", spaces or control characters\n`);
    return 2;
  }
  if ((input as Readable & { isTTY?: boolean }).isTTY) process.stderr.write('password (input is echoed): ');
  const password = await readFirstLine(input);
  if (password.length === 0) {
    process.stderr.write('mptcp-proxy: empty password; pipe it in, e.g. printf "%s\\n" "$PASS" | mptcp-proxy passwd alice\n');
    return 2;
  }
  output.write(`${formatCredentialLine(user, await hashPassword(password))}\n`);
  return 0;
}

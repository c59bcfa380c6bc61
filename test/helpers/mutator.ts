/**
 * Deterministic fuzzing for the parity tests of the engine's C parsers against the TypeScript
 * ones (http-head-native, http-chunked-native): a seeded generator and a mutation of a text by
 * one to three random edits — a piece of `alphabet` inserted or put in place of a byte, or a
 * byte removed.
 */
export function mutator(seed0: number, alphabet: readonly string[]): { rand: (n: number) => number; mutate: (text: string) => string } {
  let seed = seed0;
  const rand = (n: number): number => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed % n;
  };
  const mutate = (text0: string): string => {
    let text = text0;
    const edits = 1 + rand(3);
    for (let e = 0; e < edits; e++) {
      const at = rand(text.length);
      const op = rand(3);
      const piece = alphabet[rand(alphabet.length)]!;
      text = op === 0 ? text.slice(0, at) + piece + text.slice(at) : op === 1 ? text.slice(0, at) + text.slice(at + 1) : text.slice(0, at) + piece + text.slice(at + 1);
    }
    return text;
  };
  return { rand, mutate };
}

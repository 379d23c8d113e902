// A nesting limit for incoming JSON. JSON.parse accepts any depth, but JSON.stringify of a value nested
// ~50,000 deep throws RangeError only after ~1.7 s of CPU in JSC (measured): a 120 KB frame could stall a core.
// Frames are refused before parsing when their brackets nest deeper than MAX_JSON_DEPTH.

export const MAX_JSON_DEPTH = 128;
/** Text shorter than this cannot nest deeper than MAX_JSON_DEPTH, so small frames skip the scan. */
const SCAN_FROM_LENGTH = MAX_JSON_DEPTH * 2;

const QUOTE = 34;
const BACKSLASH = 92;
const OPEN_BRACE = 123;
const CLOSE_BRACE = 125;
const OPEN_BRACKET = 91;
const CLOSE_BRACKET = 93;

/** True when the JSON text's brackets nest deeper than `max` (strings skipped). One pass over char codes. */
export function textNestsTooDeep(text: string, max = MAX_JSON_DEPTH): boolean {
  if (text.length <= SCAN_FROM_LENGTH) return false;
  let depth = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === QUOTE) {
      for (i++; i < text.length; i++) {
        const d = text.charCodeAt(i);
        if (d === BACKSLASH) i++;
        else if (d === QUOTE) break;
      }
    } else if (c === OPEN_BRACE || c === OPEN_BRACKET) {
      if (++depth > max) return true;
    } else if (c === CLOSE_BRACE || c === CLOSE_BRACKET) {
      depth--;
    }
  }
  return false;
}

// Bearer-key check for the HTTP API (POST /publish, /api/*): 403 when it is disabled, 401 for a missing or wrong key.
import { status } from "elysia";
import { bearerOf } from "./tokens.ts";

/** Returns a check to run on the Authorization header; compares SHA-256 digests in constant time. */
export function apiKeyCheck(apiKey: string | undefined) {
  const expected = apiKey === undefined ? undefined : digest(apiKey);
  return (authorization: string | undefined): void => {
    if (expected === undefined) {
      throw status(403, { error: "HTTP API is disabled: set API_KEY on the server to enable it" });
    }
    const key = bearerOf(authorization);
    if (key === undefined) throw status(401, { error: "missing Authorization: Bearer <API_KEY>" });
    if (!crypto.timingSafeEqual(digest(key), expected)) throw status(401, { error: "invalid API key" });
  };
}

const digest = (key: string): Uint8Array => new Bun.CryptoHasher("sha256").update(key).digest();

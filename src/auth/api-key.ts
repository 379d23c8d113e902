// Bearer-key check for POST /publish: 403 when the route is disabled, 401 for a missing or wrong key.
import { status } from "elysia";
import { bearerOf } from "./tokens.ts";

/** Returns a check to run on the Authorization header; compares SHA-256 digests in constant time. */
export function publishKeyCheck(apiKey: string | undefined) {
  const expected = apiKey === undefined ? undefined : digest(apiKey);
  return (authorization: string | undefined): void => {
    if (expected === undefined) {
      throw status(403, { error: "HTTP publish is disabled: set PUBLISH_API_KEY on the server to enable it" });
    }
    const key = bearerOf(authorization);
    if (key === undefined) throw status(401, { error: "missing Authorization: Bearer <PUBLISH_API_KEY>" });
    if (!crypto.timingSafeEqual(digest(key), expected)) throw status(401, { error: "invalid publish key" });
  };
}

const digest = (key: string): Uint8Array => new Bun.CryptoHasher("sha256").update(key).digest();

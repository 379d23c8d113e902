// Who may connect to /connect and what they may do there: JWT verification (jose: HS256 with AUTH_SECRET,
// RS256 or ES256 with AUTH_PUBLIC_KEY) and topic permissions from the token's claims.
import { createPublicKey, type KeyObject } from "node:crypto";
import { decodeProtectedHeader, errors, importSPKI, jwtVerify } from "jose";
import { z } from "zod";
import type { Config } from "../config.ts";
import { PatternTable } from "../topics/patterns.ts";

/**
 * What a token must carry. `topics` patterns are exact topic names or prefixes ending in `*`
 * (`chat.room.*` matches `chat.room.1`; a lone `*` matches every topic).
 */
export const TokenClaims = z.object({
  sub: z.string().min(1),
  topics: z.object({
    subscribe: z.array(z.string()).default([]),
    publish: z.array(z.string()).default([]),
  }),
  exp: z.number().optional(),
});
export type TokenClaims = z.infer<typeof TokenClaims>;

/** A token's patterns for one operation: whether any matches (src/topics/patterns.ts has the syntax). */
class PatternSet {
  private readonly table = new PatternTable<true>();
  constructor(patterns: string[]) {
    for (const p of patterns) this.table.add(p, true);
  }
  allows(topic: string): boolean {
    return this.table.match(topic) === true;
  }
}

export class Permissions {
  private readonly subscribe: PatternSet;
  private readonly publish: PatternSet;
  constructor(topics: TokenClaims["topics"]) {
    this.subscribe = new PatternSet(topics.subscribe);
    this.publish = new PatternSet(topics.publish);
  }
  canSubscribe(topic: string): boolean {
    return this.subscribe.allows(topic);
  }
  canPublish(topic: string): boolean {
    return this.publish.allows(topic);
  }
}

export interface Identity {
  sub: string;
  permissions: Permissions;
  /** Unix ms at which the token expires; the connection is closed with 4001 then. */
  expiresAtMs: number | undefined;
}

/** Why an upgrade was refused; `reason` is sent to the client in the 401 body. */
export class AuthError extends Error {
  override name = "AuthError";
  constructor(readonly reason: string) {
    super(reason);
  }
}

/** The JWT algorithms an AUTH_PUBLIC_KEY can verify: RSA keys sign RS256, EC P-256 keys ES256. */
export type PublicKeyAlgorithm = "RS256" | "ES256";

/**
 * The algorithm a PEM SPKI key verifies, or an Error saying why it cannot be used. Config calls it at start-up,
 * so a key that only WebCrypto's import would refuse (garbage inside the armour, a curve jose does not pair with
 * the alg, a short RSA modulus jose rejects at verify) stops the process instead of failing every upgrade.
 * The messages never contain the key.
 */
export function publicKeyAlgorithm(pem: string): PublicKeyAlgorithm {
  let key: KeyObject;
  try {
    key = createPublicKey({ key: pem, format: "pem" });
  } catch (error) {
    const code = (error as { code?: unknown }).code;
    throw new Error(`not a valid public key (${typeof code === "string" ? code : "unreadable"})`);
  }
  const type = key.asymmetricKeyType;
  if (type === "rsa") {
    const bits = key.asymmetricKeyDetails?.modulusLength ?? 0;
    if (bits < 2048) throw new Error(`RSA key of ${bits} bits: RS256 needs 2048 or more`);
    return "RS256";
  }
  if (type === "ec") {
    const curve = key.asymmetricKeyDetails?.namedCurve;
    if (curve === "prime256v1") return "ES256";
    throw new Error(`EC curve ${curve ?? "(unknown)"} is not supported: use P-256 (ES256) or RSA (RS256)`);
  }
  throw new Error(`${type ?? "unknown"} keys are not supported: use RSA (RS256) or EC P-256 (ES256)`);
}

/** Imports AUTH_PUBLIC_KEY for the algorithm it verifies (the WebCrypto import the verifier uses). */
export async function importPublicKey(pem: string): Promise<{ alg: PublicKeyAlgorithm; key: CryptoKey }> {
  const alg = publicKeyAlgorithm(pem);
  return { alg, key: (await importSPKI(pem, alg)) as CryptoKey };
}

export class Authenticator {
  private readonly secret: Uint8Array | undefined;
  private readonly publicKey: Promise<{ alg: PublicKeyAlgorithm; key: CryptoKey }> | undefined;
  private readonly requireExp: boolean;
  /** Many connections share the same claims; one compiled Permissions per distinct `topics` claim. */
  private readonly cache = new Map<string, Permissions>();

  private constructor(config: Config) {
    this.secret = config.AUTH_SECRET === undefined ? undefined : new TextEncoder().encode(config.AUTH_SECRET);
    // loadConfig parsed the key and the entry point imported it before listening. A Config built in code skips
    // both: a bad key there fails each verify (500), never the process through an unhandled rejection.
    this.publicKey = config.AUTH_PUBLIC_KEY === undefined ? undefined : importPublicKey(config.AUTH_PUBLIC_KEY);
    this.publicKey?.catch(() => {});
    this.requireExp = config.AUTH_REQUIRE_EXP;
  }

  /** Undefined in open mode (neither AUTH_SECRET nor AUTH_PUBLIC_KEY set). */
  static fromConfig(config: Config): Authenticator | undefined {
    if (config.AUTH_SECRET === undefined && config.AUTH_PUBLIC_KEY === undefined) return undefined;
    return new Authenticator(config);
  }

  /**
   * Verifies signature, `exp` (required unless AUTH_REQUIRE_EXP=false) and `nbf`, then the claims' shape.
   * Throws AuthError with a client-safe reason.
   */
  async verify(token: string | undefined): Promise<Identity> {
    if (!token) throw new AuthError("missing token: pass ?token=<JWT> or Authorization: Bearer <JWT>");
    let alg: string | undefined;
    try {
      alg = decodeProtectedHeader(token).alg;
    } catch {
      throw new AuthError("malformed token");
    }
    const key = alg === "HS256" ? this.secret : await this.publicKeyFor(alg);
    if (key === undefined) throw new AuthError(`token algorithm ${alg ?? "none"} is not accepted here`);
    let payload: unknown;
    try {
      payload = (await jwtVerify(token, key, { algorithms: [alg!] })).payload;
    } catch (error) {
      if (error instanceof errors.JWTExpired) throw new AuthError("token expired");
      if (error instanceof errors.JWTClaimValidationFailed && error.claim === "nbf") throw new AuthError("token not yet valid");
      if (error instanceof errors.JWSSignatureVerificationFailed) throw new AuthError("invalid token signature");
      throw new AuthError("invalid token");
    }
    const claims = TokenClaims.safeParse(payload);
    if (!claims.success) {
      const issue = claims.error.issues[0]!;
      throw new AuthError(`invalid token claims: ${issue.path.join(".")}: ${issue.message}`);
    }
    // A token without exp never expires: one that leaked would open connections forever.
    if (this.requireExp && claims.data.exp === undefined) throw new AuthError("token has no exp");
    return {
      sub: claims.data.sub,
      permissions: this.permissionsFor(claims.data.topics),
      expiresAtMs: claims.data.exp === undefined ? undefined : claims.data.exp * 1000,
    };
  }

  private async publicKeyFor(alg: string | undefined): Promise<CryptoKey | undefined> {
    const publicKey = await this.publicKey;
    return publicKey !== undefined && publicKey.alg === alg ? publicKey.key : undefined;
  }

  private permissionsFor(topics: TokenClaims["topics"]): Permissions {
    const key = JSON.stringify(topics);
    let permissions = this.cache.get(key);
    if (permissions === undefined) {
      if (this.cache.size >= 10_000) this.cache.clear(); // bounded: tokens with unique claims cannot grow it
      permissions = new Permissions(topics);
      this.cache.set(key, permissions);
    }
    return permissions;
  }
}

/** The credential of an `Authorization: Bearer <credential>` header, if that is its form. */
export function bearerOf(authorization: string | undefined): string | undefined {
  return /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "")?.[1];
}

/** The token from `?token=` or `Authorization: Bearer`. */
export function tokenFrom(url: string, authorization: string | undefined): string | undefined {
  const bearer = bearerOf(authorization);
  if (bearer !== undefined) return bearer;
  const query = url.indexOf("?");
  if (query < 0) return undefined;
  return new URLSearchParams(url.slice(query + 1)).get("token") ?? undefined;
}

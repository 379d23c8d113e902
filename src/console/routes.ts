// GET /console: the operator's web console, served by the server itself. Its script (src/console/app.ts, with
// uPlot) is bundled by Bun.build when the routes are created, once per process, and kept in memory: no build
// step for the user, no CDN, and no visitor can make the server build (or rebuild) anything.
import { readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";
import { Elysia, status } from "elysia";
import { Route } from "../protocol-tables.ts";
import { consolePage } from "./page.ts";

/**
 * The page loads only its own script and stylesheet and talks only to its own origin; uPlot sets styles
 * through the CSSOM, which `style-src 'self'` allows. No framing (clickjacking of the Disconnect button).
 */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface Asset {
  body: string;
  type: string;
}

let script: Promise<Asset> | undefined;
let styles: Asset | undefined;

/** The bundled script, built once per process (a failure stays a failure: the file is what it is). */
function bundle(): Promise<Asset> {
  script ??= (async () => {
    const built = await Bun.build({ entrypoints: [fileURLToPath(new URL("./app.ts", import.meta.url))], target: "browser", minify: true });
    if (!built.success || built.outputs[0] === undefined) throw new Error(`console build failed: ${built.logs.map(String).join("; ")}`);
    return { body: await built.outputs[0].text(), type: "text/javascript; charset=utf-8" };
  })();
  script.catch(() => {}); // answered per request (503) and reported by the caller that started it
  return script;
}

function stylesheet(): Asset {
  styles ??= {
    body: readFileSync(fileURLToPath(import.meta.resolve("uplot/dist/uPlot.min.css")), "utf8") + readFileSync(fileURLToPath(new URL("./style.css", import.meta.url)), "utf8"),
    type: "text/css; charset=utf-8",
  };
  return styles;
}

const served = (asset: Asset, set: { headers: Record<string, unknown> }) => {
  set.headers["content-type"] = asset.type;
  set.headers["cache-control"] = "no-cache";
  set.headers["x-content-type-options"] = "nosniff";
  return asset.body;
};

/**
 * `base`: the plugin's prefix, where the API lives for the page; `apiEnabled`: whether API_KEY is set.
 * `failed`: told once if the script cannot be built (the page then answers 503 for it).
 */
export function consoleRoutes(base: string, apiEnabled: boolean, failed: (error: Error) => void) {
  const page = consolePage(base, apiEnabled);
  bundle().catch(failed);
  return new Elysia()
    .get(Route.console, ({ set }) => {
      set.headers["content-type"] = "text/html; charset=utf-8";
      set.headers["content-security-policy"] = CSP;
      set.headers["x-content-type-options"] = "nosniff";
      set.headers["x-frame-options"] = "DENY"; // frame-ancestors, for browsers that predate it
      set.headers["referrer-policy"] = "no-referrer";
      set.headers["cache-control"] = "no-cache";
      return page;
    })
    .get(`${Route.console}/app.js`, async ({ set }) => {
      try {
        return served(await bundle(), set);
      } catch {
        return status(503, { error: "the console's script could not be built: see the server's log" });
      }
    })
    .get(`${Route.console}/app.css`, ({ set }) => served(stylesheet(), set));
}

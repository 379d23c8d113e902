// A minimal Chrome DevTools Protocol driver for headless Chromium (Debian's `chromium`), no npm packages: one
// browser process with its own throw-away profile, one page, driven over the page target's WebSocket. Every
// wait is bounded; close() kills the process and removes the profile (call it from afterAll, it is idempotent).
// Tests skip when `chromiumPath` is null (`apt-get install chromium`), as test/browser.test.ts does.
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

export const chromiumPath: string | null = Bun.which("chromium") ?? Bun.which("chromium-browser");

/** Browsers not closed yet: killed (and their profiles removed) if the process exits without close(). */
const live = new Set<{ kill(): void }>();
process.on("exit", () => {
  for (const b of live) b.kill();
});

/** Bounds a promise; the timer is cleared either way. */
function bounded<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  return Promise.race([
    promise,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`cdp: timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

interface CdpMessage {
  id?: number;
  method?: string;
  params?: Record<string, unknown>;
  result?: Record<string, unknown>;
  error?: { code: number; message: string; data?: string };
}

interface RemoteObject {
  type: string;
  subtype?: string;
  value?: unknown;
  unserializableValue?: string;
  description?: string;
}

interface ExceptionDetails {
  text: string;
  lineNumber: number;
  columnNumber: number;
  exception?: RemoteObject;
}

/** Keys press() knows: DOM key name -> [windowsVirtualKeyCode, code, text typed (if any)]. */
const KEYS: Record<string, [number, string, string | undefined]> = {
  Enter: [13, "Enter", "\r"],
  Tab: [9, "Tab", undefined],
  Escape: [27, "Escape", undefined],
  Backspace: [8, "Backspace", undefined],
  Space: [32, "Space", " "],
  ArrowUp: [38, "ArrowUp", undefined],
  ArrowDown: [40, "ArrowDown", undefined],
  ArrowLeft: [37, "ArrowLeft", undefined],
  ArrowRight: [39, "ArrowRight", undefined],
  Home: [36, "Home", undefined],
  End: [35, "End", undefined],
};

export interface LaunchOptions {
  /** Bound for the browser to start and its page to be reachable; default 20 s. */
  startMs?: number;
  /** Bound for each protocol command; default 10 s. */
  commandMs?: number;
  width?: number;
  height?: number;
}

/** One headless Chromium and its one page. */
export class Browser {
  /**
   * What the page logged, oldest first, as text: console.* calls ("log: ...", "error: ..."), uncaught exceptions
   * ("exception: ..."), and the browser's own entries ("network.error: ...", "security.error: ..." for a CSP
   * violation, "javascript.error: ..."). Tests may clear it (`console.length = 0`).
   */
  readonly console: string[] = [];
  private nextId = 1;
  private readonly pending = new Map<number, { resolve(m: CdpMessage): void; reject(e: Error): void; method: string }>();
  private readonly listeners = new Map<string, Set<(params: Record<string, unknown>) => void>>();
  private closed = false;
  private stderrText = "";

  private constructor(
    private readonly proc: Bun.Subprocess<"ignore", "ignore", "pipe">,
    private readonly profile: string,
    private readonly socket: WebSocket,
    private readonly commandMs: number,
    private readonly guard: { kill(): void },
  ) {
    socket.addEventListener("message", (e) => this.onMessage(String(e.data)));
    socket.addEventListener("close", () => this.failPending(new Error("cdp: the DevTools connection closed")));
  }

  /** Starts Chromium on about:blank and connects to its page. Throws (after cleaning up) if it cannot. */
  static async launch(options: LaunchOptions = {}): Promise<Browser> {
    if (chromiumPath === null) throw new Error("cdp: chromium is not installed");
    const startMs = options.startMs ?? 20_000;
    const width = options.width ?? 1280;
    const height = options.height ?? 800;
    const profile = mkdtempSync(join(tmpdir(), "switchboard-cdp-"));
    const proc = Bun.spawn(
      [
        chromiumPath,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--mute-audio",
        "--remote-debugging-port=0",
        "--remote-allow-origins=*",
        `--user-data-dir=${profile}`,
        `--window-size=${width},${height}`,
        "about:blank",
      ],
      { stdin: "ignore", stdout: "ignore", stderr: "pipe" },
    );
    const cleanup = () => {
      proc.kill("SIGKILL");
      rmSync(profile, { recursive: true, force: true });
      live.delete(guard);
    };
    const guard = { kill: cleanup };
    live.add(guard);
    try {
      // Chromium prints `DevTools listening on ws://127.0.0.1:PORT/devtools/browser/ID` on stderr. Keep draining
      // stderr afterwards (a full pipe would block the browser), keeping only its tail for error messages.
      let stderr = "";
      let onLine: (() => void) | undefined;
      const drained = (async () => {
        const decoder = new TextDecoder();
        for await (const chunk of proc.stderr) {
          stderr = (stderr + decoder.decode(chunk, { stream: true })).slice(-20_000);
          onLine?.();
        }
        onLine?.();
      })();
      const listening = /DevTools listening on (ws:\/\/[^\s]+)/;
      await bounded(
        new Promise<void>((resolve, reject) => {
          onLine = () => {
            if (listening.test(stderr)) resolve();
          };
          onLine();
          void proc.exited.then(async () => {
            await drained.catch(() => {});
            reject(new Error(`cdp: chromium exited (${proc.exitCode ?? proc.signalCode}) before listening`));
          });
        }),
        startMs,
        "chromium's DevTools line",
      ).catch((e: Error) => {
        throw new Error(`${e.message}\n${stderr}`);
      });
      const port = Number(new URL(listening.exec(stderr)![1]!).port);
      // The page target (about:blank) appears in /json/list; poll for it, bounded.
      const deadline = performance.now() + startMs;
      let pageUrl: string | undefined;
      while (pageUrl === undefined) {
        const targets = (await (await fetch(`http://127.0.0.1:${port}/json/list`)).json()) as { type: string; webSocketDebuggerUrl?: string }[];
        pageUrl = targets.find((t) => t.type === "page" && t.webSocketDebuggerUrl !== undefined)?.webSocketDebuggerUrl;
        if (pageUrl !== undefined) break;
        if (performance.now() > deadline) throw new Error(`cdp: no page target after ${startMs} ms: ${JSON.stringify(targets)}`);
        await Bun.sleep(50);
      }
      const socket = new WebSocket(pageUrl);
      await bounded(
        new Promise<void>((resolve, reject) => {
          socket.addEventListener("open", () => resolve(), { once: true });
          socket.addEventListener("error", () => reject(new Error(`cdp: could not connect to ${pageUrl}`)), { once: true });
        }),
        startMs,
        "the page's DevTools socket",
      );
      const browser = new Browser(proc, profile, socket, options.commandMs ?? 10_000, guard);
      onLine = () => (browser.stderrText = stderr);
      browser.on("Runtime.consoleAPICalled", (p) => {
        const args = (p.args as RemoteObject[]).map((a) => (a.value !== undefined ? String(a.value) : (a.description ?? a.type)));
        browser.console.push(`${String(p.type)}: ${args.join(" ")}`);
      });
      browser.on("Runtime.exceptionThrown", (p) => {
        const d = p.exceptionDetails as ExceptionDetails;
        browser.console.push(`exception: ${d.exception?.description ?? d.text}`);
      });
      browser.on("Log.entryAdded", (p) => {
        const entry = p.entry as { source: string; level: string; text: string; url?: string };
        browser.console.push(`${entry.source}.${entry.level}: ${entry.text}${entry.url ? ` (${entry.url})` : ""}`);
      });
      await browser.send("Page.enable");
      await browser.send("Runtime.enable");
      await browser.send("Log.enable");
      // A headless page never has the OS focus: emulate a focused window, as a user's would be (focus events,
      // autofocus, document.hasFocus(), :focus-visible behave as on a desktop).
      await browser.send("Emulation.setFocusEmulationEnabled", { enabled: true });
      // --window-size includes the (invisible) window frame; fix the viewport itself for stable screenshots.
      await browser.send("Emulation.setDeviceMetricsOverride", { width, height, deviceScaleFactor: 1, mobile: false });
      return browser;
    } catch (e) {
      cleanup();
      throw e;
    }
  }

  /** Sends one protocol command and returns its result; bounded, and throws the protocol's error. */
  async send<R = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}, ms = this.commandMs): Promise<R> {
    if (this.closed) throw new Error(`cdp: ${method} after close()`);
    const id = this.nextId++;
    const reply = new Promise<CdpMessage>((resolve, reject) => this.pending.set(id, { resolve, reject, method }));
    this.socket.send(JSON.stringify({ id, method, params }));
    const message = await bounded(reply, ms, method).finally(() => this.pending.delete(id));
    if (message.error !== undefined) throw new Error(`cdp: ${method}: ${message.error.message}${message.error.data ? ` (${message.error.data})` : ""}`);
    return (message.result ?? {}) as R;
  }

  /** Calls `listener` on every event `method`; returns a function that stops it. */
  on(method: string, listener: (params: Record<string, unknown>) => void): () => void {
    let set = this.listeners.get(method);
    if (set === undefined) this.listeners.set(method, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** The next event `method`, bounded. */
  next(method: string, ms = this.commandMs): Promise<Record<string, unknown>> {
    let off: () => void = () => {};
    return bounded(new Promise<Record<string, unknown>>((resolve) => (off = this.on(method, resolve))), ms, method).finally(() => off());
  }

  /** Navigates and waits for the page's load event. Throws on a navigation error (e.g. connection refused). */
  async goto(url: string, ms = 15_000): Promise<void> {
    let off: () => void = () => {};
    const loaded = new Promise<unknown>((resolve) => (off = this.on("Page.loadEventFired", resolve)));
    try {
      const result = await this.send<{ errorText?: string }>("Page.navigate", { url });
      if (result.errorText !== undefined) throw new Error(`cdp: navigate to ${url}: ${result.errorText}`);
      await bounded(loaded, ms, `the load event of ${url}`);
    } finally {
      off();
    }
  }

  /** Evaluates `expression` in the page (promises awaited) and returns its value as JSON; throws what it throws. */
  async evaluate<T = unknown>(expression: string, ms = this.commandMs): Promise<T> {
    const { result, exceptionDetails } = await this.send<{ result: RemoteObject; exceptionDetails?: ExceptionDetails }>(
      "Runtime.evaluate",
      { expression, returnByValue: true, awaitPromise: true, userGesture: true },
      ms,
    );
    if (exceptionDetails !== undefined) {
      throw new Error(`cdp: evaluate threw: ${exceptionDetails.exception?.description ?? exceptionDetails.text}\n  in: ${expression}`);
    }
    if (result.unserializableValue !== undefined) return Number(result.unserializableValue) as T; // NaN, Infinity, -0
    return result.value as T;
  }

  /** Polls `expression` until it is truthy (bounded) and returns that value. */
  async waitFor<T = unknown>(expression: string, ms = 5000, what = expression): Promise<T> {
    const end = performance.now() + ms;
    let last: unknown;
    let error: unknown;
    for (;;) {
      try {
        last = await this.evaluate<T>(expression);
        error = undefined;
        if (last) return last as T;
      } catch (e) {
        error = e; // e.g. during a navigation; retried until the bound
      }
      if (performance.now() > end) {
        throw new Error(`cdp: timed out after ${ms} ms waiting for ${what} (last: ${error !== undefined ? String(error) : JSON.stringify(last)})`);
      }
      await Bun.sleep(25);
    }
  }

  /** The centre of the first element matching `selector`, scrolled into view; throws if absent or not rendered. */
  private async centre(selector: string): Promise<{ x: number; y: number }> {
    const box = await this.evaluate<{ x: number; y: number; w: number; h: number } | "missing">(
      `(() => { const el = document.querySelector(${JSON.stringify(selector)}); if (!el) return "missing";
        el.scrollIntoView({ block: "center", inline: "center" }); const r = el.getBoundingClientRect();
        return { x: r.left + r.width / 2, y: r.top + r.height / 2, w: r.width, h: r.height }; })()`,
    );
    if (box === "missing") throw new Error(`cdp: no element matches ${selector}`);
    if (box.w === 0 || box.h === 0) throw new Error(`cdp: ${selector} is not rendered (hidden?)`);
    return { x: box.x, y: box.y };
  }

  /** A real mouse click (press and release) at the centre of the element. */
  async click(selector: string): Promise<void> {
    const { x, y } = await this.centre(selector);
    await this.send("Input.dispatchMouseEvent", { type: "mouseMoved", x, y });
    await this.send("Input.dispatchMouseEvent", { type: "mousePressed", x, y, button: "left", buttons: 1, clickCount: 1 });
    await this.send("Input.dispatchMouseEvent", { type: "mouseReleased", x, y, button: "left", buttons: 0, clickCount: 1 });
  }

  /**
   * Focuses the element and types `text` as the keyboard would (Input.insertText: beforeinput/input events),
   * replacing what it held unless `append`. An empty `text` clears it (with one input event).
   */
  async type(selector: string, text: string, options: { append?: boolean } = {}): Promise<void> {
    const found = await this.evaluate<boolean>(
      `(() => { const el = document.querySelector(${JSON.stringify(selector)}); if (!el) return false; el.focus();
        if (${!options.append} && "select" in el) el.select(); return true; })()`,
    );
    if (!found) throw new Error(`cdp: no element matches ${selector}`);
    if (text === "") {
      if (!options.append) {
        await this.evaluate(
          `(() => { const el = document.activeElement; el.value = ""; el.dispatchEvent(new InputEvent("input", { bubbles: true, inputType: "deleteContentBackward" })); })()`,
        );
      }
      return;
    }
    await this.send("Input.insertText", { text });
  }

  /** Presses and releases one key (see KEYS) on the focused element; `shift` for e.g. Shift+Tab. */
  async press(key: string, options: { shift?: boolean } = {}): Promise<void> {
    const known = KEYS[key];
    if (known === undefined) throw new Error(`cdp: press() does not know the key ${key}`);
    const [keyCode, code, text] = known;
    const common = { key: key === "Space" ? " " : key, code, windowsVirtualKeyCode: keyCode, nativeVirtualKeyCode: keyCode, modifiers: options.shift ? 8 : 0 };
    await this.send("Input.dispatchKeyEvent", { type: text === undefined ? "rawKeyDown" : "keyDown", ...common, ...(text === undefined ? {} : { text, unmodifiedText: text }) });
    await this.send("Input.dispatchKeyEvent", { type: "keyUp", ...common });
  }

  /** Writes a PNG of the viewport (or the whole page with `fullPage`) to `path`; returns its size in bytes. */
  async screenshot(path: string, options: { fullPage?: boolean } = {}): Promise<number> {
    const { data } = await this.send<{ data: string }>("Page.captureScreenshot", { format: "png", captureBeyondViewport: options.fullPage ?? false }, 20_000);
    return Bun.write(path, Buffer.from(data, "base64"));
  }

  /** Emulates the OS colour scheme (prefers-color-scheme) for the page. */
  async emulateColorScheme(scheme: "dark" | "light"): Promise<void> {
    await this.send("Emulation.setEmulatedMedia", { features: [{ name: "prefers-color-scheme", value: scheme }] });
  }

  /** The tail of Chromium's stderr (for failure messages). */
  get stderr(): string {
    return this.stderrText;
  }

  /** Closes the page's socket, kills Chromium (all its processes) and removes the profile. Idempotent. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.failPending(new Error("cdp: closed"));
    try {
      this.socket.close();
    } catch {}
    this.proc.kill("SIGTERM"); // lets the browser take its zygote and renderers down with it
    const exited = await bounded(this.proc.exited, 5000, "chromium to exit").then(
      () => true,
      () => false,
    );
    if (!exited) {
      this.proc.kill("SIGKILL");
      await bounded(this.proc.exited, 5000, "chromium to die").catch(() => {});
    }
    rmSync(this.profile, { recursive: true, force: true });
    live.delete(this.guard);
  }

  /** The browser process id (for tests that check nothing is left behind). */
  get pid(): number {
    return this.proc.pid;
  }

  private onMessage(text: string): void {
    const message = JSON.parse(text) as CdpMessage;
    if (message.id !== undefined) {
      this.pending.get(message.id)?.resolve(message);
      return;
    }
    if (message.method !== undefined) {
      for (const listener of this.listeners.get(message.method) ?? []) listener(message.params ?? {});
    }
  }

  private failPending(error: Error): void {
    for (const [id, p] of this.pending) {
      this.pending.delete(id);
      p.reject(new Error(`${error.message} (during ${p.method})`));
    }
  }
}

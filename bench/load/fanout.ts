// Fan-out load generator (its own process): `subscribers` sockets on one topic, one publisher keeping `window`
// publishes in flight (a new one per ack). Counts every delivery, checks that nothing was lost (each
// subscriber must receive every acked publish), and records publish-to-receive latency on a few sampling
// subscribers in an HDR histogram (publisher and samplers share this process's clock).
// Protocol: "@start"/"@end" around the measured window, last line "=" + JSON result.
import * as hdr from "hdr-histogram-js";
import { clientFrame, LoadConn } from "../lib.ts";

interface Args {
  port: number;
  subscribers: number;
  seconds: number;
  warmupMs: number;
  window: number;
  samplers: number;
  /** switchboard greets with a welcome frame; the raw baseline does not */
  welcome: boolean;
}

const args = JSON.parse(process.argv[2]!) as Args;
const start = performance.now();
const nowUs = () => Math.round((performance.now() - start) * 1000);
const latency = hdr.build({ lowestDiscernibleValue: 1, highestTrackableValue: 60_000_000, numberOfSignificantValueDigits: 3 });
const before = args.welcome ? 2 : 1; // frames before the first message: (welcome +) subscribed

const subs = Array.from({ length: args.subscribers }, () => new LoadConn(args.port, "/connect"));
for (let i = 0; i < subs.length; i += 500) await Promise.all(subs.slice(i, i + 500).map((s) => s.open()));
const subscribe = clientFrame(JSON.stringify({ type: "subscribe", topic: "bench" }));
for (const s of subs) s.write(subscribe);
while (subs.some((s) => s.frames < before && !s.closed)) await Bun.sleep(10);

// Samplers parse `"data":{"t":<us>}` out of the message frame; every other subscriber only counts frames.
const decoder = new TextDecoder();
let measuring = false;
for (const s of subs.slice(0, args.samplers)) {
  s.capture = (payload) => {
    if (!measuring) return;
    const text = decoder.decode(payload);
    const at = text.indexOf('"t":');
    if (at < 0) return;
    latency.recordValue(Math.max(1, nowUs() - Number.parseInt(text.slice(at + 4), 10)));
  };
}

// JIT warm-up: publishes to a topic nobody holds, before the measured run. A server's publish path is JS that
// runs once per publish, only ~2,500 times a second at 1,000 subscribers, so a time-based warm-up alone leaves
// it in the JIT's lower tiers well into the window: with BUN_JSC_reportCompileTimes, switchboard compiled
// 20-40 ms of DFG/FTL code (on the server's pinned core) inside a 2 s window after 1-3 s of warm-up, raw Bun's
// three-line handler none. After these 50,000 publishes neither compiles anything in the window. Both servers
// get the same warm-up; the window then measures steady-state fan-out.
const WARM_PUBLISHES = 50_000;
const warmFrame = clientFrame(`{"type":"publish","topic":"warmup","data":{"t":${nowUs()}},"id":1}`);
let warmSent = 0;
let warmAcked = 0;
let warmStarted = false;
const warm = new LoadConn(args.port, "/connect", (c, n) => {
  if (!warmStarted) return;
  warmAcked += n;
  for (let i = 0; i < n && warmSent < WARM_PUBLISHES; i++, warmSent++) c.write(warmFrame);
});
await warm.open();
if (args.welcome) while (warm.frames < 1) await Bun.sleep(5);
warmStarted = true;
for (; warmSent < args.window; warmSent++) warm.write(warmFrame);
const warmUntil = performance.now() + 30_000;
while (warmAcked < WARM_PUBLISHES && !warm.closed && performance.now() < warmUntil) await Bun.sleep(5);
warm.close();

let publishing = true;
let started = false;
let published = 0;
let acked = 0;
const publish = (c: LoadConn) => {
  c.write(clientFrame(`{"type":"publish","topic":"bench","data":{"t":${nowUs()}},"id":1}`));
  published++;
};
// The publisher is not subscribed: after switchboard's welcome, every frame it gets is an ack.
const pub = new LoadConn(args.port, "/connect", (c, n) => {
  if (!started) return;
  acked += n;
  if (publishing) for (let i = 0; i < n; i++) publish(c);
});
await pub.open();
if (args.welcome) while (pub.frames < 1) await Bun.sleep(5);
started = true;
for (let i = 0; i < args.window; i++) publish(pub);

const delivered = () => subs.reduce((sum, s) => sum + s.frames - before, 0);
await Bun.sleep(args.warmupMs);
measuring = true;
const d0 = delivered();
const cpu0 = process.cpuUsage();
const t0 = performance.now();
console.log("@start");
await Bun.sleep(args.seconds * 1000);
const d1 = delivered();
const elapsedMs = performance.now() - t0;
const cpu = process.cpuUsage(cpu0);
console.log("@end");
measuring = false;

// Stop, let everything in flight arrive, then account for every publish.
publishing = false;
const drainUntil = performance.now() + 10_000;
while ((acked < published || delivered() < published * subs.length) && performance.now() < drainUntil) await Bun.sleep(20);
const dropped = subs.filter((s) => s.closed).length;
const received = delivered();
for (const c of [...subs, pub]) c.close();
console.log(
  "=" +
    JSON.stringify({
      deliveries: d1 - d0,
      elapsedMs,
      published,
      acked,
      expected: published * subs.length,
      received,
      lost: published * subs.length - received,
      droppedSubscribers: dropped,
      cpuUs: cpu.user + cpu.system,
      histogram: hdr.encodeIntoCompressedBase64(latency),
    }),
);
process.exit(0);

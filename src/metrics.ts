// Counters for GET /metrics in the Prometheus text format. The hot path only increments plain numbers on one
// object; labels, maps and text are built when Prometheus scrapes, never per frame.
import { Close } from "./protocol-tables.ts";

/** Counters keyed by a label value (reason, code). Only touched off the hot path (errors, closes, rejects). */
class Labeled {
  readonly values = new Map<string, number>();
  inc(label: string | number, by = 1): void {
    const key = String(label);
    this.values.set(key, (this.values.get(key) ?? 0) + by);
  }
  get(label: string | number): number {
    return this.values.get(String(label)) ?? 0;
  }
}

/**
 * Close codes that are labels of their own: the protocol's (src/protocol-tables.ts) and RFC 6455's standard
 * ones; anything else a client picks is counted as "other".
 */
const KNOWN_CLOSE_CODES = new Set([1000, 1002, 1003, 1005, 1006, 1007, 1010, ...Object.values(Close).map((c) => c.code)]);

/** A fixed label set for close codes: clients choose their own codes, and must not create series at will. */
export function closeLabel(code: number): string {
  return KNOWN_CLOSE_CODES.has(code) ? String(code) : "other";
}

export class Metrics {
  // Per frame: plain fields, incremented inline.
  framesIn = 0;
  /** Payload length of received frames: bytes for binary, UTF-16 code units for text (no re-encoding per frame). */
  bytesIn = 0;
  /** Frames sent to one socket (echoes, replies, errors, welcome); fan-out deliveries are counted separately. */
  framesOut = 0;
  bytesOut = 0;
  /** /echo messages: each is one frame in and one out of the same length, counted once on the hot path. */
  echoes = 0;
  echoPayload = 0;
  publishes = 0;
  /** Local deliveries: subscribers of the topic in this process at publish time (Bun's subscriberCount). */
  deliveries = 0;
  heartbeatTimeouts = 0;
  rateLimited = 0;
  tokenExpiries = 0;
  /** History: messages stored (their publishes are counted once stored), and history requests answered. */
  historyAppends = 0;
  historyReads = 0;
  /** Join and leave events announced (each once, to the topic's `presence: true` subscribers). */
  presenceEvents = 0;
  /** Topics whose stream on this node broke (Redis link lost messages, history reset): subscribers re-recover. */
  streamBreaks = 0;

  readonly upgradesAccepted = new Labeled();
  readonly upgradesRejected = new Labeled();
  readonly errors = new Labeled();
  readonly closes = new Labeled();
  /** Publishes and history reads the store could not serve: unavailable (not done) or unconfirmed (unknown). */
  readonly historyRefused = new Labeled();
  /** Subscribes with `since`, by outcome: recovered, not_recovered, unavailable. */
  readonly recoveries = new Labeled();

  /** Renders every metric; `gauges` are read at scrape time from their owners (connections, broker state). */
  render(gauges: {
    connections: Record<string, number>;
    brokerReady: boolean;
    brokerKind: string;
    redis?: Record<string, number>;
    redisGauges?: Record<string, number>;
    /** The history store's own figures when it lives in this process (memory broker). */
    history?: { counters: Record<string, number>; gauges: Record<string, number> };
    presence?: Record<string, number>;
  }): string {
    const out: string[] = [];
    const metric = (name: string, type: "counter" | "gauge", help: string, samples: [string, number][]) => {
      out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
      for (const [labels, value] of samples) out.push(`${name}${labels} ${value}`);
    };
    const labeled = (key: string, counter: Labeled, known: readonly string[] = []): [string, number][] => {
      const keys = new Set([...known, ...counter.values.keys()]);
      return [...keys].sort().map((k) => [`{${key}="${k}"}`, counter.get(k)]);
    };

    metric("switchboard_connections", "gauge", "Open WebSocket connections.", Object.entries(gauges.connections).map(([route, n]) => [`{route="${route}"}`, n]));
    metric("switchboard_upgrades_accepted_total", "counter", "WebSocket upgrades accepted.", labeled("route", this.upgradesAccepted, ["connect", "echo"]));
    metric("switchboard_upgrades_rejected_total", "counter", "WebSocket upgrades refused, by reason.", labeled("reason", this.upgradesRejected));
    metric("switchboard_frames_received_total", "counter", "Frames received from clients.", [["", this.framesIn + this.echoes]]);
    metric("switchboard_frames_received_payload_total", "counter", "Payload length received (bytes for binary, UTF-16 units for text).", [["", this.bytesIn + this.echoPayload]]);
    metric("switchboard_frames_sent_total", "counter", "Frames sent to one socket (replies, echoes); deliveries are separate.", [["", this.framesOut + this.echoes]]);
    metric("switchboard_frames_sent_payload_total", "counter", "Payload length of frames sent to one socket.", [["", this.bytesOut + this.echoPayload]]);
    metric("switchboard_publishes_total", "counter", "Publishes accepted (socket and HTTP).", [["", this.publishes]]);
    metric("switchboard_deliveries_total", "counter", "Messages handed to local subscribers (subscriber count per publish, from this node or others).", [["", this.deliveries]]);
    metric("switchboard_errors_total", "counter", "Error frames sent, by code.", labeled("code", this.errors));
    metric("switchboard_closes_total", "counter", "Closed connections, by close code (1006: dropped without a close frame, which includes backpressure drops).", labeled("code", this.closes));
    metric("switchboard_heartbeat_timeouts_total", "counter", "Connections closed with 4000 for missing the read deadline.", [["", this.heartbeatTimeouts]]);
    metric("switchboard_token_expiries_total", "counter", "Connections closed with 4001 when their token expired.", [["", this.tokenExpiries]]);
    metric("switchboard_rate_limited_total", "counter", "Frames refused with rate_limited.", [["", this.rateLimited]]);
    metric("switchboard_broker_ready", "gauge", "1 when the broker reaches the other nodes (always 1 for memory).", [[`{broker="${gauges.brokerKind}"}`, gauges.brokerReady ? 1 : 0]]);
    metric("switchboard_history_appends_total", "counter", "Messages stored in history (their publishes are acknowledged with the offset).", [["", this.historyAppends]]);
    metric("switchboard_history_refused_total", "counter", "Publishes and history reads the store could not serve: unavailable (not stored, none delivered) or unconfirmed (no answer in time: outcome unknown).", labeled("outcome", this.historyRefused, ["unavailable", "unconfirmed"]));
    metric("switchboard_history_reads_total", "counter", "History requests answered (socket and HTTP).", [["", this.historyReads]]);
    metric("switchboard_history_recoveries_total", "counter", "Subscribes with since, by outcome.", labeled("outcome", this.recoveries, ["recovered", "not_recovered", "unavailable"]));
    metric("switchboard_presence_events_total", "counter", "Join and leave events announced.", [["", this.presenceEvents]]);
    if (gauges.presence) {
      metric("switchboard_presence_entries", "gauge", "Presence entries held by this node (one per active subscription).", [["", gauges.presence.entries ?? 0]]);
      metric("switchboard_presence_topics", "gauge", "Topics with presence entries on this node.", [["", gauges.presence.topics ?? 0]]);
    }
    metric("switchboard_history_stream_breaks_total", "counter", "Topics whose stream on this node broke; their subscribers were sent to recover.", [["", this.streamBreaks]]);
    if (gauges.history) {
      for (const [k, v] of Object.entries(gauges.history.counters)) metric(`switchboard_history_${k}_total`, "counter", `History store (memory): ${k} messages.`, [["", v]]);
      metric("switchboard_history_bytes", "gauge", "History store (memory): bytes held, as counted against HISTORY_MAX_BYTES.", [["", gauges.history.gauges.bytes ?? 0]]);
      metric("switchboard_history_topics", "gauge", "History store (memory): topics with a position.", [["", gauges.history.gauges.topics ?? 0]]);
      metric("switchboard_history_messages", "gauge", "History store (memory): messages held.", [["", gauges.history.gauges.messages ?? 0]]);
    }
    if (gauges.redis) {
      for (const [k, v] of Object.entries(gauges.redis)) metric(`switchboard_redis_${k}_total`, "counter", `Redis broker: ${k}.`, [["", v]]);
    }
    if (gauges.redisGauges) {
      for (const [k, v] of Object.entries(gauges.redisGauges)) metric(`switchboard_redis_${k}`, "gauge", `Redis broker: ${k.replaceAll("_", " ")}.`, [["", v]]);
    }
    return `${out.join("\n")}\n`;
  }
}

// The console's script, bundled for the browser when /console/app.js is first asked for (src/console/routes.ts).
// It reads the HTTP API with the operator's key (sessionStorage, a bearer header, never a URL) and polls it once
// a second: the nodes every time (header, charts), plus what the open view shows. Everything from the server is
// put on the page as text (textContent), never as HTML: presence info and message data are anyone's JSON.
import uPlot from "uplot";
// Types only (erased from the bundle): the shapes the API answers with, declared once on the server.
import type { TopicView } from "../cluster.ts";
import type { NodeRecord } from "../protocol.ts";
import type { PresenceClient } from "../client.ts";

const KEY_STORE = "switchboard.apiKey";
/** Why the last session ended, when the server ended it: shown once at the next sign-in form. */
const SIGNED_OUT_STORE = "switchboard.signedOut";
const POLL_MS = 1000;
/** Rows per page of the topic and presence tables: the DOM stays small whatever the server returns. */
const PAGE_ROWS = 50;
/** Points kept per chart series: 5 minutes at one a second. */
const CHART_POINTS = 300;
const HISTORY_SHOWN = 20;

const body = document.body;
const base = body.dataset.base ?? "";
const $ = <T extends HTMLElement = HTMLElement>(id: string): T => document.getElementById(id) as T;

/** A node as GET /api/nodes lists it (`self`: the node that answered). */
type NodeView = NodeRecord & { self?: boolean };

type View = "nodes" | "topics" | "topic" | "publish";
/** The tables with a pager: `<id>-prev`, `<id>-page`, `<id>-next`. */
type Paged = "topics" | "presence";

const state = {
  key: sessionStorage.getItem(KEY_STORE),
  view: "nodes" as View,
  topic: "",
  topics: [] as TopicView[],
  topicsTruncated: false,
  /** Topics whose cluster count did not come (their Redis instance does not answer, when sharded). */
  topicsUnavailable: 0,
  /** The filter holds characters no topic has: nothing is asked. */
  invalidPrefix: false,
  topicSort: { by: "local" as "topic" | "local" | "cluster", descending: true },
  presence: [] as PresenceClient[],
  /** The page each paged table shows (clamped when it is drawn). */
  pages: { topics: 0, presence: 0 } as Record<Paged, number>,
  /** Nodes seen since the page loaded, with whether the last poll listed them. */
  nodes: new Map<string, { node: NodeView; up: boolean }>(),
  series: { time: [] as number[], connections: [] as number[], msgsIn: [] as number[], msgsOut: [] as number[] },
  polls: 0,
  timer: undefined as ReturnType<typeof setTimeout> | undefined,
};

class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** One call of the HTTP API with the key; rejects with ApiError carrying the server's `error` text. */
async function api<T>(path: string, init: { method?: string; json?: unknown } = {}): Promise<T> {
  const headers: Record<string, string> = { authorization: `Bearer ${state.key ?? ""}` };
  if (init.json !== undefined) headers["content-type"] = "application/json";
  let res: Response;
  try {
    res = await fetch(base + path, { method: init.method ?? "GET", headers, body: init.json === undefined ? undefined : JSON.stringify(init.json) });
  } catch {
    throw new ApiError(0, "cannot reach the server");
  }
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    parsed = undefined;
  }
  if (!res.ok) {
    const error = (parsed as { error?: unknown } | undefined)?.error;
    throw new ApiError(res.status, typeof error === "string" ? error : `HTTP ${res.status}`);
  }
  return parsed as T;
}

function show(id: string, visible: boolean): void {
  $(id).hidden = !visible;
}

function setText(id: string, text: string): void {
  const el = $(id);
  if (el.textContent !== text) el.textContent = text;
}

function cell(row: HTMLTableRowElement, className: string, text = ""): HTMLTableCellElement {
  const td = row.insertCell();
  td.className = className;
  td.textContent = text;
  return td;
}

/** Sets a cell's text (and class) only when it changed: a selection in it survives a poll round. */
function fill(td: HTMLTableCellElement, text: string, className?: string): void {
  if (td.textContent !== text) td.textContent = text;
  if (className !== undefined && td.className !== className) td.className = className;
}

/**
 * Keeps `tbody`'s rows in `items`' order, keyed by the row's `data-<attr>`: a row already there is updated in
 * place and moved only when the order changed, so focus, a half-done click and selected text survive each poll
 * round; new rows are built, rows of gone items removed.
 */
/**
 * The rows of table `id`'s current page (its page clamped to what `rows` has), with its pager drawn: the DOM
 * holds PAGE_ROWS rows at most, however many the server listed.
 */
function pageOf<T>(id: Paged, rows: readonly T[]): T[] {
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_ROWS));
  const page = (state.pages[id] = Math.min(state.pages[id], pages - 1));
  setText(`${id}-page`, `page ${page + 1} of ${pages}`);
  $<HTMLButtonElement>(`${id}-prev`).disabled = page === 0;
  $<HTMLButtonElement>(`${id}-next`).disabled = page >= pages - 1;
  return rows.slice(page * PAGE_ROWS, (page + 1) * PAGE_ROWS);
}

function syncRows<T>(
  tbody: HTMLTableSectionElement,
  items: readonly T[],
  attr: "nodeId" | "topic" | "connectionId",
  keyOf: (item: T) => string,
  build: (item: T) => HTMLTableRowElement,
  update: (row: HTMLTableRowElement, item: T) => void,
): void {
  // Moving a row takes it out of the page for a moment, which drops focus inside it: put it back after.
  const focused = document.activeElement;
  const existing = new Map<string, HTMLTableRowElement>();
  for (const row of tbody.rows) existing.set(row.dataset[attr] ?? "", row);
  let at: Element | null = tbody.firstElementChild;
  for (const item of items) {
    const key = keyOf(item);
    let row = existing.get(key);
    if (row === undefined) {
      row = build(item);
      row.dataset[attr] = key;
    } else existing.delete(key);
    update(row, item);
    if (row === at) at = at.nextElementSibling;
    else tbody.insertBefore(row, at);
  }
  for (const row of existing.values()) row.remove();
  if (focused instanceof HTMLElement && focused !== document.activeElement && focused.isConnected) focused.focus({ preventScroll: true });
}

const fmt = new Intl.NumberFormat("en-US", { maximumFractionDigits: 1 });

function uptime(ms: number): string {
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d ${h}h`;
  if (h > 0) return `${h}h ${String(m).padStart(2, "0")}m`;
  return `${m}m ${String(s % 60).padStart(2, "0")}s`;
}

// Sign-in.

async function signIn(key: string): Promise<void> {
  state.key = key;
  try {
    await api("/api/nodes");
  } catch (error) {
    state.key = null;
    const e = error as ApiError;
    // Only a refused key is forgotten: a server that is restarting must not sign the operator out.
    if (e.status === 401) sessionStorage.removeItem(KEY_STORE);
    const reason = e.status === 401 ? "wrong API key" : e.status === 403 ? "the HTTP API is off on this server (API_KEY unset)" : `${e.message}: try again`;
    setText("signin-error", reason);
    show("signin-error", true);
    show("signin", true);
    show("app", false);
    show("nav", false);
    $<HTMLInputElement>("key").focus();
    return;
  }
  sessionStorage.setItem(KEY_STORE, key);
  $<HTMLInputElement>("key").value = "";
  show("signin-error", false);
  show("signin", false);
  show("app", true);
  show("nav", true);
  go(state.view);
  void poll();
}

/**
 * Forgets the key and everything the session showed (nodes, charts, presence, history, the publish form): a
 * reload, so a round in flight cannot answer into the next session either. `reason` is shown at sign-in.
 */
function signOut(reason?: string): void {
  sessionStorage.removeItem(KEY_STORE);
  if (reason === undefined) sessionStorage.removeItem(SIGNED_OUT_STORE);
  else sessionStorage.setItem(SIGNED_OUT_STORE, reason);
  state.key = null;
  clearTimeout(state.timer);
  location.reload();
}

// Views.

function go(view: View): void {
  state.view = view;
  for (const v of ["nodes", "topics", "topic", "publish"] as const) show(`view-${v}`, v === view);
  for (const button of document.querySelectorAll<HTMLButtonElement>("nav button[data-view]")) {
    const current = button.dataset.view === view || (view === "topic" && button.dataset.view === "topics");
    if (current) button.setAttribute("aria-current", "page");
    else button.removeAttribute("aria-current");
  }
  if (view === "nodes") ensureCharts();
  if (view === "topics") renderTopics();
}

function openTopic(topic: string): void {
  state.topic = topic;
  state.presence = [];
  state.pages.presence = 0;
  setText("topic-name", topic);
  $("presence").querySelector("tbody")!.replaceChildren();
  $("history").replaceChildren();
  go("topic");
  void poll();
}

// Polling: one round at a time, the next a second after the last ended. A round asked for while one runs (a
// view opened) follows it at once instead of running beside it.

let polling = false;
let pollAgain = false;

async function poll(): Promise<void> {
  if (polling) {
    pollAgain = true;
    return;
  }
  clearTimeout(state.timer);
  if (state.key === null) return;
  polling = true;
  let nodesRead = false;
  try {
    await pollNodes();
    nodesRead = true;
    if (state.view === "topics") await pollTopics();
    else if (state.view === "topic") await pollTopic();
    setText("status", "");
  } catch (error) {
    const e = error as ApiError;
    if (e.status === 401) return signOut("signed out: the server no longer accepts this API key");
    setText("status", `cannot read the API: ${e.message} (retrying)`);
    if (!nodesRead) {
      // What the nodes showed is no longer known.
      for (const entry of state.nodes.values()) entry.up = false;
      renderNodes();
    }
  }
  polling = false;
  body.dataset.polls = String(++state.polls);
  if (state.key === null) return;
  if (pollAgain) {
    pollAgain = false;
    void poll();
  } else if (document.visibilityState !== "hidden") {
    // A tab nobody looks at polls nothing; it catches up when shown again (visibilitychange).
    state.timer = setTimeout(() => void poll(), POLL_MS);
  }
}

async function pollNodes(): Promise<void> {
  const { nodes } = await api<{ nodes: NodeView[] }>("/api/nodes");
  const listed = new Set(nodes.map((n) => n.nodeId));
  for (const node of nodes) state.nodes.set(node.nodeId, { node, up: true });
  for (const [id, entry] of state.nodes) if (!listed.has(id)) entry.up = false;
  let connections = 0;
  let msgsIn = 0;
  let msgsOut = 0;
  for (const n of nodes) {
    connections += n.connections;
    msgsIn += n.messagesInPerSec;
    msgsOut += n.messagesOutPerSec;
  }
  setText("total-connections", String(connections));
  const s = state.series;
  s.time.push(Date.now() / 1000);
  s.connections.push(connections);
  s.msgsIn.push(msgsIn);
  s.msgsOut.push(msgsOut);
  if (s.time.length > CHART_POINTS) for (const list of Object.values(s)) list.shift();
  renderNodes();
  updateCharts();
}

function renderNodes(): void {
  const rows = [...state.nodes.values()].sort((a, b) => Number(b.node.self ?? false) - Number(a.node.self ?? false) || a.node.nodeId.localeCompare(b.node.nodeId));
  const columns = ["id", "state", "address", "uptime", "connections", "topics", "msgs-in", "msgs-out"];
  syncRows(
    $("nodes").querySelector("tbody")!,
    rows,
    "nodeId",
    (entry) => entry.node.nodeId,
    () => {
      const row = document.createElement("tr");
      for (const name of columns) cell(row, name);
      return row;
    },
    (row, { node, up }) => {
      const [id, status, address, uptimeCell, connections, topics, msgsIn, msgsOut] = row.cells as unknown as HTMLTableCellElement[];
      fill(id!, node.self ? `${node.nodeId} (this one)` : node.nodeId);
      fill(status!, up ? "up" : "down", `state ${up ? "up" : "down"}`);
      fill(address!, node.address);
      fill(uptimeCell!, up ? uptime(node.uptimeMs) : "-");
      fill(connections!, up ? String(node.connections) : "-");
      fill(topics!, up ? String(node.topics) : "-");
      fill(msgsIn!, up ? fmt.format(node.messagesInPerSec) : "-");
      fill(msgsOut!, up ? fmt.format(node.messagesOutPerSec) : "-");
    },
  );
}

// Charts (uPlot): redrawn with the new points; rebuilt when the color scheme changes.

let charts: { connections: uPlot; messages: uPlot } | undefined;

function chartOptions(el: HTMLElement, series: uPlot.Series[]): uPlot.Options {
  const css = getComputedStyle(body);
  const fg = css.getPropertyValue("--muted").trim() || "#888";
  const grid = css.getPropertyValue("--line").trim() || "#ddd";
  const axis: uPlot.Axis = { stroke: fg, grid: { stroke: grid, width: 1 }, ticks: { stroke: grid, width: 1 } };
  return { width: Math.max(300, el.clientWidth), height: 220, series: [{}, ...series], axes: [axis, { ...axis, size: 60 }], legend: { show: true } };
}

function ensureCharts(): void {
  if (charts !== undefined) return;
  const accent = getComputedStyle(body).getPropertyValue("--accent").trim() || "#2f6feb";
  const good = getComputedStyle(body).getPropertyValue("--good").trim() || "#2e7d32";
  const c = $("chart-connections");
  const m = $("chart-messages");
  const s = state.series;
  charts = {
    connections: new uPlot(chartOptions(c, [{ label: "connections", stroke: accent, width: 2 }]), [s.time, s.connections], c),
    messages: new uPlot(
      chartOptions(m, [
        { label: "in/s", stroke: good, width: 2 },
        { label: "out/s", stroke: accent, width: 2 },
      ]),
      [s.time, s.msgsIn, s.msgsOut],
      m,
    ),
  };
}

function updateCharts(): void {
  if (charts === undefined || state.view !== "nodes") return;
  const s = state.series;
  charts.connections.setData([s.time, s.connections]);
  charts.messages.setData([s.time, s.msgsIn, s.msgsOut]);
}

function rebuildCharts(): void {
  charts?.connections.destroy();
  charts?.messages.destroy();
  charts = undefined;
  if (state.view === "nodes") ensureCharts();
}

// Topics: the server filters by prefix (at most 1,000, busiest first); sorting and paging happen here.

const TOPIC_PREFIX = /^[A-Za-z0-9._:/-]{0,200}$/;

async function pollTopics(): Promise<void> {
  const prefix = $<HTMLInputElement>("topic-filter").value.trim();
  state.invalidPrefix = !TOPIC_PREFIX.test(prefix);
  if (state.invalidPrefix) {
    state.topics = [];
    renderTopics();
    return;
  }
  const read = await api<{ topics: TopicView[]; truncated?: boolean; unavailable?: number }>(`/api/topics${prefix === "" ? "" : `?prefix=${encodeURIComponent(prefix)}`}`);
  // A newer filter was typed meanwhile: this answer is for the old one.
  if ($<HTMLInputElement>("topic-filter").value.trim() !== prefix) return;
  state.topics = read.topics;
  state.topicsTruncated = read.truncated === true;
  state.topicsUnavailable = read.unavailable ?? 0;
  renderTopics();
}

function sortedTopics(): TopicView[] {
  const prefix = $<HTMLInputElement>("topic-filter").value.trim();
  const { by, descending } = state.topicSort;
  const rows = state.topics.filter((t) => t.topic.startsWith(prefix));
  const sign = descending ? -1 : 1;
  return rows.sort((a, b) => {
    if (by === "cluster" && (a.cluster === null) !== (b.cluster === null)) return a.cluster === null ? 1 : -1; // unknown last
    const order = by === "topic" ? a.topic.localeCompare(b.topic) : (a[by] ?? 0) - (b[by] ?? 0);
    return sign * order || a.topic.localeCompare(b.topic);
  });
}

function renderTopics(): void {
  const rows = sortedTopics();
  const shown = pageOf("topics", rows);
  setText(
    "topics-count",
    state.invalidPrefix
      ? "(a prefix is letters, digits and . _ - : /)"
      : `${rows.length} topics${state.topicsTruncated ? " (the busiest 1,000: narrow the prefix)" : ""}` +
          (state.topicsUnavailable > 0 ? ` (${state.topicsUnavailable} cluster counts unavailable: their Redis does not answer)` : ""),
  );
  syncRows(
    $("topics").querySelector("tbody")!,
    shown,
    "topic",
    (t) => t.topic,
    (t) => {
      const row = document.createElement("tr");
      cell(row, "name", t.topic);
      cell(row, "local");
      cell(row, "cluster");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "open";
      open.textContent = "Open";
      open.setAttribute("aria-label", `Open ${t.topic}`);
      open.addEventListener("click", () => openTopic(t.topic));
      row.insertCell().append(open);
      return row;
    },
    (row, t) => {
      fill(row.cells[1]!, String(t.local));
      fill(row.cells[2]!, t.cluster === null ? "-" : String(t.cluster));
    },
  );
  for (const button of document.querySelectorAll<HTMLButtonElement>("#topics button[data-sort]")) {
    const sorted = button.dataset.sort === state.topicSort.by;
    button.closest("th")!.setAttribute("aria-sort", sorted ? (state.topicSort.descending ? "descending" : "ascending") : "none");
  }
}

// One topic: its presence (paged) and its latest messages.

async function pollTopic(): Promise<void> {
  const topic = state.topic;
  const q = `?topic=${encodeURIComponent(topic)}`;
  const [presence, history] = await Promise.all([
    api<{ clients: PresenceClient[]; truncated?: boolean }>(`/api/presence${q}`).catch((error: ApiError) => error),
    api<{ messages: { offset: number; data: unknown }[] }>(`/api/history${q}&limit=${HISTORY_SHOWN}`).catch((error: ApiError) => error),
  ]);
  if (state.topic !== topic || state.view !== "topic") return;
  if (presence instanceof ApiError && presence.status === 401) throw presence;
  if (history instanceof ApiError && history.status === 401) throw history;
  state.presence = presence instanceof ApiError ? [] : presence.clients;
  setText("presence-count", presence instanceof ApiError ? `presence: ${presence.message}` : `${presence.clients.length}${presence.truncated ? "+" : ""}`);
  renderPresence();
  const note = $("history-note");
  if (history instanceof ApiError) {
    note.hidden = false;
    setText("history-note", history.message);
    $("history").replaceChildren();
  } else {
    note.hidden = true;
    $("history").replaceChildren(
      ...history.messages
        .slice()
        .reverse()
        .map((m) => {
          const li = document.createElement("li");
          li.dataset.offset = String(m.offset);
          li.value = m.offset;
          li.textContent = JSON.stringify(m.data);
          return li;
        }),
    );
  }
}

function renderPresence(): void {
  const shown = pageOf("presence", state.presence);
  syncRows(
    $("presence").querySelector("tbody")!,
    shown,
    "connectionId",
    (client) => client.connectionId,
    (client) => {
      const row = document.createElement("tr");
      cell(row, "connection", client.connectionId);
      cell(row, "user");
      cell(row, "info");
      const actions = row.insertCell();
      actions.append(confirmButton("disconnect", "Disconnect", `Disconnect ${client.connectionId}`, { connectionId: client.connectionId }));
      return row;
    },
    (row, client) => {
      fill(row.cells[1]!, client.user ?? "(open mode)");
      fill(row.cells[2]!, client.info === undefined ? "" : JSON.stringify(client.info));
      const actions = row.cells[3]!;
      const byUser = actions.querySelector("button.disconnect-user");
      if (client.user !== null && byUser === null) {
        actions.append(" ", confirmButton("disconnect-user", "Disconnect user", `Disconnect every connection of ${client.user}`, { user: client.user }));
      }
    },
  );
}

/**
 * A destructive action's button: the first press asks ("Confirm?" for 3 s), the second does it, so a stray click
 * or keypress disconnects nobody. `target`: the body of POST /api/disconnect.
 */
function confirmButton(className: string, label: string, description: string, target: { connectionId: string } | { user: string }): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  button.className = className;
  button.textContent = label;
  button.setAttribute("aria-label", description);
  let armed: ReturnType<typeof setTimeout> | undefined;
  button.addEventListener("click", () => {
    if (armed === undefined) {
      button.textContent = "Confirm?";
      armed = setTimeout(() => {
        armed = undefined;
        button.textContent = label;
      }, 3000);
      return;
    }
    clearTimeout(armed);
    armed = undefined;
    button.textContent = label;
    void disconnect(target, button);
  });
  return button;
}

async function disconnect(target: { connectionId: string } | { user: string }, button: HTMLButtonElement): Promise<void> {
  const who = "user" in target ? `user ${target.user}` : target.connectionId;
  button.disabled = true;
  try {
    const answer = await api<{ closed: number }>("/api/disconnect", { method: "POST", json: target });
    setText("status", `disconnected ${who} (${answer.closed} connection${answer.closed === 1 ? "" : "s"} on this node)`);
  } catch (error) {
    setText("status", `disconnect failed: ${(error as Error).message}`);
  }
  button.disabled = false;
  void poll();
}

// Publish: the server's own validation answers (schema errors included) are shown as they come.

async function publish(): Promise<void> {
  const topic = $<HTMLInputElement>("publish-topic").value.trim();
  const text = $<HTMLTextAreaElement>("publish-data").value;
  show("publish-result", false);
  show("publish-error", false);
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (error) {
    setText("publish-error", `not JSON: ${(error as Error).message}`);
    show("publish-error", true);
    return;
  }
  $<HTMLButtonElement>("publish-submit").disabled = true;
  try {
    const answer = await api<{ offset?: number }>("/api/publish", { method: "POST", json: { topic, data } });
    setText("publish-result", answer.offset === undefined ? `published to ${topic}` : `published to ${topic} at offset ${answer.offset}`);
    show("publish-result", true);
  } catch (error) {
    setText("publish-error", (error as Error).message);
    show("publish-error", true);
  } finally {
    $<HTMLButtonElement>("publish-submit").disabled = false;
  }
}

// Wiring.

function start(): void {
  if (body.dataset.api !== "on") {
    show("api-off", true);
    return;
  }
  $("signin").addEventListener("submit", (event) => {
    event.preventDefault();
    void signIn($<HTMLInputElement>("key").value);
  });
  $("signout").addEventListener("click", () => signOut());
  for (const button of document.querySelectorAll<HTMLButtonElement>("nav button[data-view]")) {
    button.addEventListener("click", () => {
      go(button.dataset.view as View);
      void poll();
    });
  }
  let filterTimer: ReturnType<typeof setTimeout> | undefined;
  $("topic-filter").addEventListener("input", () => {
    // At once from what is loaded, then from the server once typing pauses.
    state.pages.topics = 0;
    renderTopics();
    clearTimeout(filterTimer);
    filterTimer = setTimeout(() => void poll(), 150);
  });
  for (const button of document.querySelectorAll<HTMLButtonElement>("#topics button[data-sort]")) {
    button.addEventListener("click", () => {
      const by = button.dataset.sort as "topic" | "local" | "cluster";
      state.topicSort = { by, descending: state.topicSort.by === by ? !state.topicSort.descending : by !== "topic" };
      renderTopics();
    });
  }
  for (const [id, render] of [
    ["topics", renderTopics],
    ["presence", renderPresence],
  ] as const) {
    $(`${id}-prev`).addEventListener("click", () => {
      state.pages[id]--;
      render();
    });
    $(`${id}-next`).addEventListener("click", () => {
      state.pages[id]++;
      render();
    });
  }
  $("topic-publish").addEventListener("click", () => {
    $<HTMLInputElement>("publish-topic").value = state.topic;
    go("publish");
    $<HTMLTextAreaElement>("publish-data").focus();
  });
  $("publish").addEventListener("submit", (event) => {
    event.preventDefault();
    void publish();
  });
  document.addEventListener("visibilitychange", () => {
    if (document.visibilityState === "visible") void poll();
    else clearTimeout(state.timer); // the round already scheduled does not run either
  });
  matchMedia("(prefers-color-scheme: dark)").addEventListener("change", rebuildCharts);
  let resizeTimer: ReturnType<typeof setTimeout> | undefined;
  addEventListener("resize", () => {
    clearTimeout(resizeTimer);
    resizeTimer = setTimeout(rebuildCharts, 200);
  });
  const endedBy = sessionStorage.getItem(SIGNED_OUT_STORE);
  sessionStorage.removeItem(SIGNED_OUT_STORE);
  if (state.key !== null) void signIn(state.key);
  else {
    if (endedBy !== null) {
      setText("signin-error", endedBy);
      show("signin-error", true);
    }
    show("signin", true);
    $<HTMLInputElement>("key").focus(); // autofocus does not apply to a form shown after load
  }
}

start();

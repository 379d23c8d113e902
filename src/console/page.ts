// The console's one HTML page. Everything it shows is filled in by its script (src/console/app.ts) from the HTTP
// API, with the API key the operator signs in with; the page itself holds no data, only where the API lives
// (`base`: the plugin's prefix) and whether it is enabled at all.

const escape = (text: string): string => text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);

export function consolePage(base: string, apiEnabled: boolean): string {
  const b = escape(base);
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="color-scheme" content="light dark">
<title>switchboard console</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="${b}/console/app.css">
<script type="module" src="${b}/console/app.js"></script>
</head>
<body data-base="${b}" data-api="${apiEnabled ? "on" : "off"}" data-polls="0">
<header>
  <h1>switchboard</h1>
  <nav id="nav" hidden aria-label="views">
    <button type="button" data-view="nodes">Nodes</button>
    <button type="button" data-view="topics">Topics</button>
    <button type="button" data-view="publish">Publish</button>
    <button type="button" id="signout">Sign out</button>
  </nav>
</header>
<main>
  <section id="api-off" hidden>
    <h2>The HTTP API is off</h2>
    <p>The console reads the HTTP API, which this server serves only with an API key. Start it with
    <code>API_KEY=&lt;16 or more characters&gt;</code> (or pass <code>config: { API_KEY }</code> to the plugin), then
    reload this page and sign in with that key.</p>
  </section>
  <form id="signin" hidden>
    <h2>Sign in</h2>
    <label for="key">API key</label>
    <input id="key" name="key" type="password" autocomplete="current-password" required autofocus>
    <button id="signin-submit" type="submit">Sign in</button>
    <p id="signin-error" role="alert" hidden></p>
    <p class="note">The key stays in this tab (sessionStorage) and is sent as a bearer header, never in a URL.</p>
  </form>
  <div id="app" hidden>
    <p id="status" role="status"></p>
    <section id="view-nodes" hidden>
      <h2>Nodes <span class="muted">(<span id="total-connections">0</span> connections)</span></h2>
      <table id="nodes">
        <thead><tr><th>node</th><th>state</th><th>address</th><th>uptime</th><th class="num">connections</th><th class="num">topics</th><th class="num">msgs in/s</th><th class="num">msgs out/s</th></tr></thead>
        <tbody></tbody>
      </table>
      <div class="charts">
        <figure><figcaption>Connections</figcaption><div id="chart-connections" class="chart"></div></figure>
        <figure><figcaption>Messages per second</figcaption><div id="chart-messages" class="chart"></div></figure>
      </div>
    </section>
    <section id="view-topics" hidden>
      <h2>Topics <span class="muted" id="topics-count"></span></h2>
      <label for="topic-filter">Prefix</label>
      <input id="topic-filter" type="search" placeholder="chat.room." autocomplete="off" spellcheck="false">
      <table id="topics">
        <thead><tr>
          <th><button type="button" data-sort="topic">topic</button></th>
          <th class="num"><button type="button" data-sort="local">local</button></th>
          <th class="num"><button type="button" data-sort="cluster">cluster</button></th>
          <th></th>
        </tr></thead>
        <tbody></tbody>
      </table>
      <div class="pager"><button type="button" id="topics-prev">Previous</button> <span id="topics-page"></span> <button type="button" id="topics-next">Next</button></div>
    </section>
    <section id="view-topic" hidden>
      <h2>Topic <code id="topic-name"></code> <button type="button" id="topic-publish">Publish to it</button></h2>
      <h3>Presence <span class="muted">(<span id="presence-count">0</span> clients)</span></h3>
      <table id="presence">
        <thead><tr><th>connection</th><th>user</th><th>info</th><th></th></tr></thead>
        <tbody></tbody>
      </table>
      <div class="pager"><button type="button" id="presence-prev">Previous</button> <span id="presence-page"></span> <button type="button" id="presence-next">Next</button></div>
      <h3>Recent history</h3>
      <p id="history-note" class="muted" hidden></p>
      <ol id="history"></ol>
    </section>
    <section id="view-publish" hidden>
      <h2>Publish</h2>
      <form id="publish">
        <label for="publish-topic">Topic</label>
        <input id="publish-topic" required spellcheck="false" autocomplete="off">
        <label for="publish-data">Data (JSON)</label>
        <textarea id="publish-data" rows="8" spellcheck="false">{"text": "hello"}</textarea>
        <button id="publish-submit" type="submit">Publish</button>
      </form>
      <p id="publish-result" role="status" hidden></p>
      <p id="publish-error" role="alert" hidden></p>
    </section>
  </div>
</main>
</body>
</html>`;
}

// The gateway's status page. The admin key lives in sessionStorage (this tab only) and is only
// ever sent in an Authorization header; every value from the gateway is shown with textContent.
"use strict";

const KEY_NAME = "mcp-gateway.admin-key";
const REFRESH_MS = 5000;
const MCP_URL = document.body.dataset.mcpUrl || `${location.origin}/mcp`;
const $ = (id) => document.getElementById(id);

let timer = null;
let sandboxIds = [];
const minted = new Map(); // sandbox id -> token minted in this page

function adminKey() {
  return sessionStorage.getItem(KEY_NAME);
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(path, {
    ...options,
    cache: "no-store",
    credentials: "omit",
    headers: { ...(options.headers || {}), Authorization: `Bearer ${adminKey()}` },
  });
  if (response.status === 401) throw new Unauthorized("the admin key was refused");
  return response;
}

function el(tag, text, className) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  if (className) node.className = className;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  for (const cell of cells) tr.append(cell);
  return tr;
}

function formatUptime(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  const s = Math.floor(seconds);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

function formatMs(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(1);
}

function formatTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toLocaleTimeString();
}

// -- sign in / out ----------------------------------------------------------------------------

function showLogin(message) {
  stopTimer();
  $("dashboard").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("summary").textContent = "";
  const error = $("login-error");
  error.hidden = !message;
  error.textContent = message || "";
  $("admin-key").focus();
}

function signOut(message) {
  sessionStorage.removeItem(KEY_NAME);
  minted.clear();
  showLogin(message);
}

async function signIn(event) {
  event.preventDefault();
  const input = $("admin-key");
  const key = input.value.trim();
  input.value = "";
  if (!key) return;
  sessionStorage.setItem(KEY_NAME, key);
  await showDashboard();
}

async function showDashboard() {
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("sign-out").hidden = false;
  const ok = await refresh();
  if (ok) startTimer();
}

function startTimer() {
  stopTimer();
  if ($("auto-refresh").checked) timer = setInterval(refresh, REFRESH_MS);
}

function stopTimer() {
  if (timer !== null) clearInterval(timer);
  timer = null;
}

// -- data ---------------------------------------------------------------------------------------

async function refresh() {
  try {
    await Promise.all([loadStatus(), loadCalls()]);
    $("load-error").hidden = true;
    $("updated").textContent = new Date().toLocaleTimeString();
    return true;
  } catch (error) {
    if (error instanceof Unauthorized) {
      signOut("That admin key was refused.");
      return false;
    }
    $("load-error").hidden = false;
    $("load-error").textContent = `Could not reach the gateway: ${error.message}`;
    return false;
  }
}

async function loadStatus() {
  const response = await api("/admin/status");
  const box = $("sandboxes");
  if (!response.ok) {
    box.replaceChildren(el("p", `/admin/status answered ${response.status}`, "error"));
    return;
  }
  const data = await response.json();
  const sandboxes = data.sandboxes || [];
  sandboxIds = sandboxes.map((s) => s.id);
  const servers = sandboxes.reduce((n, s) => n + (s.servers || []).length, 0);
  const running = sandboxes.reduce((n, s) => n + (s.servers || []).filter((x) => x.state === "running").length, 0);
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  $("summary").textContent =
    `${plural(sandboxes.length, "sandbox", "sandboxes")}, ${running} of ${plural(servers, "server", "servers")} running`;
  if (sandboxes.length === 0) {
    box.replaceChildren(el("p", "No live sandboxes. A sandbox shows up once a client uses it.", "muted"));
  } else {
    box.replaceChildren(...sandboxes.map(renderSandbox));
  }
  updateSelect($("connect-sandbox"), sandboxIds, false);
  updateSelect($("calls-sandbox"), sandboxIds, true);
  renderConnectLine();
}

function renderSandbox(sandbox) {
  const card = el("div", null, "sandbox");
  card.dataset.sandbox = sandbox.id;
  card.append(el("h3", `Sandbox ${sandbox.id}`));
  const servers = sandbox.servers || [];
  if (servers.length === 0) {
    card.append(el("p", "No servers.", "muted"));
    return card;
  }
  const table = el("table");
  const head = row(["server", "state", "pid", "uptime", "restarts", "calls", "last error"].map((h) => el("th", h)));
  table.append(el("thead"));
  table.tHead.append(head);
  const body = el("tbody");
  for (const server of servers) {
    const state = el("td");
    state.append(el("span", server.state, `state state-${server.state}`));
    const tr = row([
      el("td", server.name, "mono"),
      state,
      el("td", server.pid ?? "–", "num"),
      el("td", formatUptime(server.uptime_s), "num"),
      el("td", server.restarts ?? 0, "num"),
      el("td", server.calls ?? 0, "num"),
      el("td", server.last_error || "", "err"),
    ]);
    tr.dataset.server = server.name;
    body.append(tr);
  }
  table.append(body);
  card.append(table);
  return card;
}

function updateSelect(select, ids, withAll) {
  const current = select.value;
  const options = withAll ? [new Option("all", "")] : [];
  for (const id of ids) options.push(new Option(id, id));
  select.replaceChildren(...options);
  if ([...select.options].some((o) => o.value === current)) select.value = current;
}

async function loadCalls() {
  const params = new URLSearchParams({ limit: "50" });
  const sandbox = $("calls-sandbox").value;
  if (sandbox) params.set("sandbox", sandbox);
  const response = await api(`/admin/audit?${params}`);
  if (!response.ok) throw new Error(`/admin/audit answered ${response.status}`);
  const entries = (await response.json()).entries || [];
  const rows = entries
    .slice()
    .reverse()
    .map((entry) => {
      const outcome = el("td");
      outcome.append(el("span", entry.outcome, `outcome-${entry.outcome}`));
      return row([
        el("td", formatTime(entry.time)),
        el("td", entry.sandbox),
        el("td", entry.tool, "mono"),
        outcome,
        el("td", formatMs(entry.duration_ms), "num"),
        el("td", formatMs(entry.upstream_ms), "num"),
        el("td", (entry.args || []).join(", "), "mono"),
        el("td", entry.result_bytes ?? 0, "num"),
        el("td", entry.error || "", "err"),
      ]);
    });
  $("calls").tBodies[0].replaceChildren(...rows);
  $("calls-empty").hidden = rows.length > 0;
}

// -- the claude mcp add line -------------------------------------------------------------------

function clientName(sandbox) {
  return sandbox === "default" ? "mcp-gateway" : `mcp-gateway-${sandbox}`;
}

function renderConnectLine() {
  const sandbox = $("connect-sandbox").value;
  const line = $("connect-line");
  if (!sandbox) {
    line.textContent = "";
    return;
  }
  const token = minted.get(sandbox) || "<token>";
  line.textContent = `claude mcp add --transport http ${clientName(sandbox)} ${MCP_URL} --header "Authorization: Bearer ${token}"`;
  if (!minted.has(sandbox)) {
    $("connect-note").textContent =
      `Replace <token> with a token of this sandbox: press "Mint a token", or run: mcp-gateway token --sandbox ${sandbox}`;
  }
}

async function mint() {
  const sandbox = $("connect-sandbox").value;
  if (!sandbox) return;
  const note = $("connect-note");
  try {
    const response = await api(`/admin/sandboxes/${encodeURIComponent(sandbox)}/token`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: "{}",
    });
    if (response.ok) {
      const data = await response.json();
      minted.set(sandbox, data.mcp_token);
      renderConnectLine();
      note.textContent = "A new token for this sandbox. It is shown here once: copy it now.";
    } else if (response.status === 404 || response.status === 405) {
      note.textContent = `This gateway does not mint tokens here; run: mcp-gateway token --sandbox ${sandbox}`;
    } else {
      const data = await response.json().catch(() => ({}));
      note.textContent = `Could not mint a token: ${data.message || response.status}`;
    }
  } catch (error) {
    if (error instanceof Unauthorized) signOut("That admin key was refused.");
    else note.textContent = `Could not mint a token: ${error.message}`;
  }
}

async function copyLine() {
  const text = $("connect-line").textContent;
  try {
    await navigator.clipboard.writeText(text);
    $("connect-note").textContent = "Copied.";
  } catch {
    const range = document.createRange();
    range.selectNodeContents($("connect-line"));
    getSelection().removeAllRanges();
    getSelection().addRange(range);
    $("connect-note").textContent = "Selected: press Ctrl+C (or Cmd+C) to copy.";
  }
}

// -- wiring -------------------------------------------------------------------------------------

$("login-form").addEventListener("submit", signIn);
$("sign-out").addEventListener("click", () => signOut(""));
$("refresh").addEventListener("click", refresh);
$("auto-refresh").addEventListener("change", startTimer);
$("connect-sandbox").addEventListener("change", () => {
  $("connect-note").textContent = "";
  renderConnectLine();
});
$("calls-sandbox").addEventListener("change", () => refresh());
$("mint").addEventListener("click", mint);
$("copy").addEventListener("click", copyLine);

if (adminKey()) showDashboard();
else showLogin("");

// Paymesh edge operator dashboard: polls /dashboard/state every second and renders it.
// Plain DOM, no libraries; every piece of data goes through textContent / setAttribute.
"use strict";

(() => {
  const POLL_MS = 1000;
  const POLL_TIMEOUT_MS = 5000;
  const HISTORY = 60;
  const TOKEN_KEY = "paymesh-admin-token";
  const ACTIONS = [
    ["open", "Open", "Force open: refuse every call (fail fast)"],
    ["closed", "Close", "Force closed: let every call through"],
    ["normal", "Normal", "Back to normal: open and close on the failure rate"],
  ];
  const STATE_CLASS = {
    healthy: "ok", closed: "ok",
    half_open: "warn", ejected: "warn",
    open: "bad", forced_open: "bad", unhealthy: "bad", unreachable: "bad",
    forced_closed: "muted", disabled: "muted",
  };

  const $ = (id) => document.getElementById(id);
  const intFmt = new Intl.NumberFormat("en-US");
  const isNum = (v) => typeof v === "number" && Number.isFinite(v);
  const num = (v) => (isNum(v) ? intFmt.format(v) : "–");
  const fixed = (v, d) => (isNum(v) ? v.toFixed(d) : "–");
  const pct = (v) => (isNum(v) && v >= 0 ? v.toFixed(1) + "%" : "–");
  const opt = (v) => (v === null || v === undefined || v === "" ? "–" : String(v));
  const stateClass = (s) => STATE_CLASS[s] || "";

  let prev = null; // the previous successful sample, for rates
  const hist = { rate: [], err: [] };
  let timer = 0;
  let polling = false;
  let pollAgain = false;
  let adminAuth = false;

  // ---- formatting -------------------------------------------------------------------------

  function fmtUptime(s) {
    if (!isNum(s) || s < 0) return "–";
    s = Math.floor(s);
    const p = (n) => String(n).padStart(2, "0");
    const d = Math.floor(s / 86400);
    const hms = `${p(Math.floor((s % 86400) / 3600))}:${p(Math.floor((s % 3600) / 60))}:${p(s % 60)}`;
    return d ? `${d}d ${hms}` : hms;
  }

  function fmtTime(when) {
    const d = when instanceof Date ? when : new Date(when);
    if (Number.isNaN(d.getTime())) return opt(when);
    const t = d.toLocaleTimeString("en-GB", { hour12: false }) + "." + String(d.getMilliseconds()).padStart(3, "0");
    if (d.toDateString() === new Date().toDateString()) return t;
    const p = (n) => String(n).padStart(2, "0");
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${t}`;
  }

  function setText(id, text, cls) {
    const el = $(id);
    if (el.textContent !== text) el.textContent = text;
    if (cls !== undefined && el.className !== cls) el.className = cls;
  }

  // ---- keyed tbody rendering: rows are updated in place, never the whole table -------------

  function setCell(td, c) {
    if (c === null || typeof c !== "object") c = { t: c };
    if (c.actions) {
      if (!td.querySelector("button")) {
        for (const [action, label, title] of ACTIONS) {
          const b = document.createElement("button");
          b.type = "button";
          b.dataset.action = action;
          b.textContent = label;
          b.title = title;
          td.append(b);
        }
      }
      if (td.className !== "actions") td.className = "actions";
      return;
    }
    const t = opt(c.t);
    if (td.textContent !== t) td.textContent = t;
    const cls = c.c || "";
    if (td.className !== cls) td.className = cls;
    const span = c.span || 1;
    if (td.colSpan !== span) td.colSpan = span;
    const title = c.title || "";
    if (td.title !== title) td.title = title;
  }

  // rows: [{key, cls, attr: {name: value}, cells: [spec]}]
  function sync(tbodyId, rows, emptyText) {
    const tbody = $(tbodyId);
    if (!rows.length) {
      const cols = tbody.parentElement.tHead.rows[0].cells.length;
      rows = [{ key: "__empty", cls: "empty", cells: [{ t: emptyText, span: cols }] }];
    }
    const old = new Map();
    for (const tr of tbody.rows) old.set(tr.dataset.key, tr);
    const seen = new Map();
    rows.forEach((r, i) => {
      const n = seen.get(r.key) || 0; // duplicate keys get a suffix, so no row is lost
      seen.set(r.key, n + 1);
      const key = n ? `${r.key}\u001f${n}` : String(r.key);
      let tr = old.get(key);
      old.delete(key);
      if (tr && tr.cells.length !== r.cells.length) {
        tr.remove();
        tr = undefined;
      }
      if (!tr) {
        tr = document.createElement("tr");
        tr.dataset.key = key;
        r.cells.forEach(() => tr.insertCell());
      }
      const cls = r.cls || "";
      if (tr.className !== cls) tr.className = cls;
      for (const [k, v] of Object.entries(r.attr || {})) {
        if (tr.getAttribute(k) !== v) tr.setAttribute(k, v);
      }
      r.cells.forEach((c, j) => setCell(tr.cells[j], c));
      const at = tbody.rows[i];
      if (at !== tr) tbody.insertBefore(tr, at || null);
    });
    for (const tr of old.values()) tr.remove();
  }

  // ---- rates ---------------------------------------------------------------------------------

  function delta(a, b, dt) {
    if (!a || !b) return null;
    const dr = b.requests - a.requests;
    const de = b.errors - a.errors;
    if (!(dr >= 0 && de >= 0)) return null; // counters went backwards: restarted, no rate
    return { rate: dr / dt, err: dr > 0 ? Math.min(100, (de * 100) / dr) : null };
  }

  function computeRates(totals) {
    const now = performance.now();
    const routes = new Map((totals.by_route || []).map((r) => [r.route, r]));
    const cur = { t: now, requests: totals.requests, errors: totals.errors, routes };
    const out = { total: null, routes: new Map() };
    const dt = prev ? (now - prev.t) / 1000 : 0;
    if (prev && dt > 0) {
      out.total = delta(prev, cur, dt);
      for (const [name, r] of routes) out.routes.set(name, delta(prev.routes.get(name), r, dt));
    }
    prev = cur;
    return out;
  }

  function spark(id, data, minMax, unit) {
    const svg = $(id);
    const W = 120, H = 28;
    const max = Math.max(minMax, ...data);
    const step = W / (HISTORY - 1);
    const off = HISTORY - data.length;
    const pts = data.map((v, i) => `${((off + i) * step).toFixed(1)},${(H - 1 - (v / max) * (H - 2)).toFixed(1)}`);
    svg.querySelector("polyline").setAttribute("points", pts.join(" "));
    const label = `last ${data.length} s, max ${max.toFixed(1)} ${unit}`;
    svg.querySelector("title").textContent = label;
    svg.setAttribute("aria-label", label);
  }

  function push(arr, v) {
    arr.push(v);
    if (arr.length > HISTORY) arr.shift();
  }

  // ---- sections ------------------------------------------------------------------------------

  function renderClusters(clusters) {
    const rows = [];
    for (const c of clusters) {
      const summary = `${num(c.shards)} shard(s) · in flight ${num(c.in_flight)}/${num(c.max_requests)}` +
        ` · pending ${num(c.pending)}/${num(c.max_pending)} · overflows ${num(c.overflows)}`;
      rows.push({
        key: "c\u001f" + c.name, cls: "group", attr: { "data-cluster": String(c.name) },
        cells: [{ t: c.name, span: 2, c: "cluster-name" }, { t: summary, span: 5, c: c.overflows > 0 ? "warn" : "" }],
      });
      for (const e of c.endpoints || []) {
        const health = !e.healthy ? "unhealthy" : e.ejected ? "ejected" : "healthy";
        rows.push({
          key: "e\u001f" + c.name + "\u001f" + e.name, attr: { "data-endpoint": String(e.name) },
          cells: [e.name, opt(e.shard), e.address, { t: health, c: "health " + stateClass(health) },
            { t: fixed(e.ewma_ms, 3), c: "n" }, { t: num(e.in_flight), c: "n" }, { t: num(e.ejections), c: "n" }],
        });
      }
    }
    sync("clusters", rows, "no clusters");
  }

  function renderBreakers(breakers) {
    sync("breakers", breakers.map((b) => ({
      key: b.name, attr: { "data-breaker": String(b.name) },
      cells: [b.name, opt(b.shard), { t: String(b.state), c: "breaker-state " + stateClass(b.state) },
        { t: pct(b.failure_rate), c: "n" }, { t: pct(b.slow_call_rate), c: "n" },
        { t: num(b.buffered_calls), c: "n" }, { t: num(b.failed_calls), c: "n" },
        { t: num(b.slow_calls), c: "n" }, { t: num(b.not_permitted_calls), c: b.not_permitted_calls > 0 ? "n warn" : "n" },
        { actions: true }],
    })), "no breakers configured");
  }

  function renderRateLimits(limits) {
    sync("rate-limits", limits.map((l) => {
      const rb = l.route_bucket, pk = l.per_key;
      const key = pk ? `${opt(pk.header)}${pk.by_merchant ? " + merchant" : ""}` : "none";
      return {
        key: l.route,
        cells: [l.route, { t: rb ? num(rb.rate) : "–", c: "n" }, { t: rb ? num(rb.burst) : "–", c: "n" },
          { t: pk ? num(pk.rate) : "–", c: "n" }, { t: pk ? num(pk.burst) : "–", c: "n" }, key,
          { t: num(l.refused || 0), c: "n" }],
      };
    }), "no rate limits");
  }

  function unreachable(x, span) {
    return { t: "unreachable" + (x.error ? ": " + x.error : ""), span, c: "bad" };
  }

  function renderPipeline(relays, workers) {
    sync("relays", relays.map((r) => {
      const attr = { "data-relay": String(r.name) };
      if (!r.ok) return { key: r.name, cls: "unreachable", attr, cells: [r.name, r.address, unreachable(r, 5)] };
      const b = r.breaker;
      const bText = b ? `${b.name}: ${b.state}` + (isNum(b.failure_rate) && b.failure_rate >= 0 ? ` (${pct(b.failure_rate)})` : "") : "–";
      return {
        key: r.name, attr,
        cells: [r.name, r.address, opt(r.shard), { t: num(r.backlog), c: "n" }, { t: num(r.published), c: "n" },
          { t: num(r.dead), c: r.dead > 0 ? "n warn" : "n" }, { t: bText, c: b ? stateClass(b.state) : "" }],
      };
    }), "no relays");
    sync("workers", workers.map((w) => {
      const attr = { "data-worker": String(w.name) };
      if (!w.ok) return { key: w.name, cls: "unreachable", attr, cells: [w.name, w.address, unreachable(w, 6)] };
      return {
        key: w.name, attr,
        cells: [w.name, w.address, opt(w.kind), { t: num(w.lag), c: "n" }, { t: num(w.applied), c: "n" },
          { t: num(w.duplicates), c: "n" }, { t: num(w.dead_lettered), c: w.dead_lettered > 0 ? "n warn" : "n" },
          { t: num(w.transient_failures), c: "n" }],
      };
    }), "no workers");
  }

  function renderRoutes(byRoute, rates) {
    sync("routes", byRoute.map((r) => {
      const d = rates.routes.get(r.route);
      return {
        key: r.route, attr: { "data-route": String(r.route) },
        cells: [r.route, { t: num(r.requests), c: "n" }, { t: num(r.errors), c: "n" },
          { t: d ? d.rate.toFixed(1) : "–", c: "n" },
          { t: d && d.err !== null ? d.err.toFixed(2) + "%" : "–", c: d && d.err > 0 ? "n bad" : "n" }],
      };
    }), "no traffic yet");
  }

  function renderFailures(failures) {
    sync("failures", failures.map((f, i) => ({
      key: "f" + i,
      cells: [{ t: fmtTime(f.at), title: opt(f.at) }, f.protocol, f.route, opt(f.shard), opt(f.instance),
        { t: f.code, c: "bad" }, { t: f.message, c: "msg" }],
    })), "no failures");
  }

  function render(s) {
    const edge = s.edge || {};
    const totals = s.totals || {};
    adminAuth = edge.admin_auth === true;
    $("token-box").hidden = !adminAuth;
    setText("listen", opt(edge.listen));
    setText("uptime", fmtUptime(edge.uptime_s));
    setText("generation", opt(edge.generation));
    setText("totals", `${num(totals.requests)} req · ${num(totals.errors)} err`);

    const rates = computeRates(totals);
    const t = rates.total;
    setText("req-rate", t ? t.rate.toFixed(1) : "–");
    const err = t ? t.err : null;
    setText("err-rate", err !== null ? err.toFixed(2) + "%" : "–", "value " + (err > 5 ? "bad" : err > 0 ? "warn" : ""));
    if (t) {
      push(hist.rate, t.rate);
      push(hist.err, err || 0);
      spark("spark-rate", hist.rate, 1, "calls/s");
      spark("spark-err", hist.err, 1, "%");
    }

    renderClusters(s.clusters || []);
    renderBreakers(s.breakers || []);
    renderRateLimits(s.rate_limits || []);
    renderPipeline(s.relays || [], s.workers || []);
    renderRoutes(totals.by_route || [], rates);
    renderFailures(s.failures || []);

    const now = new Date();
    const last = $("last-update");
    last.textContent = fmtTime(now);
    last.setAttribute("datetime", now.toISOString());
    document.body.dataset.ready = "1";
  }

  // ---- polling -------------------------------------------------------------------------------

  function token() {
    return $("admin-token").value.trim();
  }

  function authHeaders() {
    const tok = token();
    return tok ? { Authorization: `Bearer ${tok}` } : {};
  }

  function setConnection(err) {
    const banner = $("conn-banner");
    banner.hidden = !err;
    banner.title = err ? String(err.message || err) : "";
    document.body.classList.toggle("stale", !!err);
  }

  async function poll() {
    if (polling) {
      pollAgain = true;
      return;
    }
    polling = true;
    clearTimeout(timer);
    const ctl = new AbortController();
    const abort = setTimeout(() => ctl.abort(), POLL_TIMEOUT_MS);
    try {
      let data;
      try {
        const res = await fetch("/dashboard/state", { cache: "no-store", signal: ctl.signal, headers: authHeaders() });
        if (!res.ok) {
          if (res.status === 401 || res.status === 403) $("token-box").hidden = false;
          throw new Error(`HTTP ${res.status}`);
        }
        data = await res.json();
      } catch (e) {
        setConnection(e);
        return;
      }
      setConnection(null);
      try {
        render(data);
      } catch (e) {
        console.error("dashboard render failed", e);
      }
    } finally {
      clearTimeout(abort);
      polling = false;
      if (pollAgain) {
        pollAgain = false;
        poll();
      } else {
        timer = setTimeout(poll, POLL_MS);
      }
    }
  }

  // ---- breaker actions -----------------------------------------------------------------------

  function setStatus(text, cls) {
    const el = $("action-status");
    el.textContent = text;
    el.className = "action-status " + (cls || "");
  }

  async function forceBreaker(name, action) {
    const question = action === "normal"
      ? `Return breaker ${name} to normal?`
      : `Force breaker ${name} ${action}?`;
    if (!window.confirm(question)) return;
    setStatus(`breaker ${name}: sending ${action}…`, "");
    const headers = adminAuth ? authHeaders() : {};
    try {
      const res = await fetch(`/breakers/${encodeURIComponent(name)}?state=${action}`,
        { method: "POST", cache: "no-store", headers });
      const body = await res.json().catch(() => null);
      if (res.ok) {
        setStatus(`breaker ${name}: ${body && body.state !== undefined ? body.state : "?"}`, "ok");
      } else {
        const msg = body && body.message ? ` — ${body.message}` : "";
        setStatus(`breaker ${name}: failed, HTTP ${res.status}${msg}`, "bad");
      }
    } catch (e) {
      setStatus(`breaker ${name}: request failed — ${e.message || e}`, "bad");
    }
    poll();
  }

  // ---- start ---------------------------------------------------------------------------------

  function start() {
    const input = $("admin-token");
    try {
      input.value = sessionStorage.getItem(TOKEN_KEY) || "";
    } catch (_) { /* storage disabled */ }
    input.addEventListener("input", () => {
      try {
        if (input.value) sessionStorage.setItem(TOKEN_KEY, input.value);
        else sessionStorage.removeItem(TOKEN_KEY);
      } catch (_) { /* storage disabled */ }
    });
    $("breakers").addEventListener("click", (ev) => {
      const button = ev.target.closest("button[data-action]");
      const row = button && button.closest("tr[data-breaker]");
      if (row) forceBreaker(row.dataset.breaker, button.dataset.action);
    });
    poll();
  }

  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start);
  else start();
})();

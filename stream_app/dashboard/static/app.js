/* CRM KPI dashboard: tiles per window, trend charts, alerts, live over server-sent events
 * (the cohort panel is cohorts.js; this file feeds it its segments and "cohort" events).
 *
 * Everything comes from the same origin (api/v1/...); nothing is loaded from elsewhere.
 * Data from the server is only ever put into the page as text (textContent), never as HTML.
 * Query parameters of the page: ?stale=SECONDS overrides when the view turns "stale".
 */
"use strict";

(() => {
  const API = "api/v1/";
  const NULL = "\u2014";
  const PING_TIMEOUT_MS = 15000;
  const POLL_MS = 30000;
  const SEGMENTS_POLL_MS = 30000;
  const CHART_LIMIT = 288;

  const CHARTS = {
    segment: [
      { id: "customers", title: "Customers", series: [["active_end", 0], ["new_customers", 1], ["churned_customers", 1]] },
      { id: "revenue", title: "Revenue and orders", series: [["revenue", 0], ["orders", 1]] },
      { id: "rates", title: "Churn, conversion and repeat purchases", series: [["churn_rate", 0], ["conversion_rate", 1], ["repeat_purchase_rate", 1]] },
      { id: "satisfaction", title: "NPS and CSAT", series: [["nps", 0], ["csat", 0]] },
    ],
    campaign: [
      { id: "clicks", title: "Clicks", series: [["clicks", 0], ["converted_clicks", 0]] },
      { id: "money", title: "Spend and attributed revenue", series: [["spend", 0], ["attributed_revenue", 0]] },
      { id: "efficiency", title: "Conversion rate and ROAS", series: [["conversion_rate", 0], ["roas", 1]] },
      { id: "acquisition", title: "New customers and CAC", series: [["new_customers", 0], ["cac", 1]] },
    ],
  };

  const state = {
    meta: null,
    kpis: new Map(),
    windows: [],
    segment: "all",
    segments: [],
    snapshots: {},            // window -> {current, previous}
    noData: false,
    chartWindow: null,
    charts: [],
    chartData: null,          // {xs: [], cols: {kpi: []}}
    alerts: [],
    alertKeys: new Set(),
    source: null,
    connected: false,
    everConnected: false,
    lastServerContact: 0,
    serverOffsetMs: 0,
    redis: "connecting",
    staleAfterMs: 60000,
    generation: 0,
    profile: null,            // the benchmark profile (api/v1/benchmarks), null without one
    benchWindow: null,        // the window the strengths and weaknesses panel reads
    benchTimer: null,
  };

  const cohorts = window.CrmCohorts; // cohorts.js: the cohort retention panel
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  };

  // ---------------------------------------------------------------- formatting

  let currencySymbol = "$";

  function kindOf(name) {
    const kpi = state.kpis.get(name);
    return kpi ? kpi.kind : "count";
  }

  function groupDigits(text) {
    const negative = text.startsWith("-");
    const [whole, frac] = (negative ? text.slice(1) : text).split(".");
    const grouped = whole.replace(/\B(?=(\d{3})+(?!\d))/g, ",");
    return (negative ? "-" : "") + grouped + (frac !== undefined ? "." + frac : "");
  }

  function formatValue(name, value) {
    if (value === null || value === undefined) return NULL;
    switch (kindOf(name)) {
      case "money": return currencySymbol + groupDigits(String(value));
      case "percent": return (value * 100).toFixed(2) + "%";
      case "score": return Number(value).toFixed(1);
      case "ratio": return Number(value).toFixed(2);
      default: return groupDigits(String(value));
    }
  }

  function asNumber(value) {
    if (value === null || value === undefined) return null;
    const n = typeof value === "number" ? value : Number(value);
    return Number.isFinite(n) ? n : null;
  }

  function formatDelta(name, current, previous) {
    if (!previous || !(name in previous) || !current || !(name in current)) return { text: "", cls: "" };
    const a = asNumber(previous[name]);
    const b = asNumber(current[name]);
    if (a === null || b === null) return { text: "", cls: "" };
    const diff = b - a;
    if (Math.abs(diff) < 1e-12) return { text: "= no change", cls: "flat" };
    const kpi = state.kpis.get(name);
    const up = diff > 0;
    const good = kpi && kpi.worse_when_up ? !up : up;
    const arrow = up ? "\u25B2" : "\u25BC";
    const sign = up ? "+" : "\u2212";
    const abs = Math.abs(diff);
    let text;
    switch (kindOf(name)) {
      case "percent": text = `${sign}${(abs * 100).toFixed(abs < 0.0001 ? 3 : 2)} pp`; break;
      case "score": text = `${sign}${abs.toFixed(1)}`; break;
      case "ratio": text = `${sign}${abs.toFixed(2)}`; break;
      case "money": text = `${sign}${currencySymbol}${groupDigits(abs.toFixed(abs >= 1000 ? 0 : 2))}`; break;
      default: text = `${sign}${groupDigits(String(Math.round(abs)))}`;
    }
    if ((kindOf(name) === "money" || kindOf(name) === "count") && a !== 0) {
      text += ` (${sign}${(Math.abs(diff / a) * 100).toFixed(1)}%)`;
    }
    return { text: `${arrow} ${text}`, cls: good ? "good" : "bad" };
  }

  function compact(name, value) {
    if (value === null || value === undefined) return "";
    const kind = kindOf(name);
    if (kind === "percent") return (value * 100).toFixed(Math.abs(value) < 0.1 ? 2 : 1) + "%";
    if (kind === "score") return value.toFixed(0);
    if (kind === "ratio") return value.toFixed(1);
    const abs = Math.abs(value);
    const prefix = kind === "money" ? currencySymbol : "";
    if (abs >= 1e9) return prefix + (value / 1e9).toFixed(1) + "B";
    if (abs >= 1e6) return prefix + (value / 1e6).toFixed(1) + "M";
    if (abs >= 1e4) return prefix + (value / 1e3).toFixed(0) + "k";
    if (abs >= 1e3) return prefix + (value / 1e3).toFixed(1) + "k";
    if (Number.isInteger(value)) return prefix + String(value);
    return prefix + value.toFixed(abs < 10 ? 2 : abs < 100 ? 1 : 0);
  }

  const pad = (n) => String(n).padStart(2, "0");
  function parseTime(text) {
    const t = Date.parse(text);
    return Number.isFinite(t) ? t : null;
  }
  function dayTime(ms) {
    const d = new Date(ms);
    return `${pad(d.getUTCMonth() + 1)}-${pad(d.getUTCDate())} ${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
  }
  function clock(ms) {
    const d = new Date(ms);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function bounds(snapshot) {
    const start = parseTime(snapshot.window_start);
    const end = parseTime(snapshot.window_end);
    if (start === null || end === null) return "";
    const a = dayTime(start);
    const b = dayTime(end);
    return a.slice(0, 5) === b.slice(0, 5) ? `${a}\u2013${b.slice(6)}` : `${a} \u2013 ${b}`;
  }
  function age(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s}s`;
    if (s < 3600) return s % 60 ? `${Math.floor(s / 60)}m ${pad(s % 60)}s` : `${s / 60}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h ${pad(Math.floor((s % 3600) / 60))}m`;
    return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`;
  }
  function stepText(seconds) {
    for (const [unit, size] of [["d", 86400], ["h", 3600], ["m", 60]]) {
      if (seconds % size === 0) return `${seconds / size}${unit}`;
    }
    return `${seconds}s`;
  }
  const serverNow = () => Date.now() + state.serverOffsetMs;

  // ---------------------------------------------------------------- HTTP

  class HttpError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  async function getJSON(path) {
    const response = await fetch(API + path, { headers: { Accept: "application/json" }, credentials: "same-origin", cache: "no-store" });
    if (!response.ok) {
      let message = response.statusText;
      try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
      throw new HttpError(response.status, message);
    }
    return response.json();
  }

  function notice(text) {
    const box = $("notice");
    box.hidden = !text;
    box.textContent = text || "";
  }

  function onFetchError(error, what) {
    if (error instanceof HttpError && error.status === 503) {
      state.redis = "down";
      renderStatus();
      return;
    }
    if (error instanceof HttpError && error.status === 401) {
      notice("This dashboard needs the API token: reload the page and sign in (any user name, the token as password).");
      return;
    }
    console.warn(`loading ${what} failed:`, error);
  }

  // ---------------------------------------------------------------- segments

  function segmentKind(segment) {
    return segment.startsWith("campaign:") ? "campaign" : "segment";
  }

  function segmentLabel(segment) {
    if (segment === "all") return "All customers";
    const [kind, ...rest] = segment.split(":");
    const name = rest.join(":");
    if (kind === "lifecycle") return `Stage ${name.replace("_", " ")}`;
    return kind === "region" ? `Region ${name}` : kind === "campaign" ? `Campaign ${name}` : segment;
  }

  function renderSegments() {
    const select = $("segment");
    const known = new Set(state.segments);
    known.add(state.segment);
    const regions = [...known].filter((s) => s.startsWith("region:")).sort();
    const campaigns = [...known].filter((s) => s.startsWith("campaign:")).sort();
    const stages = [...known].filter((s) => s.startsWith("lifecycle:")).sort();
    const wanted = ["all", ...regions, ...stages, ...campaigns].join("\n");
    fillSegments(select, wanted, [["Regions", regions], ["Lifecycle stages", stages], ["Campaigns", campaigns]]);
    select.value = state.segment;
  }

  /* A segment selector's options: "all", then one group per kind; rebuilt only when
   * ``wanted`` (the options as text) changed. The cohort panel uses it too. */
  function fillSegments(select, wanted, groups) {
    if (select.dataset.options === wanted) return;
    select.dataset.options = wanted;
    select.replaceChildren(new Option(segmentLabel("all"), "all"));
    for (const [label, list] of groups) {
      if (!list.length) continue;
      const group = document.createElement("optgroup");
      group.label = label;
      for (const segment of list) group.append(new Option(segmentLabel(segment), segment));
      select.append(group);
    }
  }

  async function loadSegments() {
    try {
      const body = await getJSON("segments");
      state.segments = body.segments;
      renderSegments();
      cohorts.setSegments(body.cohorts);
    } catch (error) {
      onFetchError(error, "segments");
    }
  }

  function segmentFromHash() {
    const match = /(?:^#|&)segment=([^&]*)/.exec(location.hash);
    if (!match) return "all";
    try { return decodeURIComponent(match[1]) || "all"; } catch (_) { return "all"; }
  }

  // ---------------------------------------------------------------- window cards

  function kpisOfSegment() {
    const kind = segmentKind(state.segment);
    return state.meta.kpis.filter((k) => k.segment_kinds.includes(kind));
  }

  function buildCards() {
    const container = $("windows");
    container.replaceChildren();
    const headline = state.meta.headline[segmentKind(state.segment)];
    for (const window of state.windows) {
      const card = el("article", "window-card");
      card.dataset.window = window;
      card.dataset.stale = "false";
      const head = el("div", "card-head");
      head.append(el("span", "card-name", window), el("span", "card-age"));
      const sub = el("div", "card-bounds");
      const tiles = el("div", "tiles");
      for (const name of headline) {
        const tile = el("div", "tile");
        tile.dataset.window = window;
        tile.dataset.kpi = name;
        const label = el("div", "tile-label", state.kpis.get(name).label);
        label.title = name;
        const band = el("div", "band");
        band.hidden = true;
        band.append(el("span", "band-range"), el("span", "band-mark"));
        tile.append(label, el("div", "tile-value null", NULL), band, el("div", "band-text"), el("div", "delta"));
        tiles.append(tile);
      }
      card.append(head, sub, tiles);
      container.append(card);
    }
  }

  function setValue(node, name, value, flash) {
    const text = formatValue(name, value);
    const raw = value === undefined ? "" : JSON.stringify(value);
    if (node.dataset.value === raw && node.textContent === text) return;
    node.dataset.value = raw;
    node.textContent = text;
    node.classList.toggle("null", value === null || value === undefined);
    fit(node);
    if (flash) {
      node.classList.remove("flash");
      void node.offsetWidth; // restart the animation
      node.classList.add("flash");
    }
  }

  /* Long values (big money) shrink a step or two instead of being cut off. */
  function fit(node) {
    if (!node.classList.contains("tile-value")) return;
    node.classList.remove("long", "longer");
    if (node.scrollWidth > node.clientWidth) node.classList.add("long");
    if (node.scrollWidth > node.clientWidth) node.classList.replace("long", "longer");
  }

  function setDelta(node, name, current, previous) {
    const delta = formatDelta(name, current, previous);
    node.textContent = delta.text;
    node.className = node.className.split(" ").filter((c) => !["good", "bad", "flat"].includes(c)).join(" ");
    if (delta.cls) node.classList.add(delta.cls);
    node.title = previous ? `previous step ended ${previous.window_end}` : "";
  }

  function renderWindow(window, flash) {
    const entry = state.snapshots[window] || {};
    const card = document.querySelector(`.window-card[data-window="${CSS.escape(window)}"]`);
    if (!card) return;
    const current = entry.current;
    card.querySelector(".card-bounds").textContent = current ? bounds(current) : "";
    for (const tile of card.querySelectorAll(".tile")) {
      const name = tile.dataset.kpi;
      setValue(tile.querySelector(".tile-value"), name, current ? current[name] : undefined, flash);
      setBand(tile, name, window, current ? current[name] : undefined);
      setDelta(tile.querySelector(".delta"), name, current, entry.previous);
    }
    renderTableColumn(window, flash);
    renderAges();
  }

  function renderAges() {
    const now = serverNow();
    for (const card of document.querySelectorAll(".window-card")) {
      const entry = state.snapshots[card.dataset.window] || {};
      const updated = entry.current ? parseTime(entry.current.updated_at) : null;
      const ageNode = card.querySelector(".card-age");
      if (updated === null) {
        ageNode.textContent = state.noData || entry.loaded ? "no snapshot yet" : "";
        ageNode.classList.remove("stale");
        card.dataset.stale = "false";
        continue;
      }
      const stale = now - updated > state.staleAfterMs;
      card.dataset.stale = String(stale);
      ageNode.classList.toggle("stale", stale);
      ageNode.textContent = stale ? `stale \u00b7 ${age(now - updated)} ago` : `updated ${age(now - updated)} ago`;
    }
    const watermarks = Object.values(state.snapshots)
      .map((e) => (e.current ? parseTime(e.current.watermark) : null))
      .filter((t) => t !== null);
    $("asof").textContent = watermarks.length ? `Events up to ${dayTime(Math.max(...watermarks))} UTC` : "";
  }

  // ---------------------------------------------------------------- benchmark bands

  function bandFor(kpi, window) {
    if (!state.profile) return null;
    return state.profile.bands.find((b) => b.kpi === kpi && (b.windows === null || b.windows.includes(window))) || null;
  }

  /* The same reading as the API's (stream_app/benchmarks/compare.py): the ends are within. */
  function placeOnBand(value, band) {
    const number = asNumber(value);
    if (number === null) return null;
    if (number < band.low) return "below";
    return number > band.high ? "above" : "within";
  }

  function bandSide(band, where) {
    if (where === "within") return "within";
    return (where === "above") === band.higher_is_better ? "better" : "worse";
  }

  function bandRange(kpi, band) {
    return `${formatValue(kpi, band.low)}\u2013${formatValue(kpi, band.high)}`;
  }

  function bandSource(band) {
    return `${band.source.publisher}, ${band.source.year}`;
  }

  function setBand(tile, name, window, value) {
    const node = tile.querySelector(".band");
    const text = tile.querySelector(".band-text");
    const band = bandFor(name, window);
    const where = band ? placeOnBand(value, band) : null;
    node.hidden = band === null;
    text.textContent = band ? `${where ? `${where} ` : "band "}${bandRange(name, band)}` : "";
    const side = band && where ? bandSide(band, where) : "none";
    node.dataset.side = side;
    text.dataset.side = side;
    node.dataset.position = where || "";
    const about = band ? `${state.profile.title} benchmark ${bandRange(name, band)}: ${band.source.title} (${bandSource(band)})` : "";
    node.title = about;
    text.title = about;
    const mark = node.querySelector(".band-mark");
    mark.hidden = !where;
    if (band && where) {
      // The band is the middle third of the track: low at 1/3, high at 2/3.
      const number = asNumber(value);
      const at = (1 + (number - band.low) / (band.high - band.low)) / 3;
      mark.style.left = `${(100 * Math.min(0.98, Math.max(0.02, at))).toFixed(1)}%`;
    }
  }

  async function loadProfile() {
    try {
      state.profile = await getJSON("benchmarks");
    } catch (error) {
      state.profile = null;
      if (!(error instanceof HttpError && error.status === 404)) onFetchError(error, "benchmarks");
    }
    $("bench-panel").hidden = state.profile === null;
  }

  function benchItem(entry, cls) {
    const item = el("li", cls);
    item.dataset.kpi = entry.kpi;
    item.dataset.position = entry.position;
    const band = entry.band;
    item.append(
      el("span", "kpi-name", entry.label),
      el("span", "kpi-value", formatValue(entry.kpi, entry.value)),
      el("span", "kpi-band", `${entry.position} ${bandRange(entry.kpi, band)} \u00b7 ${band.source.publisher}, ${band.source.year}`),
    );
    item.title = `${band.source.title} (${band.source.url})`;
    return item;
  }

  function renderStrengths(body) {
    const box = $("bench");
    box.replaceChildren();
    $("bench-hint").textContent = body ? `${body.window} \u00b7 vs ${state.profile.title}` : "";
    if (!body) {
      box.append(el("div", "empty", "No snapshot to compare yet"));
      return;
    }
    const groups = [["Strengths", body.strengths, "strength"], ["Weaknesses", body.weaknesses, "weakness"]];
    for (const [title, entries, cls] of groups) {
      const section = el("section", `bench-${cls}`);
      section.append(el("h3", null, title));
      const list = el("ol");
      for (const entry of entries.slice(0, 5)) list.append(benchItem(entry, cls));
      if (!entries.length) list.append(el("li", "empty", `No KPI ${cls === "strength" ? "better" : "worse"} than its band`));
      section.append(list);
      box.append(section);
    }
    box.append(el("div", "hint", `${body.within.length} within ${body.within.length === 1 ? "its band" : "their bands"}`));
  }

  async function loadStrengths(generation) {
    if (!state.profile) return;
    const window = state.benchWindow;
    try {
      const body = await getJSON(`benchmarks/strengths-weaknesses?window=${encodeURIComponent(window)}&segment=${encodeURIComponent(state.segment)}`);
      if (generation !== state.generation) return;
      renderStrengths(body);
    } catch (error) {
      if (generation !== state.generation) return;
      renderStrengths(null);
      if (!(error instanceof HttpError && error.status === 404)) onFetchError(error, "strengths and weaknesses");
    }
  }

  /* Live snapshots of the panel's window come every second at most: re-read it every 5 s. */
  function strengthsSoon() {
    if (state.benchTimer !== null) return;
    const generation = state.generation;
    state.benchTimer = setTimeout(() => {
      state.benchTimer = null;
      loadStrengths(generation);
    }, 5000);
  }

  // ---------------------------------------------------------------- all-KPIs table

  function buildTable() {
    const table = $("kpi-table");
    table.replaceChildren();
    const head = table.createTHead().insertRow();
    head.append(el("th", null, "KPI"));
    for (const window of state.windows) head.append(el("th", null, window));
    const body = table.createTBody();
    let group = null;
    for (const kpi of kpisOfSegment()) {
      const row = body.insertRow();
      if (group !== null && kpi.group !== group) row.className = "group-start";
      group = kpi.group;
      const label = el("th", null, kpi.label);
      label.scope = "row";
      label.title = kpi.name;
      row.append(label);
      for (const window of state.windows) {
        const cell = el("td", "null");
        cell.dataset.window = window;
        cell.dataset.kpi = kpi.name;
        cell.append(el("span", "cell-value", NULL), el("span", "delta"));
        row.append(cell);
      }
    }
  }

  function renderTableColumn(window, flash) {
    const entry = state.snapshots[window] || {};
    for (const cell of document.querySelectorAll(`#kpi-table td[data-window="${CSS.escape(window)}"]`)) {
      const name = cell.dataset.kpi;
      const value = entry.current ? entry.current[name] : undefined;
      setValue(cell.querySelector(".cell-value"), name, value, flash);
      cell.classList.toggle("null", value === null || value === undefined);
      setDelta(cell.querySelector(".delta"), name, entry.current, entry.previous);
    }
  }

  // ---------------------------------------------------------------- snapshots

  function applySnapshot(snapshot, live) {
    const window = snapshot.window;
    if (!state.windows.includes(window) || snapshot.segment !== state.segment) return;
    const entry = state.snapshots[window] || (state.snapshots[window] = { current: null, previous: null });
    const current = entry.current;
    if (current) {
      const newEnd = parseTime(snapshot.window_end);
      const oldEnd = parseTime(current.window_end);
      if (newEnd !== null && oldEnd !== null && newEnd < oldEnd) return; // an older window
      const newAt = parseTime(snapshot.updated_at);
      const oldAt = parseTime(current.updated_at);
      if (newEnd === oldEnd && newAt !== null && oldAt !== null && newAt < oldAt) return;
      if (newEnd !== null && oldEnd !== null && newEnd > oldEnd) entry.previous = current;
    }
    entry.current = snapshot;
    state.noData = false;
    renderWindow(window, live);
    if (window === state.chartWindow) updateChartPoint(snapshot);
    if (window === state.benchWindow) strengthsSoon();
    renderStatus();
  }

  async function loadSnapshots(generation) {
    try {
      const body = await getJSON(`snapshots?segment=${encodeURIComponent(state.segment)}`);
      if (generation !== state.generation) return;
      for (const [window, entry] of Object.entries(body.windows)) {
        const existing = state.snapshots[window];
        if (!entry.current) {
          if (!existing) state.snapshots[window] = { current: null, previous: null, loaded: true };
          continue;
        }
        if (existing && existing.current) {
          const a = parseTime(existing.current.updated_at);
          const b = parseTime(entry.current.updated_at);
          if (a !== null && b !== null && a > b) continue; // live already brought a newer one
        }
        state.snapshots[window] = { current: entry.current, previous: entry.previous };
        renderWindow(window, false);
      }
      state.noData = false;
    } catch (error) {
      if (generation !== state.generation) return;
      if (error instanceof HttpError && error.status === 404) {
        state.noData = true;
        renderAges();
      } else {
        onFetchError(error, "snapshots");
      }
    }
    renderStatus();
  }

  // ---------------------------------------------------------------- charts

  function cssVar(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function buildChartTabs() {
    const tabs = $("chart-windows");
    tabs.replaceChildren();
    for (const window of state.windows) {
      const button = el("button", null, window);
      button.type = "button";
      button.setAttribute("role", "tab");
      button.dataset.window = window;
      button.setAttribute("aria-selected", String(window === state.chartWindow));
      button.addEventListener("click", () => {
        if (state.chartWindow === window) return;
        state.chartWindow = window;
        for (const b of tabs.children) b.setAttribute("aria-selected", String(b.dataset.window === window));
        loadHistory(state.generation);
      });
      tabs.append(button);
    }
  }

  function chartSpecs() {
    return CHARTS[segmentKind(state.segment)];
  }

  function destroyCharts() {
    for (const chart of state.charts) {
      chart.observer.disconnect();
      if (chart.plot) chart.plot.destroy();
    }
    state.charts = [];
    $("charts").replaceChildren();
  }

  function buildCharts() {
    destroyCharts();
    const container = $("charts");
    for (const spec of chartSpecs()) {
      const box = el("div", "chart");
      box.dataset.chart = spec.id;
      const body = el("div", "chart-body");
      const title = el("div", "chart-title", spec.title);
      title.append(el("span", "hint chart-bands"));
      box.append(title, body);
      container.append(box);
      const chart = { spec, body, plot: null, observer: new ResizeObserver(() => resizeChart(chart)) };
      chart.observer.observe(body);
      state.charts.push(chart);
    }
  }

  function resizeChart(chart) {
    if (!chart.plot) return;
    const width = Math.max(200, Math.floor(chart.body.clientWidth));
    if (Math.abs(chart.plot.width - width) > 2) chart.plot.setSize({ width, height: 170 });
  }

  function plotOptions(chart) {
    const colors = [cssVar("--series-1"), cssVar("--series-2"), cssVar("--series-3"), cssVar("--series-4")];
    const axisStroke = cssVar("--text-3");
    const grid = { stroke: cssVar("--grid"), width: 1 };
    const names = chart.spec.series;
    const leftKpi = names.find(([, axis]) => axis === 0)[0];
    const right = names.find(([, axis]) => axis === 1);
    const axes = [
      { stroke: axisStroke, grid, ticks: { stroke: grid.stroke } },
      { stroke: axisStroke, grid, ticks: { stroke: grid.stroke }, size: 56, values: (u, values) => values.map((v) => compact(leftKpi, v)) },
    ];
    // One point (a new segment) would give uPlot an empty time range: show the last steps.
    const stepS = () => (state.meta.windows.find((w) => w.name === state.chartWindow) || { step_s: 3600 }).step_s;
    const scales = {
      x: {
        time: true,
        range: (u) => {
          const xs = u.data[0];
          const min = xs[0];
          const max = xs[xs.length - 1];
          return max - min < stepS() ? [max - 12 * stepS(), max + stepS()] : [min, max];
        },
      },
      y: {},
    };
    if (right) {
      scales.y2 = {};
      axes.push({ scale: "y2", side: 1, stroke: axisStroke, grid: { show: false }, size: 56, values: (u, values) => values.map((v) => compact(right[0], v)) });
    }
    return {
      width: Math.max(200, Math.floor(chart.body.clientWidth)),
      height: 170,
      hooks: { drawClear: [(u) => drawBands(u, chart, colors)] },
      tzDate: (ts) => uPlot.tzDate(new Date(ts * 1000), "Etc/UTC"),
      cursor: { drag: { x: false, y: false } },
      legend: { live: true },
      scales,
      axes,
      series: [
        { label: "window end", value: (u, v) => (v === null || v === undefined ? NULL : dayTime(v * 1000)) },
        ...names.map(([kpi, axis], i) => ({
          label: state.kpis.get(kpi).label,
          scale: axis === 1 ? "y2" : "y",
          stroke: colors[i % colors.length],
          width: 2,
          points: { show: (u) => u.data[0].length <= 3, size: 6 },
          spanGaps: false,
          value: (u, v) => formatValue(kpi, v),
        })),
      ],
    };
  }

  /* Each series' benchmark band on the chart's window: a shaded strip in its colour,
     drawn under the lines. */
  function drawBands(u, chart, colors) {
    const ctx = u.ctx;
    const { left, top, width, height } = u.bbox;
    chart.spec.series.forEach(([kpi, axis], i) => {
      const band = bandFor(kpi, state.chartWindow);
      if (!band) return;
      const scale = axis === 1 ? "y2" : "y";
      const y1 = Math.max(top, Math.min(top + height, u.valToPos(band.high, scale, true)));
      const y2 = Math.max(top, Math.min(top + height, u.valToPos(band.low, scale, true)));
      if (!(y2 > y1)) return;
      ctx.save();
      ctx.fillStyle = colors[i % colors.length];
      ctx.globalAlpha = 0.13;
      ctx.fillRect(left, y1, width, y2 - y1);
      ctx.restore();
    });
  }

  function chartColumns(chart) {
    const data = state.chartData;
    return [data.xs, ...chart.spec.series.map(([kpi]) => data.cols[kpi])];
  }

  function renderCharts() {
    const data = state.chartData;
    for (const chart of state.charts) {
      if (!data || data.xs.length === 0) {
        if (chart.plot) { chart.plot.destroy(); chart.plot = null; }
        chart.body.replaceChildren(el("div", "empty", data ? "No history yet" : "Loading\u2026"));
        continue;
      }
      if (!chart.plot) {
        chart.body.replaceChildren();
        chart.plot = new uPlot(plotOptions(chart), chartColumns(chart), chart.body);
      } else {
        chart.plot.setData(chartColumns(chart));
      }
      const banded = chart.spec.series.map(([kpi]) => kpi).filter((kpi) => bandFor(kpi, state.chartWindow));
      chart.body.parentElement.dataset.bands = banded.join(",");
      chart.body.parentElement.querySelector(".chart-bands").textContent = banded.length ? " \u00b7 shaded: benchmark band" : "";
    }
  }

  function chartKpis() {
    return [...new Set(chartSpecs().flatMap((spec) => spec.series.map(([kpi]) => kpi)))];
  }

  function pointValue(kpi, point) {
    return asNumber(point[kpi]);
  }

  async function loadHistory(generation) {
    const window = state.chartWindow;
    const kpis = chartKpis();
    $("chart-hint").textContent = "";
    state.chartData = null;
    renderCharts();
    try {
      const query = `history?window=${encodeURIComponent(window)}&segment=${encodeURIComponent(state.segment)}&limit=${CHART_LIMIT}&fields=${kpis.join(",")}`;
      const body = await getJSON(query);
      if (generation !== state.generation || window !== state.chartWindow) return;
      const data = { xs: [], cols: {} };
      for (const kpi of kpis) data.cols[kpi] = [];
      for (const point of body.points) {
        const end = parseTime(point.window_end);
        if (end === null) continue;
        data.xs.push(end / 1000);
        for (const kpi of kpis) data.cols[kpi].push(pointValue(kpi, point));
      }
      trimLeadingZeros(data);
      state.chartData = data;
      const spec = state.meta.windows.find((w) => w.name === window);
      if (spec && data.xs.length) $("chart-hint").textContent = `${data.xs.length} ${data.xs.length === 1 ? "step" : "steps"} of ${stepText(spec.step_s)}`;
    } catch (error) {
      if (generation !== state.generation || window !== state.chartWindow) return;
      state.chartData = { xs: [], cols: {} };
      if (!(error instanceof HttpError && error.status === 404)) onFetchError(error, "history");
    }
    renderCharts();
  }

  /* Steps before the segment had any activity are all zeros: start the charts at the first
     step that has something to show (the API still returns them all). */
  function trimLeadingZeros(data) {
    const columns = Object.values(data.cols);
    let first = 0;
    while (first < data.xs.length - 1 && columns.every((col) => !col[first])) first += 1;
    if (first > 0) {
      data.xs.splice(0, first);
      for (const col of columns) col.splice(0, first);
    }
  }

  function updateChartPoint(snapshot) {
    const data = state.chartData;
    if (!data) return;
    const end = parseTime(snapshot.window_end);
    if (end === null) return;
    const x = end / 1000;
    const last = data.xs.length ? data.xs[data.xs.length - 1] : null;
    if (last !== null && x < last) return;
    if (last === x) {
      for (const kpi of Object.keys(data.cols)) data.cols[kpi][data.cols[kpi].length - 1] = pointValue(kpi, snapshot);
    } else {
      data.xs.push(x);
      for (const kpi of Object.keys(data.cols)) data.cols[kpi].push(pointValue(kpi, snapshot));
      if (data.xs.length > CHART_LIMIT) {
        data.xs.shift();
        for (const kpi of Object.keys(data.cols)) data.cols[kpi].shift();
      }
    }
    renderCharts();
  }

  // ---------------------------------------------------------------- alerts

  function alertKey(alert) {
    return `${alert.alert_id}|${alert.status}`;
  }

  function addAlerts(alerts, newestFirst) {
    let changed = false;
    const list = newestFirst ? [...alerts].reverse() : alerts;
    for (const alert of list) {
      if (!alert || typeof alert !== "object") continue;
      const key = alertKey(alert);
      if (state.alertKeys.has(key)) continue;
      state.alertKeys.add(key);
      state.alerts.unshift(alert);
      changed = true;
    }
    if (state.alerts.length > 100) state.alerts.length = 100;
    if (changed) renderAlerts();
  }

  function renderAlerts() {
    const list = $("alerts");
    list.replaceChildren();
    $("alerts-count").textContent = state.alerts.length ? `latest ${state.alerts.length}` : "";
    if (!state.alerts.length) {
      list.append(el("li", "empty", "No alerts"));
      return;
    }
    for (const alert of state.alerts) {
      const resolved = alert.status === "resolved";
      const item = el("li", `alert sev-${alert.severity === "critical" ? "critical" : "warning"}${resolved ? " resolved" : ""}`);
      item.dataset.alertId = String(alert.alert_id);
      item.dataset.status = String(alert.status);
      if (alert.segment === state.segment) item.classList.add("current-segment");
      const head = el("div", "alert-head");
      head.append(
        el("span", `badge ${alert.severity === "critical" ? "critical" : "warning"}`, String(alert.severity || "?")),
        el("span", `badge ${resolved ? "resolved" : "firing"}`, String(alert.status || "?")),
      );
      const fired = parseTime(alert.fired_at);
      const time = el("time", null, fired === null ? "" : dayTime(fired));
      if (alert.fired_at) time.dateTime = String(alert.fired_at);
      head.append(time);
      const where = [alert.segment, alert.kpi, alert.window].filter((x) => typeof x === "string" && x).join(" \u00b7 ");
      item.append(head, el("div", "alert-where", where), el("p", "alert-summary", String(alert.summary || "")));
      list.append(item);
    }
  }

  async function loadAlerts(generation) {
    try {
      const body = await getJSON("alerts?limit=50");
      if (generation !== state.generation) return;
      addAlerts(body.alerts, true);
      renderAlerts();
    } catch (error) {
      onFetchError(error, "alerts");
    }
  }

  // ---------------------------------------------------------------- at-risk customers

  const AT_RISK_SHOWN = 10;

  function riskItem(entry) {
    const risk = asNumber(entry.risk);
    const item = el("li", "risk-item");
    item.dataset.customer = String(entry.customer_id);
    item.dataset.risk = String(entry.risk);
    const bar = el("span", "risk-bar");
    const fill = el("span", "risk-fill");
    fill.style.width = `${risk === null ? 0 : Math.min(Math.max(risk, 0), 1) * 100}%`;
    bar.append(fill);
    item.append(
      el("span", "risk-customer", String(entry.customer_id)),
      bar,
      el("span", "risk-value", risk === null ? NULL : `${(risk * 100).toFixed(1)}%`),
    );
    item.title = `${entry.customer_id}: ${risk === null ? "?" : (risk * 100).toFixed(1)}% chance of cancelling within 30 days`;
    return item;
  }

  function renderAtRisk(body) {
    const list = $("at-risk");
    list.replaceChildren();
    const customers = body && Array.isArray(body.customers) ? body.customers : [];
    $("risk-hint").textContent = customers.length ? "churn risk within 30 days" : "";
    if (!customers.length) {
      list.append(el("li", "empty", "No customer at risk"));
      return;
    }
    for (const entry of customers.slice(0, AT_RISK_SHOWN)) {
      if (entry && typeof entry === "object") list.append(riskItem(entry));
    }
  }

  async function loadAtRisk(generation) {
    try {
      const body = await getJSON(`at-risk?segment=${encodeURIComponent(state.segment)}&limit=${AT_RISK_SHOWN}`);
      if (generation !== state.generation) return;
      renderAtRisk(body);
    } catch (error) {
      if (generation !== state.generation) return;
      onFetchError(error, "at-risk customers");
    }
  }

  // ---------------------------------------------------------------- status

  function newestUpdate() {
    const times = Object.values(state.snapshots)
      .map((e) => (e.current ? parseTime(e.current.updated_at) : null))
      .filter((t) => t !== null);
    return times.length ? Math.max(...times) : null;
  }

  function renderStatus() {
    const now = serverNow();
    let mode;
    let text;
    const newest = newestUpdate();
    if (!state.connected) {
      mode = state.everConnected ? "disconnected" : "connecting";
      text = state.everConnected ? "Disconnected \u00b7 retrying" : "Connecting\u2026";
    } else if (state.redis === "down") {
      mode = "redis-down";
      text = "Redis unavailable \u00b7 retrying";
    } else if (Date.now() - state.lastServerContact > PING_TIMEOUT_MS) {
      mode = "disconnected";
      text = "No answer from the server";
    } else if (newest === null) {
      mode = "waiting";
      text = state.noData ? "Live \u00b7 no data for this segment yet" : "Live \u00b7 waiting for data";
    } else if (now - newest > state.staleAfterMs) {
      mode = "stale";
      text = `Stale \u00b7 no update for ${age(now - newest)}`;
    } else {
      mode = "live";
      text = "Live";
    }
    const status = $("status");
    if (status.dataset.state !== mode) status.dataset.state = mode;
    status.querySelector(".status-text").textContent = text;
    status.title = newest ? `last update ${new Date(newest).toISOString()}` : "";
    document.title = mode === "live" || mode === "waiting" ? "CRM KPIs" : `CRM KPIs \u00b7 ${mode}`;
  }

  // ---------------------------------------------------------------- live stream

  function connect() {
    if (state.source) state.source.close();
    const generation = state.generation;
    const query = `segment=${encodeURIComponent(state.segment)}&cohort_segment=${encodeURIComponent(cohorts.segment())}`;
    const source = new EventSource(`${API}stream?${query}`);
    state.source = source;
    const contact = (data) => {
      state.lastServerContact = Date.now();
      if (data && data.server_time) {
        const server = parseTime(data.server_time);
        if (server !== null) state.serverOffsetMs = server - Date.now();
      }
      if (data && data.redis) {
        const was = state.redis;
        state.redis = data.redis;
        if (was === "down" && data.redis === "up") reload(generation);
      }
    };
    const parse = (event) => {
      try { return JSON.parse(event.data); } catch (_) { return null; }
    };
    source.addEventListener("hello", (event) => {
      if (generation !== state.generation) return;
      state.connected = true;
      state.everConnected = true;
      notice("");
      contact(parse(event));
      reload(generation); // after subscribing: nothing published meanwhile is missed
    });
    source.addEventListener("ping", (event) => contact(parse(event)));
    source.addEventListener("status", (event) => { contact(parse(event)); renderStatus(); });
    source.addEventListener("reset", () => reload(generation));
    source.addEventListener("snapshot", (event) => {
      state.lastServerContact = Date.now();
      const snapshot = parse(event);
      if (snapshot && generation === state.generation) applySnapshot(snapshot, true);
    });
    source.addEventListener("cohort", (event) => {
      state.lastServerContact = Date.now();
      cohorts.apply(parse(event));
    });
    source.addEventListener("alert", (event) => {
      state.lastServerContact = Date.now();
      const alert = parse(event);
      if (alert) addAlerts([alert], true);
    });
    source.onerror = () => {
      state.connected = false;
      renderStatus();
    };
  }

  function reload(generation) {
    if (generation !== state.generation) return;
    loadSnapshots(generation);
    loadAlerts(generation);
    loadHistory(generation);
    loadStrengths(generation);
    cohorts.load();
    loadAtRisk(generation);
  }

  function selectSegment(segment) {
    state.generation += 1;
    state.segment = segment;
    state.snapshots = {};
    state.noData = false;
    const hash = segment === "all" ? "" : `#segment=${encodeURIComponent(segment)}`;
    if (location.hash !== hash) history.replaceState(null, "", hash || location.pathname + location.search);
    renderSegments();
    buildCards();
    buildTable();
    buildCharts();
    renderAlerts();
    renderStatus();
    connect();
  }

  // ---------------------------------------------------------------- start

  async function start() {
    let meta;
    try {
      meta = await getJSON("meta");
    } catch (error) {
      onFetchError(error, "meta");
      notice("The dashboard could not load its settings; retrying in 5 s.");
      setTimeout(start, 5000);
      return;
    }
    notice("");
    state.meta = meta;
    state.kpis = new Map(meta.kpis.map((k) => [k.name, k]));
    state.windows = meta.windows.map((w) => w.name);
    state.chartWindow = state.windows.includes("24h") ? "24h" : state.windows[0];
    const staleParam = Number(new URLSearchParams(location.search).get("stale"));
    state.staleAfterMs = (Number.isFinite(staleParam) && staleParam > 0 ? staleParam : meta.stale_after_s) * 1000;
    $("footer-stale").textContent = `Stale after ${age(state.staleAfterMs)} without an update`;
    try {
      currencySymbol = new Intl.NumberFormat("en-US", { style: "currency", currency: meta.currency, currencyDisplay: "narrowSymbol" })
        .formatToParts(0).find((p) => p.type === "currency").value;
    } catch (_) {
      currencySymbol = meta.currency + " ";
    }
    // The longest window: where the bands of monthly figures (churn, retention) apply.
    state.benchWindow = state.windows[state.windows.length - 1];
    await loadProfile();
    buildChartTabs();
    cohorts.start({
      getJSON,
      onFetchError,
      cssVar,
      money: (value) => compact("clv", value),
      reconnect: () => connect(),
      fillSegments,
    });
    $("segment").addEventListener("change", (event) => selectSegment(event.target.value));
    window.addEventListener("hashchange", () => {
      const segment = segmentFromHash();
      if (segment !== state.segment) selectSegment(segment);
    });
    selectSegment(segmentFromHash());
    loadSegments();
    setInterval(loadSegments, SEGMENTS_POLL_MS);
    setInterval(() => { if (state.connected) loadSnapshots(state.generation); }, POLL_MS);
    setInterval(() => { if (state.connected) loadAtRisk(state.generation); }, POLL_MS);
    setInterval(() => { renderAges(); renderStatus(); }, 1000);
  }

  document.addEventListener("DOMContentLoaded", start);
})();

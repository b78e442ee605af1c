/* Cohort retention panel: heatmap, retention curves and LTV curves (contract section 6).
 *
 * Reads GET api/v1/cohorts?grain=&segment= and follows the SSE event "cohort" that app.js
 * forwards (its stream carries the cohorts of `CrmCohorts.segment()`). Rows are cohorts,
 * newest first, with their sizes; columns are periods k; each cell is the retention as a
 * percentage on a colour scale, incomplete periods (as of the watermark) hatched and marked
 * with "*". Data from the server is only ever put into the page as text.
 */
"use strict";

window.CrmCohorts = (() => {
  const NULL = "\u2014";
  const CURVES = 6; // cohorts selected for the curves at first: the newest ones with a k1

  const state = {
    grain: "week",
    segment: "all",
    segments: null,        // grain -> segments with cohorts (api/v1/segments); null: not known yet
    cohorts: [],           // newest first, as the API sends them
    selected: null,        // Set of cohort_start, or null until the first load
    plots: [],
    hooks: null,
    generation: 0,
  };

  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  };
  const pad = (n) => String(n).padStart(2, "0");

  function label(start) {
    const d = new Date(Date.parse(start));
    const month = `${d.getUTCFullYear()}-${pad(d.getUTCMonth() + 1)}`;
    return state.grain === "week" ? `${month}-${pad(d.getUTCDate())}` : month;
  }

  /* Retention as shown in a cell: one decimal, as a percentage. */
  function percent(retention) {
    return retention === null || retention === undefined ? NULL : `${(retention * 100).toFixed(1)}%`;
  }

  // ------------------------------------------------------------ controls

  function renderGrains() {
    for (const button of $("cohort-grains").children) {
      button.setAttribute("aria-selected", String(button.dataset.grain === state.grain));
    }
  }

  function renderSegments() {
    const select = $("cohort-segment");
    const known = new Set((state.segments && state.segments[state.grain]) || []);
    known.add("all");
    known.add(state.segment);
    const regions = [...known].filter((s) => s.startsWith("region:")).sort();
    const campaigns = [...known].filter((s) => s.startsWith("campaign:")).sort();
    const wanted = ["all", ...regions, ...campaigns].join("\n");
    state.hooks.fillSegments(select, wanted, [["Regions", regions], ["Campaigns", campaigns]]);
    select.value = state.segment;
  }

  // ------------------------------------------------------------ heatmap

  function cell(cohort, period) {
    const td = el("td", "heat");
    if (!period) {
      td.classList.add("none");
      return td;
    }
    const value = el("span", "heat-value", percent(period.retention));
    td.append(value);
    td.dataset.k = String(period.k);
    td.dataset.retention = JSON.stringify(period.retention);
    td.dataset.complete = String(period.complete);
    if (period.retention !== null) {
      const share = Math.round(Math.max(0, Math.min(1, period.retention)) * 100);
      td.style.setProperty("--heat", `${share}%`);
      if (share >= 55) td.classList.add("deep");
    }
    if (!period.complete) {
      td.classList.add("incomplete");
      td.append(el("span", "open-mark", "*"));
    }
    const end = period.end.replace("T", " ").replace(/:00Z$/, " UTC");
    td.title = `${label(cohort.cohort_start)} · period ${period.k}${period.complete ? "" : " (incomplete, as of the watermark)"}\n`
      + `active ${period.active} of ${cohort.size} at ${end}\n`
      + `revenue ${period.revenue ?? NULL} · per customer ${period.revenue_per_customer ?? NULL}`;
    return td;
  }

  function renderTable() {
    const table = $("cohort-table");
    const depth = Math.max(1, ...state.cohorts.map((c) => c.periods.length));
    const head = el("thead");
    const row = el("tr");
    row.append(el("th", "pick", ""), el("th", "cohort-name", state.grain === "week" ? "Week of" : "Month"), el("th", "size", "Size"));
    for (let k = 0; k < depth; k += 1) row.append(el("th", "k", String(k)));
    head.append(row);
    const body = el("tbody");
    for (const cohort of state.cohorts) {
      const tr = el("tr");
      tr.dataset.cohort = cohort.cohort_start;
      const pick = el("input");
      pick.type = "checkbox";
      pick.checked = state.selected.has(cohort.cohort_start);
      pick.setAttribute("aria-label", `Show ${label(cohort.cohort_start)} on the curves`);
      pick.addEventListener("change", () => {
        if (pick.checked) state.selected.add(cohort.cohort_start);
        else state.selected.delete(cohort.cohort_start);
        renderCurves();
      });
      const pickCell = el("td", "pick");
      pickCell.append(pick);
      tr.append(pickCell, el("th", "cohort-name", label(cohort.cohort_start)), el("td", "size", String(cohort.size)));
      for (let k = 0; k < depth; k += 1) tr.append(cell(cohort, cohort.periods[k]));
      body.append(tr);
    }
    table.replaceChildren(head, body);
    $("cohort-empty").hidden = state.cohorts.length > 0;
  }

  // ------------------------------------------------------------ curves

  function destroyPlots() {
    for (const plot of state.plots) plot.destroy();
    state.plots = [];
  }

  function renderCurves() {
    destroyPlots();
    const chosen = state.cohorts.filter((c) => state.selected.has(c.cohort_start));
    const depth = Math.max(1, ...chosen.map((c) => c.periods.length));
    const xs = Array.from({ length: depth }, (_, k) => k);
    const hooks = state.hooks;
    const colors = [1, 2, 3, 4].map((n) => hooks.cssVar(`--series-${n}`)).concat([hooks.cssVar("--good"), hooks.cssVar("--text-2")]);
    const axisStroke = hooks.cssVar("--text-3");
    const grid = { stroke: hooks.cssVar("--grid"), width: 1 };
    const column = (c, pick) => xs.map((k) => (c.periods[k] ? pick(c.periods[k]) : null));
    const specs = [
      ["cohort-retention", (p) => (p.retention === null ? null : p.retention * 100), (v) => `${v.toFixed(0)}%`, (v) => `${v.toFixed(1)}%`],
      ["cohort-ltv", (p) => (p.revenue_per_customer === null ? null : Number(p.revenue_per_customer)), (v) => hooks.money(v), (v) => hooks.money(v)],
    ];
    for (const [id, pick, tick, shown] of specs) {
      const body = $(id);
      body.replaceChildren();
      body.parentElement.dataset.series = String(chosen.length);
      if (!chosen.length) {
        body.append(el("div", "empty", "Tick cohorts in the table to draw them"));
        continue;
      }
      const options = {
        width: Math.max(200, Math.floor(body.clientWidth)),
        height: 190,
        scales: { x: { time: false, range: [0, Math.max(1, depth - 1)] }, y: { range: id === "cohort-retention" ? [0, 100] : undefined } },
        axes: [
          { stroke: axisStroke, grid, ticks: { stroke: grid.stroke }, label: `period k (${state.grain}s since the cohort's start)`, labelSize: 18, values: (u, v) => v.map((k) => (Number.isInteger(k) ? String(k) : "")) },
          { stroke: axisStroke, grid, ticks: { stroke: grid.stroke }, size: 56, values: (u, v) => v.map(tick) },
        ],
        legend: { live: true },
        cursor: { drag: { x: false, y: false } },
        series: [
          { label: "k", value: (u, v) => (v === null || v === undefined ? NULL : String(v)) },
          ...chosen.map((c, i) => ({
            label: label(c.cohort_start),
            stroke: colors[i % colors.length],
            width: 2,
            points: { show: true, size: 4 },
            value: (u, v) => (v === null || v === undefined ? NULL : shown(v)),
          })),
        ],
      };
      const data = [xs, ...chosen.map((c) => column(c, pick))];
      state.plots.push(new uPlot(options, data, body));
    }
  }

  function render() {
    renderGrains();
    renderSegments();
    renderTable();
    renderCurves();
    $("cohort-hint").textContent = state.cohorts.length
      ? `${state.cohorts.length} cohorts · retention = active at the end of period k / size · * incomplete (as of the watermark)`
      : "";
  }

  // ------------------------------------------------------------ data

  function defaultSelection() {
    const picked = state.cohorts.filter((c) => c.periods.length > 1).slice(0, CURVES);
    return new Set((picked.length ? picked : state.cohorts.slice(0, CURVES)).map((c) => c.cohort_start));
  }

  /* Not yet known counts as listed: the first load must not wait for the segment list
     (an empty heatmap was marked loaded when the list came second). */
  function listed() {
    return !state.segments || (state.segments[state.grain] || []).includes(state.segment);
  }

  /* Only a listed segment is asked for: one without cohorts would answer 404 (which
     shows as no cohorts, as does an unlisted one). */
  async function load() {
    const generation = ++state.generation;
    let cohorts = [];
    if (listed()) {
      const query = `cohorts?grain=${state.grain}&segment=${encodeURIComponent(state.segment)}`;
      try {
        cohorts = (await state.hooks.getJSON(query)).cohorts;
      } catch (error) {
        if (!(error && error.status === 404)) {
          state.hooks.onFetchError(error, "cohorts");
          return;
        }
      }
    }
    if (generation !== state.generation) return;
    state.cohorts = cohorts;
    const known = new Set(cohorts.map((c) => c.cohort_start));
    state.selected = state.selected ? new Set([...state.selected].filter((s) => known.has(s))) : null;
    if (!state.selected || !state.selected.size) state.selected = defaultSelection();
    render();
    $("cohorts-panel").dataset.loaded = `${state.grain}:${state.segment}`;
  }

  /* A changed cohort from the live stream: replaced in place; a new one reloads the list
     (the oldest then leaves it, as the published depth says). */
  function apply(update) {
    if (!update || update.grain !== state.grain || update.segment !== state.segment) return;
    const i = state.cohorts.findIndex((c) => c.cohort_start === update.cohort_start);
    if (i < 0) {
      if (state.segments && !listed()) state.segments[state.grain] = [...(state.segments[state.grain] || []), state.segment];
      load();
      return;
    }
    const { grain: _g, segment: _s, ...cohort } = update;
    state.cohorts[i] = cohort;
    render();
    const row = $("cohort-table").querySelector(`tr[data-cohort="${CSS.escape(cohort.cohort_start)}"]`);
    if (row) row.classList.add("flash");
  }

  function select(grain, segment) {
    if (grain === state.grain && segment === state.segment) return;
    const segmentChanged = segment !== state.segment;
    state.grain = grain;
    state.segment = segment;
    state.selected = null;
    state.cohorts = [];
    render();
    if (segmentChanged) state.hooks.reconnect(); // its "hello" reloads the cohorts
    else load();
  }

  function start(hooks) {
    state.hooks = hooks;
    state.selected = new Set();
    const tabs = $("cohort-grains");
    for (const grain of ["week", "month"]) {
      const button = el("button", null, grain === "week" ? "Weekly" : "Monthly");
      button.type = "button";
      button.setAttribute("role", "tab");
      button.dataset.grain = grain;
      button.addEventListener("click", () => select(grain, state.segment));
      tabs.append(button);
    }
    $("cohort-segment").addEventListener("change", (event) => select(state.grain, event.target.value));
    let resizing = null;
    new ResizeObserver(() => {
      clearTimeout(resizing);
      resizing = setTimeout(renderCurves, 150);
    }).observe($("cohort-curves"));
    render();
  }

  function setSegments(segments) {
    if (!segments) return;
    const was = listed();
    state.segments = segments;
    renderSegments();
    if (!was && listed()) load();
  }

  return { start, load, apply, setSegments, segment: () => state.segment };
})();

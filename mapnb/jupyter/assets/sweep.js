// The sweep views under the live grid: heatmap, metric vs. parameter, parallel coordinates
// (with brushing) and the best-so-far table, linked to the grid's selection and panel.
//
// Why <canvas> and no plotting library: the views must work offline (VS Code and Colab
// load a widget's front end from a CDN, JupyterLab from local files; a bundled plotly or
// vega would add megabytes to every saved notebook's widget state), and at 10,000 items a
// canvas redraws every point and line in tens of milliseconds (benchmarks/sweep_views.py),
// where SVG would be 10,000 nodes to lay out and restyle at each update. Drawing happens
// on a requestAnimationFrame, and only when data or a choice changed. Colours come from JupyterLab's CSS variables (via grid.css's --mapnb-*
// tokens), read at each draw, so the light and dark themes both work.
//
// Data (mapnb/jupyter/sweep.py): `sweep` = {params: [{name, labels, values}], idx: [per
// parameter, each item's position], seed}; `sweep_cols` = {keys, data: [column per key]}
// overlaid with `sweep_patch` = {index: row}; `selection` = selected item indices.

const RAMP5 = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function rgbAt(t) {
  t = Math.min(1, Math.max(0, t)) * 4;
  const k = Math.min(3, Math.floor(t)), f = t - k, a = RAMP5[k], b = RAMP5[k + 1];
  return `rgb(${a.map((v, j) => Math.round(v + f * (b[j] - v))).join(",")})`;
}
const LOWER = ["loss", "err", "mse", "mae", "rmse", "cost", "regret", "time", "perplexity", "latency"];
const lowerIsBetter = (name) => LOWER.some((w) => name.toLowerCase().includes(w));
const fmt = (v) => (v == null || !isFinite(v) ? "" :
  v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3) ? v.toExponential(1).replace("e+", "e") : String(+v.toPrecision(3)));

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}
function option(sel, value, text) { const o = el("option", "", text); o.value = value; sel.appendChild(o); return o; }
function labelled(text, input) { const l = el("label", "mapnb-sweep-ctl"); l.append(text, input); return l; }

// Round colour-scale bounds that only widen (like mapnb/grid.py's nice_scale).
function niceStep(span) {
  const raw = span / 5, mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => raw <= s * (1 + 1e-9));
}
function niceScale(lo, hi, prev) {
  if (prev && prev[0] <= lo && hi <= prev[1]) return prev;
  if (prev) { lo = Math.min(lo, prev[0]); hi = Math.max(hi, prev[1]); }
  const step = hi > lo ? niceStep(hi - lo) : (lo ? 10 ** Math.floor(Math.log10(Math.abs(lo))) : 1);
  const a = Math.floor(lo / step + 1e-9) * step;
  let b = Math.ceil(hi / step - 1e-9) * step;
  if (b <= a) b = a + step;
  return [+Math.min(a, lo).toPrecision(12), +Math.max(b, hi).toPrecision(12)];
}
function ticks(lo, hi) {
  if (!(hi > lo)) return [lo];
  const s = niceStep(hi - lo), out = [];
  for (let k = Math.ceil(lo / s - 1e-9); k * s <= hi + 1e-9 * s; k++) out.push(+(k * s).toPrecision(12));
  return out;
}

function reduce(vals, mode, asc) {
  if (!vals.length) return NaN;
  if (mode === "mean" || mode === "slice") return vals.reduce((a, b) => a + b, 0) / vals.length;
  const lowest = mode === "min" || (mode === "best" && asc);
  return lowest ? Math.min(...vals) : Math.max(...vals);
}

export function mountSweep({ model, onPick, colors }) {
  const root = el("div", "mapnb-sweep");
  root.style.display = "none";  // until the first draw says whether this run is a sweep
  const bar = el("div", "mapnb-sweep-bar");
  const toggle = el("button", "mapnb-sweep-toggle", "Sweep views \u25be");
  const ctl = {
    metric: el("select", "mapnb-sweep-metric"), order: el("select", "mapnb-sweep-order"),
    x: el("select", "mapnb-sweep-x"), y: el("select", "mapnb-sweep-y"),
    reduce: el("select", "mapnb-sweep-reduce"), facet: el("select", "mapnb-sweep-facet"),
    std: el("select", "mapnb-sweep-std"), color: el("select", "mapnb-sweep-color"),
  };
  option(ctl.order, "asc", "ascending (lower is better)");
  option(ctl.order, "desc", "descending (higher is better)");
  for (const m of ["best", "mean", "min", "max", "slice"]) option(ctl.reduce, m, m === "slice" ? "slice at" : m);
  const slices = el("span", "mapnb-sweep-slices");
  const controls = el("div", "mapnb-sweep-controls");
  controls.append(labelled("metric ", ctl.metric), labelled("", ctl.order), labelled("X ", ctl.x),
    labelled("Y ", ctl.y), labelled("others: ", ctl.reduce), slices, labelled("facet by ", ctl.facet),
    labelled("\u00b1 std over ", ctl.std), labelled("points coloured by ", ctl.color));
  const actions = el("div", "mapnb-sweep-actions");
  const count = el("span", "mapnb-sweep-count");
  const rerun = el("button", "mapnb-rerun-selected", "Re-run selected");
  const cancelSel = el("button", "mapnb-cancel-selected", "Cancel selected");
  const clear = el("button", "mapnb-clear-selected", "Clear selection");
  actions.append(count, rerun, cancelSel, clear);
  bar.append(toggle, controls);
  const body = el("div", "mapnb-sweep-body");
  const view = (cls, title) => {
    const box = el("div", `mapnb-view ${cls}`), t = el("div", "mapnb-view-title", title);
    box.append(t);
    body.appendChild(box);
    return { box, title: t };
  };
  const heat = view("mapnb-view-heat", "heatmap");
  const heatCanvas = el("canvas", "mapnb-heat-canvas");
  heat.box.append(heatCanvas);
  const scat = view("mapnb-view-scatter", "metric vs. parameter");
  const scatCanvas = el("canvas", "mapnb-scatter-canvas");
  scat.box.append(scatCanvas);
  const par = view("mapnb-view-parallel", "parallel coordinates: drag along an axis to select, click it to clear");
  const parCanvas = el("canvas", "mapnb-parallel-canvas");
  par.box.append(parCanvas);
  const best = view("mapnb-view-best", "best so far");
  const bestTable = el("table", "mapnb-best");
  best.box.append(bestTable);
  const tip = el("div", "mapnb-tip");
  tip.style.display = "none";
  root.append(bar, actions, body, tip);

  // ---- the data, kept between messages ----------------------------------------------
  let S = {}, keys = [], cols = [], n = 0, codes = [], sel = new Set();
  const ui = { metric: "", order: "", x: 1, y: 0, reduce: "best", facet: -1, std: -1, color: "status",
               slice: {}, open: true, k: 10 };
  const brushes = new Map();  // parallel-coordinates axis -> [lo, hi] in 0..1 (1 at the top)
  let scale = null, scaleKey = "", sparks = {}, sparkAsked = "", hits = { heat: [], scat: [], par: null };

  function readSweep() { S = model.get("sweep") || {}; n = model.get("n"); readCols(); readCodes(); }
  function readCols() { readBase(model.get("sweep_cols") || {}); }
  function readBase(base) {
    keys = base.keys || [];
    cols = (base.data || []).map((c) => Float64Array.from({ length: n }, (_, i) => (c[i] == null ? NaN : c[i])));
  }
  // Only the rows that changed since the kernel's last message: applied in order.
  function applyPatch() {
    const patch = model.get("sweep_patch") || {}, rows = patch.rows || {};
    for (const k of patch.keys || []) {  // a new column (keys only ever grow)
      if (!keys.includes(k)) { keys = [...keys, k]; cols.push(new Float64Array(n).fill(NaN)); }
    }
    for (const k in rows) {
      const i = +k, row = rows[k];
      for (let c = 0; c < cols.length && c < row.length; c++) cols[c][i] = row[c] == null ? NaN : row[c];
    }
  }
  function readCodes() {
    // Not a sweep (say a plain run of 100,000 items): no letters needed, none split.
    if (!(S.params && S.params.length)) { codes = []; return; }
    const base = model.get("statuses") || "", patch = model.get("patch") || {};
    codes = base.split("");
    for (const k in patch) codes[+k] = patch[k];
  }
  const P = () => S.params || [];
  const metricCol = () => cols[keys.indexOf(ui.metric)];
  const asc = () => ui.order === "asc";

  // ---- controls -----------------------------------------------------------------------
  function fill(sel, items, keep) {
    const want = JSON.stringify(items);
    if (sel._items !== want) {
      sel._items = want;
      sel.replaceChildren();
      for (const [v, t] of items) option(sel, v, t);
    }
    sel.value = String(keep);
  }
  function syncControls() {
    const p = P(), names = p.map((q, k) => [k, q.name]);
    if (!keys.includes(ui.metric)) {
      const pm = (model.get("detail") || {}).metrics?.chosen;
      ui.metric = keys.find((k) => k === `${pm} (reported)`) || keys[0] || "";
      ui.order = "";
    }
    if (!ui.order) ui.order = lowerIsBetter(ui.metric) ? "asc" : "desc";
    if (ui.x >= p.length) ui.x = 1;  // like the grid's sheet: X the second parameter, Y the first
    if (ui.y >= p.length || ui.y === ui.x) ui.y = ui.x === 0 ? 1 : 0;
    if (ui.facet === ui.x || ui.facet === ui.y || ui.facet >= p.length) ui.facet = -1;
    if (ui.std === -1 && S.seed && ui._seedSet !== true) { ui.std = p.findIndex((q) => q.name === S.seed); ui._seedSet = true; }
    if (ui.std === ui.x || ui.std === ui.y || (ui.std >= 0 && ui.std === ui.facet)) ui.std = -1;  // facets win
    fill(ctl.metric, keys.map((k) => [k, k]), ui.metric);
    ctl.order.value = ui.order;
    fill(ctl.x, names, ui.x);
    fill(ctl.y, names, ui.y);
    ctl.reduce.value = ui.reduce;
    fill(ctl.facet, [[-1, "none"], ...names.filter(([k]) => k !== ui.x && k !== ui.y)], ui.facet);
    fill(ctl.std, [[-1, "none"], ...names.filter(([k]) => k !== ui.x && k !== ui.y)], ui.std);
    fill(ctl.color, [["status", "status"], ...names.map(([k, t]) => [k, t])], ui.color);
    slices.replaceChildren();
    if (ui.reduce === "slice") {
      for (const k of others()) {
        const s = el("select", "mapnb-sweep-slice");
        p[k].labels.forEach((lab, j) => option(s, j, lab));
        s.value = String(ui.slice[k] ?? 0);
        s.onchange = () => { ui.slice[k] = +s.value; changed(); };
        slices.append(labelled(`${p[k].name}=`, s));
      }
    }
    const m = sel.size;
    count.textContent = m ? `${m} selected` : "nothing selected";
    rerun.disabled = cancelSel.disabled = clear.disabled = !m;
  }
  const others = () => P().map((_, k) => k).filter((k) => k !== ui.x && k !== ui.y && k !== ui.facet && k !== ui.std);
  for (const [name, c] of Object.entries(ctl)) {
    c.onchange = () => {
      ui[name] = ["x", "y", "facet", "std"].includes(name) ? +c.value : c.value;
      if (name === "color" && c.value !== "status") ui.color = +c.value;
      if (name === "metric") { ui.order = ""; scale = null; }
      tip.style.display = "none";  // what it said may no longer hold
      changed();
      const { metric, order, x, y, reduce: r, facet } = ui;  // the saved picture follows these
      model.set("sweep_view", { metric, order, x, y, reduce: r, facet });
      model.save_changes();
    };
  }
  toggle.onclick = () => { ui.open = !ui.open; changed(); };
  function setSelection(items, fromBrush = false) {
    if (!fromBrush) brushes.clear();  // a pick elsewhere replaces what the brushes chose
    sel = new Set(items);
    model.set("selection", [...sel].sort((a, b) => a - b));
    model.save_changes();
    changed();
  }
  rerun.onclick = () => model.send({ action: "rerun_selected" });
  cancelSel.onclick = () => model.send({ action: "cancel_selected" });
  clear.onclick = () => { brushes.clear(); setSelection([]); };

  // ---- units: items, or with "± std over" a parameter, its configurations ---------------
  // A unit: {items, v (the metric, or its mean over the seeds), sd, pos (per parameter)}.
  function units(std = ui.std) {
    const col = metricCol(), idx = S.idx || [], out = [];
    if (!col) return out;
    if (std < 0) {
      for (let i = 0; i < n; i++) if (!isNaN(col[i])) out.push({ items: [i], v: col[i], sd: NaN, pos: idx.map((a) => a[i]) });
      return out;
    }
    const groups = new Map();
    for (let i = 0; i < n; i++) {
      if (isNaN(col[i])) continue;
      const pos = idx.map((a, k) => (k === std ? -1 : a[i])), key = pos.join(",");
      if (!groups.has(key)) groups.set(key, { items: [], vals: [], pos });
      const g = groups.get(key);
      g.items.push(i); g.vals.push(col[i]);
    }
    for (const g of groups.values()) {
      const m = g.vals.reduce((a, b) => a + b, 0) / g.vals.length;
      const sd = g.vals.length > 1 ? Math.sqrt(g.vals.reduce((a, b) => a + (b - m) ** 2, 0) / (g.vals.length - 1)) : NaN;
      out.push({ items: g.items, v: m, sd, pos: g.pos });
    }
    return out;
  }
  const sliced = (u, keep) => ui.reduce !== "slice" ||
    others().every((k) => keep.includes(k) || u.pos[k] === (ui.slice[k] ?? 0));

  // ---- drawing --------------------------------------------------------------------------
  function theme() {
    const st = getComputedStyle(root);
    const v = (name, dflt) => st.getPropertyValue(name).trim() || dflt;
    return { text: v("--mapnb-text", "#222"), muted: v("--mapnb-muted", "#666"), line: v("--mapnb-line", "#bbb"),
             page: v("--mapnb-page", "#fff"), sel: v("--mapnb-select-out", "#000"),
             font: `11px ${st.fontFamily || "sans-serif"}` };
  }
  function sizeCanvas(c, w, h) {
    const r = window.devicePixelRatio || 1;
    if (c.width !== Math.round(w * r) || c.height !== Math.round(h * r)) {
      c.width = Math.round(w * r); c.height = Math.round(h * r);
      c.style.width = `${w}px`; c.style.height = `${h}px`;
    }
    const g = c.getContext("2d");
    g.setTransform(r, 0, 0, r, 0, 0);
    g.clearRect(0, 0, w, h);
    return g;
  }
  function colorOf(t) { return rgbAt(asc() ? 1 - t : t); }  // brighter is better

  function drawHeat(T, us) {
    const p = P(), px = p[ui.x], py = p[ui.y];
    const fv = ui.facet >= 0 ? p[ui.facet].labels.slice(0, 12) : [null];
    const nx = px.labels.length, ny = py.labels.length;
    if (nx * ny * fv.length > 40000) {  // e.g. a zipped map of many distinct values: no useful sheet
      const g = sizeCanvas(heatCanvas, 560, 30);
      g.font = T.font; g.fillStyle = T.muted;
      g.fillText(`${ny} x ${nx} cells${fv.length > 1 ? ` x ${fv.length} facets` : ""}: too many for a heatmap; pick other X and Y`, 10, 20);
      hits.heat = [];
      heatCanvas.dataset.cells = "0";
      return;
    }
    const cw = Math.max(4, Math.min(44, Math.floor(360 / nx))), ch = Math.max(4, Math.min(24, Math.floor(240 / ny)));
    const left = 70, top = 30, pw = left + nx * cw + 16, ph = top + ny * ch + 8;
    const per = Math.max(1, Math.floor(880 / pw)), rows = Math.ceil(fv.length / per);
    const W = Math.max(560, Math.min(fv.length, per) * pw), H = rows * ph + 58;
    const g = sizeCanvas(heatCanvas, W, H);
    g.font = T.font;
    const cells = fv.map(() => new Map());
    for (const u of us) {
      if (!sliced(u, [ui.x, ui.y])) continue;
      const f = ui.facet >= 0 ? u.pos[ui.facet] : 0;
      if (f >= fv.length) continue;
      const key = u.pos[ui.y] * nx + u.pos[ui.x];
      if (!cells[f].has(key)) cells[f].set(key, []);
      cells[f].get(key).push(u);
    }
    const vals = [];
    const agg = cells.map((m) => {
      const out = new Map();
      for (const [key, list] of m) {
        const v = reduce(list.map((u) => u.v), ui.reduce, asc());
        const sds = list.map((u) => u.sd).filter((s) => !isNaN(s));
        const items = list.flatMap((u) => u.items);
        const bestU = list.reduce((a, b) => ((asc() ? b.v < a.v : b.v > a.v) ? b : a));
        out.set(key, { v, sd: sds.length ? sds.reduce((a, b) => a + b, 0) / sds.length : NaN, items, pick: bestU.items[0] });
        vals.push(v);
      }
      return out;
    });
    const key = `${ui.metric}|${ui.reduce}|${ui.std}`;
    if (key !== scaleKey) { scale = null; scaleKey = key; }
    if (vals.length) scale = niceScale(Math.min(...vals), Math.max(...vals), scale);
    hits.heat = [];
    fv.forEach((flab, f) => {
      const ox = (f % per) * pw, oy = Math.floor(f / per) * ph;
      g.fillStyle = T.text; g.textAlign = "left";
      g.fillText(`${py.name} \u2193 ${px.name} \u2192${flab != null ? `   ${p[ui.facet].name} = ${flab}` : ""}`, ox + 2, oy + 10);
      g.fillStyle = T.muted; g.textAlign = "center";
      const every = Math.ceil(28 / cw);
      px.labels.forEach((lab, j) => { if (j % every === 0) g.fillText(lab.slice(0, 8), ox + left + j * cw + cw / 2, oy + top - 4); });
      g.textAlign = "right";
      const everyY = Math.ceil(12 / ch);
      py.labels.forEach((lab, j) => { if (j % everyY === 0) g.fillText(lab.slice(0, 10), ox + left - 4, oy + top + j * ch + ch / 2 + 4); });
      for (let r = 0; r < ny; r++) for (let c = 0; c < nx; c++) {
        const cell = agg[f].get(r * nx + c), x0 = ox + left + c * cw, y0 = oy + top + r * ch;
        if (!cell || isNaN(cell.v)) { g.strokeStyle = T.line; g.setLineDash([2, 2]); g.strokeRect(x0 + 0.5, y0 + 0.5, cw - 1, ch - 1); g.setLineDash([]); continue; }
        const t = scale[1] > scale[0] ? (cell.v - scale[0]) / (scale[1] - scale[0]) : 0.5;
        g.fillStyle = colorOf(t);
        g.fillRect(x0, y0, cw - 1, ch - 1);
        if (cell.items.some((i) => sel.has(i))) { g.strokeStyle = T.sel; g.lineWidth = 2; g.strokeRect(x0 + 1, y0 + 1, cw - 3, ch - 3); g.lineWidth = 1; }
        if (cw >= 36 && ch >= 16) {
          const rgb = g.fillStyle;  // text black or white on the cell, whichever reads better
          const lum = (rgb.match(/\w\w/g) || []).slice(0, 3).map((h) => parseInt(h, 16) / 255).map((v) => (v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4));
          const L = 0.2126 * lum[0] + 0.7152 * lum[1] + 0.0722 * lum[2];
          g.fillStyle = (L + 0.05) / 0.05 >= 1.05 / (L + 0.05) ? "#000" : "#fff";
          g.textAlign = "center";
          g.fillText(fmt(cell.v), x0 + cw / 2, y0 + ch / 2 + 4);
        }
        hits.heat.push({ x0, y0, x1: x0 + cw, y1: y0 + ch, cell,
          text: `${py.name}=${py.labels[r]}, ${px.name}=${px.labels[c]}${flab != null ? `, ${p[ui.facet].name}=${flab}` : ""}: ` +
            `${ui.metric} ${fmt(cell.v)}${isNaN(cell.sd) ? "" : ` \u00b1 ${fmt(cell.sd)}`} (${ui.reduce} of ${cell.items.length} item${cell.items.length === 1 ? "" : "s"})` });
      }
    });
    // The colour bar: the ramp, round ticks, the scale only widens as values arrive.
    const by = rows * ph + 8, bw = Math.min(300, W - 40);
    if (scale) {
      for (let k = 0; k < bw; k++) { g.fillStyle = colorOf(k / (bw - 1)); g.fillRect(20 + k, by, 1, 12); }
      g.fillStyle = T.text; g.textAlign = "center";
      for (const t of ticks(scale[0], scale[1])) {
        const x = 20 + ((t - scale[0]) / (scale[1] - scale[0] || 1)) * (bw - 1);
        g.fillRect(x, by + 12, 1, 3);
        g.fillText(fmt(t), x, by + 26);
      }
      g.textAlign = "left";
      g.fillText(`${ui.metric} (${ui.reduce}${ui.std >= 0 ? `, mean over ${p[ui.std].name}` : ""}); brighter is better`, 20, by + 42);
    }
    heatCanvas.dataset.cells = String(hits.heat.length);
  }

  function drawScatter(T, us) {
    const p = P(), w = 230, h = 160, left = 46, top = 14, bottom = 30, per = Math.max(1, Math.floor(900 / w));
    const W = Math.min(p.length, per) * w, H = Math.ceil(p.length / per) * h;
    const vs = us.map((u) => u.v).filter((v) => isFinite(v));
    const g = sizeCanvas(scatCanvas, W, vs.length ? H : 30);
    g.font = T.font;
    hits.scat = [];
    if (!vs.length) { g.fillStyle = T.muted; g.fillText(`no values of ${ui.metric || "a metric"} yet`, 10, 20); return; }
    let itemUnits = null;
    const items = () => itemUnits || (itemUnits = units(-1));
    let lo = Math.min(...vs), hi = Math.max(...vs);
    for (const u of us) if (!isNaN(u.sd)) { lo = Math.min(lo, u.v - u.sd); hi = Math.max(hi, u.v + u.sd); }
    if (ui.std >= 0) for (const u of items()) { lo = Math.min(lo, u.v); hi = Math.max(hi, u.v); }
    if (hi === lo) { hi += 0.5; lo -= 0.5; }
    const statusColors = model.get("colors") || colors || {};
    const NAMES = { q: "queued", r: "running", t: "retrying", s: "succeeded", f: "failed", c: "cached", p: "pruned", a: "aborted", x: "cancelled" };
    p.forEach((q, k) => {
      const ox = (k % per) * w, oy = Math.floor(k / per) * h, pw = w - left - 10, ph = h - top - bottom;
      const X = (j, i) => ox + left + (q.labels.length > 1 ? (j / (q.labels.length - 1)) * pw : pw / 2) + (((i * 2654435761) % 997) / 997 - 0.5) * Math.min(10, pw / q.labels.length / 2);
      const Y = (v) => oy + top + ph - ((v - lo) / (hi - lo)) * ph;
      g.strokeStyle = T.line; g.strokeRect(ox + left, oy + top, pw, ph);
      g.fillStyle = T.text; g.textAlign = "center";
      g.fillText(q.name, ox + left + pw / 2, oy + h - 4);
      g.fillStyle = T.muted;
      const every = Math.ceil(q.labels.length / 6);
      q.labels.forEach((lab, j) => { if (j % every === 0) g.fillText(lab.slice(0, 7), ox + left + (q.labels.length > 1 ? (j / (q.labels.length - 1)) * pw : pw / 2), oy + top + ph + 12); });
      g.textAlign = "right";
      for (const t of [lo, (lo + hi) / 2, hi]) g.fillText(fmt(t), ox + left - 3, Y(t) + 4);
      // The "± std over" parameter itself: its items one by one (the others: configurations).
      const src = k === ui.std ? items() : us;
      // the others reduced: a line through each value's reduced metric
      const buckets = q.labels.map(() => []);  // one pass over the units, whatever the number of values
      for (const u of src) if (u.pos[k] >= 0 && sliced(u, [k])) buckets[u.pos[k]].push(u.v);
      const line = buckets.map((vals) => reduce(vals, ui.reduce, asc()));
      g.strokeStyle = T.text; g.lineWidth = 1.5; g.beginPath();
      let pen = false;
      line.forEach((v, j) => { if (isNaN(v)) { pen = false; return; } const x = ox + left + (q.labels.length > 1 ? (j / (q.labels.length - 1)) * pw : pw / 2); if (pen) g.lineTo(x, Y(v)); else g.moveTo(x, Y(v)); pen = true; });
      g.stroke(); g.lineWidth = 1;
      // Points grouped by colour, each group one path: few fill and stroke calls at 10,000.
      const groups = new Map(), picked = new Path2D();
      const pc = ui.color === "status" ? null : p[ui.color];
      for (const u of src) {
        const i = u.items[0], x = X(u.pos[k], i), y = Y(u.v);
        const c = pc ? rgbAt(pc.labels.length > 1 ? u.pos[ui.color] / (pc.labels.length - 1) : 0.5)
          : statusColors[NAMES[codes[i]] || "succeeded"] || "#888";
        let grp = groups.get(c);
        if (!grp) groups.set(c, (grp = { dots: new Path2D(), bars: new Path2D() }));
        grp.dots.rect(x - 2, y - 2, 4, 4);
        if (!isNaN(u.sd)) { grp.bars.moveTo(x, Y(u.v - u.sd)); grp.bars.lineTo(x, Y(u.v + u.sd)); }
        if (u.items.some((j) => sel.has(j))) picked.rect(x - 3.5, y - 3.5, 7, 7);
        hits.scat.push({ x, y, u });
      }
      for (const [c, grp] of groups) { g.fillStyle = c; g.fill(grp.dots); g.strokeStyle = c; g.stroke(grp.bars); }
      g.strokeStyle = T.sel; g.stroke(picked);
    });
  }

  // Parallel coordinates: one axis per parameter, then one per column (output fields and
  // reported metrics); each item a line, coloured by the metric; brushed-out lines faint.
  function parAxes() {
    const p = P(), idx = S.idx || [], axes = [];
    p.forEach((q, k) => axes.push({ name: q.name, labels: q.labels, at: (i) => (q.labels.length > 1 ? idx[k][i] / (q.labels.length - 1) : 0.5) }));
    keys.forEach((key, c) => {
      const col = cols[c];
      let lo = Infinity, hi = -Infinity;
      for (let i = 0; i < n; i++) if (!isNaN(col[i])) { lo = Math.min(lo, col[i]); hi = Math.max(hi, col[i]); }
      if (lo > hi) return;
      axes.push({ name: key, lo, hi, at: (i) => (isNaN(col[i]) ? NaN : hi > lo ? (col[i] - lo) / (hi - lo) : 0.5) });
    });
    return axes;
  }
  function brushed(axes, i) {
    for (const [a, [lo, hi]] of brushes) {
      const v = axes[a] ? axes[a].at(i) : NaN;
      if (!(v >= lo && v <= hi)) return false;
    }
    return true;
  }
  function drawParallel(T) {
    const axes = parAxes(), W = Math.max(420, Math.min(900, 110 * axes.length)), H = 250, top = 24, bottom = 30, pad = 40;
    const g = sizeCanvas(parCanvas, W, H), ph = H - top - bottom;
    const step = axes.length > 1 ? (W - 2 * pad) / (axes.length - 1) : 0;
    const ax = axes.map((a, k) => ({ ...a, x: pad + k * step }));
    hits.par = { axes: ax, top, ph, items: [] };
    parCanvas.dataset.axes = JSON.stringify(ax.map((a) => ({ name: a.name, x: a.x })));
    parCanvas.dataset.top = String(top); parCanvas.dataset.bottom = String(top + ph);
    g.font = T.font;
    const col = metricCol();
    let lo = Infinity, hi = -Infinity;
    if (col) for (let i = 0; i < n; i++) if (!isNaN(col[i])) { lo = Math.min(lo, col[i]); hi = Math.max(hi, col[i]); }
    const order = [];
    for (let i = 0; i < n; i++) if (!col || !isNaN(col[i])) order.push(i);
    const anyBrush = brushes.size > 0;
    g.lineWidth = 1;
    const faint = [], strong = [];
    for (const i of order) (anyBrush && !brushed(ax, i) ? faint : strong).push(i);
    hits.par.items = strong;
    // Lines go into one path per colour band (24 bands), stroked worst band first: a few
    // dozen strokes whatever the number of items (one stroke per line took 5x as long).
    const trace = (path, i) => {
      let pen = false;
      for (const a of ax) { const v = a.at(i); if (isNaN(v)) { pen = false; continue; } const y = top + (1 - v) * ph; if (pen) path.lineTo(a.x, y); else path.moveTo(a.x, y); pen = true; }
    };
    const faintPath = new Path2D();
    for (const i of faint) trace(faintPath, i);
    g.globalAlpha = 0.15; g.strokeStyle = T.line; g.stroke(faintPath);
    const B = 24, bands = Array.from({ length: B }, () => null);
    for (const i of strong) {
      const t = col && hi > lo ? (col[i] - lo) / (hi - lo) : 0.5, good = asc() ? 1 - t : t;
      const b = Math.min(B - 1, Math.floor(good * B));
      trace(bands[b] || (bands[b] = new Path2D()), i);
    }
    g.globalAlpha = n > 2000 ? 0.5 : 0.85;
    bands.forEach((path, b) => { if (path) { g.strokeStyle = col ? rgbAt((b + 0.5) / B) : T.muted; g.stroke(path); } });
    const selPath = new Path2D();
    for (const i of strong) if (sel.has(i)) trace(selPath, i);
    g.globalAlpha = 1; g.lineWidth = 2; g.strokeStyle = T.sel; g.stroke(selPath);
    g.lineWidth = 1;
    ax.forEach((a, k) => {
      g.strokeStyle = T.text; g.beginPath(); g.moveTo(a.x, top); g.lineTo(a.x, top + ph); g.stroke();
      g.fillStyle = T.text; g.textAlign = "center"; g.fillText(a.name.slice(0, 20), a.x, top - 8);
      g.fillStyle = T.muted;
      if (a.labels) { const every = Math.ceil(a.labels.length / 8); a.labels.forEach((lab, j) => { if (j % every === 0) { g.textAlign = "left"; g.fillText(lab.slice(0, 8), a.x + 3, top + (1 - (a.labels.length > 1 ? j / (a.labels.length - 1) : 0.5)) * ph + 4); } }); }
      else { g.textAlign = "left"; g.fillText(fmt(a.hi), a.x + 3, top + 8); g.fillText(fmt(a.lo), a.x + 3, top + ph); }
      const b = brushes.get(k);
      if (b) { g.fillStyle = T.sel; g.globalAlpha = 0.25; g.fillRect(a.x - 7, top + (1 - b[1]) * ph, 14, (b[1] - b[0]) * ph); g.globalAlpha = 1; g.strokeStyle = T.sel; g.strokeRect(a.x - 7, top + (1 - b[1]) * ph, 14, (b[1] - b[0]) * ph); }
    });
    g.fillStyle = T.muted; g.textAlign = "left";
    g.fillText(anyBrush ? `${strong.length} of ${order.length} items in the brushes` : `${order.length} items`, pad - 30, H - 8);
  }

  function drawBest(T) {
    const col = metricCol(), p = P(), idx = S.idx || [];
    bestTable.replaceChildren();
    const head = el("tr");
    const reported = keys.some((k) => k.endsWith(" (reported)"));
    for (const t of ["#", "item", ...p.map((q) => q.name), ui.metric, "status", ...(reported ? ["reported"] : [])]) head.appendChild(el("th", "", t));
    bestTable.appendChild(head);
    if (!col) return;
    const have = [];
    for (let i = 0; i < n; i++) if (!isNaN(col[i])) have.push(i);
    have.sort((a, b) => (asc() ? col[a] - col[b] : col[b] - col[a]) || a - b);
    const top = have.slice(0, ui.k);
    const NAMES = { q: "queued", r: "running", t: "retrying", s: "succeeded", f: "failed", c: "cached", p: "pruned", a: "aborted", x: "cancelled" };
    top.forEach((i, r) => {
      const tr = el("tr", `mapnb-best-row${sel.has(i) ? " selected" : ""}`);
      tr.dataset.i = String(i);
      tr.append(el("td", "", String(r + 1)), el("td", "", String(i)));
      p.forEach((q, k) => tr.appendChild(el("td", "", q.labels[idx[k][i]])));
      tr.appendChild(el("td", "mapnb-best-value", fmt(col[i])));
      const st = NAMES[codes[i]] || "";
      const stc = el("td");
      stc.appendChild(el("span", `mapnb-chip s-${st}`, st));
      tr.appendChild(stc);
      if (reported) {
        const sp = el("td", "mapnb-best-spark");
        if (sparks[i]) sp.innerHTML = sparks[i];  // our own SVG, drawn by the kernel from numbers only
        tr.appendChild(sp);
      }
      tr.title = `item ${i}: ${ui.metric} = ${+col[i].toPrecision(6)}; click to show it`;
      bestTable.appendChild(tr);
    });
    // Sparklines of the reported metric: asked of the kernel when the top rows change.
    const want = `${top.join(",")}|${codes.filter((c) => c === "s" || c === "p").length}`;
    if (want !== sparkAsked && top.length && reported) {
      sparkAsked = want;
      model.send({ action: "sparks", indices: top });
    }
  }

  let frame = 0;
  function draw() {
    frame = 0;
    root.style.display = P().length >= 2 ? "" : "none";
    if (P().length < 2) return;
    syncControls();
    body.style.display = ui.open ? "" : "none";
    controls.style.display = ui.open ? "" : "none";
    toggle.textContent = ui.open ? "Sweep views \u25be" : "Sweep views \u25b8";
    if (!ui.open) return;
    const t0 = performance.now(), T = theme(), us = units();
    drawHeat(T, us);
    drawScatter(T, us);
    drawParallel(T);
    drawBest(T);
    root.dataset.drawn = String((+root.dataset.drawn || 0) + 1);
    lastMs = performance.now() - t0;
    root.dataset.drawMs = lastMs.toFixed(1);  // for tests and benchmarks (sweep_views.py)
    (root.mapnbDraws = root.mapnbDraws || []).push(lastMs);
    if (root.mapnbDraws.length > 2000) root.mapnbDraws.shift();
  }
  // One draw per animation frame at most, only after a change; when a draw is slow (a very
  // large sweep), the next waits a few times as long, so the page stays responsive.
  let lastMs = 0;
  function changed() {
    if (frame) return;
    frame = 1;
    const wait = lastMs > 40 ? Math.min(1000, 3 * lastMs) : 0;
    if (wait) setTimeout(() => requestAnimationFrame(draw), wait);
    else requestAnimationFrame(draw);
  }

  // ---- pointer: tooltips, picks, brushes ------------------------------------------------
  const at = (c, ev) => { const r = c.getBoundingClientRect(); return [ev.clientX - r.left, ev.clientY - r.top]; };
  function showTip(ev, text) {
    if (!text) { tip.style.display = "none"; return; }
    tip.textContent = text;
    tip.style.display = "";
    const r = root.getBoundingClientRect();
    tip.style.left = `${ev.clientX - r.left + 12}px`; tip.style.top = `${ev.clientY - r.top + 12}px`;
  }
  const itemText = (i) => {
    const p = P(), idx = S.idx || [], col = metricCol();
    return `item ${i}: ${p.map((q, k) => `${q.name}=${q.labels[idx[k][i]]}`).join(", ")}` +
      (col && !isNaN(col[i]) ? `; ${ui.metric} = ${+col[i].toPrecision(6)}` : "");
  };
  const heatHit = (ev) => { const [x, y] = at(heatCanvas, ev); return hits.heat.find((c) => x >= c.x0 && x < c.x1 && y >= c.y0 && y < c.y1); };
  const scatHit = (ev) => {
    const [x, y] = at(scatCanvas, ev);
    let bestD = 36, hit = null;
    for (const s of hits.scat) { const d = (s.x - x) ** 2 + (s.y - y) ** 2; if (d < bestD) { bestD = d; hit = s; } }
    return hit;
  };
  heatCanvas.addEventListener("mousemove", (ev) => showTip(ev, heatHit(ev)?.text));
  heatCanvas.addEventListener("mouseleave", () => showTip(null, ""));
  heatCanvas.addEventListener("click", (ev) => { const c = heatHit(ev); if (c) { setSelection(c.cell.items); onPick(c.cell.pick); } });
  scatCanvas.addEventListener("mousemove", (ev) => { const s = scatHit(ev); showTip(ev, s && (s.u.items.length > 1 ? `${itemText(s.u.items[0])} (mean ${fmt(s.u.v)} \u00b1 ${fmt(s.u.sd)} over ${s.u.items.length})` : itemText(s.u.items[0]))); });
  scatCanvas.addEventListener("mouseleave", () => showTip(null, ""));
  scatCanvas.addEventListener("click", (ev) => { const s = scatHit(ev); if (s) { setSelection(s.u.items); onPick(s.u.items[0]); } });
  bestTable.addEventListener("click", (ev) => {
    const tr = ev.target.closest?.("tr[data-i]");
    if (tr) { setSelection([+tr.dataset.i]); onPick(+tr.dataset.i); }
  });
  bestTable.addEventListener("mousemove", (ev) => { const tr = ev.target.closest?.("tr[data-i]"); showTip(ev, tr ? itemText(+tr.dataset.i) : ""); });
  bestTable.addEventListener("mouseleave", () => showTip(null, ""));
  let drag = null;
  parCanvas.addEventListener("mousedown", (ev) => {
    const hp = hits.par;
    if (!hp) return;
    const [x, y] = at(parCanvas, ev);
    const k = hp.axes.findIndex((a) => Math.abs(a.x - x) <= 12);
    if (k < 0) return;
    ev.preventDefault();
    const v = 1 - (y - hp.top) / hp.ph;
    drag = { k, v0: Math.min(1, Math.max(0, v)), moved: false };
  });
  // The line nearest the pointer (within 5 px), between the two axes around it.
  function lineAt(ev) {
    const hp = hits.par;
    if (!hp) return null;
    const [x, y] = at(parCanvas, ev), a = hp.axes.findIndex((q, k) => k + 1 < hp.axes.length && q.x <= x && x <= hp.axes[k + 1].x);
    if (a < 0) return null;
    const A = hp.axes[a], B = hp.axes[a + 1], t = (x - A.x) / (B.x - A.x || 1);
    let best = 5, hit = null;
    for (const i of hp.items) {
      const va = A.at(i), vb = B.at(i);
      if (isNaN(va) || isNaN(vb)) continue;
      const d = Math.abs(hp.top + (1 - (va + t * (vb - va))) * hp.ph - y);
      if (d < best) { best = d; hit = i; }
    }
    return hit;
  }
  parCanvas.addEventListener("click", (ev) => {
    const [x] = at(parCanvas, ev);
    if (hits.par && hits.par.axes.some((a) => Math.abs(a.x - x) <= 12)) return;  // an axis: brushes
    const i = lineAt(ev);
    if (i != null) { setSelection([i]); onPick(i); }
  });
  parCanvas.addEventListener("mouseleave", () => showTip(null, ""));
  const onMove = (ev) => {
    if (!drag) {
      if (ev.target === parCanvas && hits.par) {
        const [x] = at(parCanvas, ev), onAxis = hits.par.axes.some((a) => Math.abs(a.x - x) <= 12);
        parCanvas.style.cursor = onAxis ? "ns-resize" : "";
        const i = onAxis ? null : lineAt(ev);
        showTip(ev, i == null ? "" : itemText(i));
      }
      return;
    }
    const hp = hits.par, [, y] = at(parCanvas, ev), v = Math.min(1, Math.max(0, 1 - (y - hp.top) / hp.ph));
    if (Math.abs(v - drag.v0) * hp.ph < 3 && !drag.moved) return;
    drag.moved = true;
    brushes.set(drag.k, [Math.min(v, drag.v0), Math.max(v, drag.v0)]);
    changed();
  };
  const onUp = () => {
    if (!drag) return;
    const { k, moved } = drag;
    drag = null;
    if (!moved) brushes.delete(k);  // a click on an axis clears its brush
    const ax = parAxes(), items = [];
    if (brushes.size) for (let i = 0; i < n; i++) if (brushed(ax, i)) items.push(i);
    setSelection(items, true);
  };
  // On the window: a brush goes on while the pointer leaves the canvas.
  window.addEventListener("mousemove", onMove);
  window.addEventListener("mouseup", onUp);

  // ---- the model --------------------------------------------------------------------------
  model.on("change:sweep", () => { readSweep(); changed(); });
  model.on("change:n", () => { readSweep(); changed(); });
  model.on("change:sweep_cols", () => { readCols(); changed(); });
  model.on("change:sweep_patch", () => { applyPatch(); changed(); });
  model.on("change:statuses", () => { readCodes(); changed(); });
  model.on("change:patch", () => { readCodes(); changed(); });
  model.on("change:selection", () => { sel = new Set(model.get("selection") || []); changed(); });
  model.on("msg:custom", (msg) => {
    if (msg && msg.sparks) { Object.assign(sparks, msg.sparks); changed(); }
    if (msg && msg.sweep_sync) { S = msg.sweep_sync.sweep || {}; n = (S.idx && S.idx[0] || []).length || model.get("n"); readBase(msg.sweep_sync.cols || {}); readCodes(); changed(); }
  });
  model.send({ action: "sweep_sync" });  // this view may open late: ask for the whole columns
  // A canvas keeps the colours it was drawn with: redraw when the theme changes.
  const themeWatch = new MutationObserver(() => changed());
  themeWatch.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name", "class"] });
  readSweep(); readCodes();
  sel = new Set(model.get("selection") || []);
  const v = model.get("sweep_view") || {};
  for (const k of ["metric", "order", "x", "y", "reduce", "facet"]) if (v[k] != null) ui[k] = v[k];
  changed();
  const dispose = () => {
    themeWatch.disconnect();
    window.removeEventListener("mousemove", onMove);
    window.removeEventListener("mouseup", onUp);
  };
  return { el: root, dispose };
}

// The live grid's front end (anywidget). State comes from mapnb/grid.py's GridModel:
// `statuses` (one letter per item) overlaid with `patch` (index -> letter) is the status
// of every item; `detail` describes the selected item, whose log the kernel streams.
import { mountSweep } from "./sweep.js";

const NAMES = { q: "queued", r: "running", t: "retrying", s: "succeeded", f: "failed",
                c: "cached", p: "pruned", a: "aborted", x: "cancelled" };
const CHUNKED = 10000, CHUNK = 1024;  // above CHUNKED cells, cells come in chunks of ~CHUNK
const ORDER = ["succeeded", "cached", "pruned", "failed", "aborted", "cancelled", "retrying", "running", "queued"];

function h(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
}

function seconds(s) {
  if (s == null || !isFinite(s)) return "";
  if (s < 0.1) return `${(s * 1000).toPrecision(2)} ms`;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.floor(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// A perceptual ramp (viridis, 5 stops) for the heatmap; mapnb/grid.py has the same stops.
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function rampRGB(t) {
  t = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const k = Math.min(RAMP.length - 2, Math.floor(t)), f = t - k, a = RAMP[k], b = RAMP[k + 1];
  return a.map((v, j) => Math.round(v + f * (b[j] - v)));
}
function ramp(t) { return `rgb(${rampRGB(t).join(",")})`; }

// WCAG relative luminance; text on a value's colour is black or white, whichever reads better.
function luminance(rgb) {
  const [r, g, b] = rgb.map((c) => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}
function textOn(rgb) {
  const l = luminance(rgb);
  return (l + 0.05) / 0.05 >= 1.05 / (l + 0.05) ? "#000" : "#fff";
}

// A value short enough for a heatmap cell (mapnb/grid.py's _fmt_value does the same).
function short(v) {
  if (v !== 0 && (Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3)) return v.toExponential(1).replace("e+", "e");
  return String(+v.toPrecision(3));
}

// A large run (more than CANVAS_MIN items, not a sheet) is drawn on one canvas the size
// of the box's visible part, from a typed array of status letters: a patch sets bytes and
// redraws only the cells it names that are in view, a scroll redraws the rows in view.
// (As DOM cells, 100,000 elements made the first paint take seconds and some patches
// hundreds of milliseconds of style and layout.)
const CANVAS_MIN = CHUNKED;
const HATCHED = new Set(["failed", "aborted", "cancelled"]);

function canvasCells(root, box, n, size, fallback) {
  const pitch = size + 1;
  const space = h("div", "mapnb-space");
  const canvas = h("canvas", "mapnb-canvas");
  space.appendChild(canvas);
  box.appendChild(space);
  box.dataset.cells = n;
  const codes = new Uint8Array(n).fill(113);  // "q"
  let perRow = 1, rows = 1, top = 0, bottom = 0, ctx = null, colors = {}, sel = -1;

  // The theme's colours (grid.css tokens), read at each full draw: a detached element has
  // none yet (then the kernel's COLORS), and a theme switch changes them.
  function readColors() {
    const cs = getComputedStyle(root), v = (k, or) => cs.getPropertyValue(k).trim() || or;
    colors = { hollow: v("--mapnb-hollow", "#757575"), out: v("--mapnb-select-out", "#000"),
               in: v("--mapnb-select-in", "#fff"), hatch: v("--mapnb-hatch", "rgba(0, 0, 0, 0.25)") };
    for (const [code, name] of Object.entries(NAMES)) {
      colors[code.charCodeAt(0)] = { name, bg: v(`--mapnb-${name}-bg`, fallback[name] || "#888"), fg: v(`--mapnb-${name}-fg`, "#fff") };
    }
  }

  // Columns from the box's width; the canvas covers the rows in view (top .. bottom).
  function size_() {
    const width = box.clientWidth || 900;
    perRow = Math.max(1, Math.floor((width + 1) / pitch));
    rows = Math.ceil(n / perRow);
    space.style.height = `${rows * pitch}px`;
    space.style.width = `${perRow * pitch}px`;
  }

  function place() {
    const view = Math.min(box.clientHeight || 420, rows * pitch);
    top = Math.floor(box.scrollTop / pitch);
    bottom = Math.min(rows, Math.ceil((box.scrollTop + view) / pitch) + 1);
    const dpr = window.devicePixelRatio || 1, w = perRow * pitch, hgt = (bottom - top) * pitch;
    canvas.style.top = `${top * pitch}px`;
    canvas.style.width = `${w}px`;
    canvas.style.height = `${hgt}px`;
    if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(hgt * dpr)) {
      canvas.width = Math.round(w * dpr);
      canvas.height = Math.round(hgt * dpr);
    }
    ctx = canvas.getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  }

  function cell(i) {
    const r = Math.floor(i / perRow);
    if (r < top || r >= bottom) return;  // out of view: drawn when scrolled to
    const x = (i % perRow) * pitch, y = (r - top) * pitch, c = colors[codes[i]] || colors[113];
    ctx.clearRect(x, y, pitch, pitch);
    if (c.name === "queued") {  // hollow, as the DOM cells are
      ctx.strokeStyle = colors.hollow;
      ctx.lineWidth = 1;
      ctx.strokeRect(x + 0.5, y + 0.5, size - 1, size - 1);
    } else {
      ctx.fillStyle = c.bg;
      ctx.fillRect(x, y, size, size);
      if (HATCHED.has(c.name)) {  // ended badly: a dark stroke across, beyond hue
        ctx.strokeStyle = colors.hatch;
        ctx.lineWidth = 1.5;
        ctx.beginPath(); ctx.moveTo(x, y + size); ctx.lineTo(x + size, y); ctx.stroke();
      } else if (c.name === "pruned") {  // a cut across, as in the static picture
        ctx.fillStyle = c.fg;
        ctx.fillRect(x, y + size - 2, size, 1);
      }
    }
    if (i === sel) {
      ctx.lineWidth = 2;
      ctx.strokeStyle = colors.in;
      ctx.strokeRect(x + 1, y + 1, size - 2, size - 2);
      ctx.strokeStyle = colors.out;
      ctx.strokeRect(x - 1, y - 1, size + 2, size + 2);
    }
  }

  function all() {
    readColors();
    place();
    ctx.clearRect(0, 0, perRow * pitch, (bottom - top) * pitch);
    const end = Math.min(n, bottom * perRow);
    for (let i = top * perRow; i < end; i++) cell(i);
    if (sel >= 0) {  // its ring reaches into the cells around
      const r = Math.floor(sel / perRow);
      for (let dr = -1; dr <= 1; dr++) for (let dc = -1; dc <= 1; dc++) {
        const rr = r + dr, cc = (sel % perRow) + dc, j = rr * perRow + cc;
        if (rr >= 0 && cc >= 0 && cc < perRow && j < n && j !== sel) cell(j);
      }
      cell(sel);
    }
  }

  // Scrolls and theme switches redraw once per frame at most.
  let pending = 0;
  const later = () => { if (!pending) pending = requestAnimationFrame(() => { pending = 0; all(); }); };
  box.addEventListener("scroll", later, { passive: true });
  const theme = new MutationObserver(later);
  theme.observe(document.body, { attributes: true, attributeFilter: ["data-jp-theme-light", "data-jp-theme-name", "class"] });
  const resize = typeof ResizeObserver === "undefined" ? null : new ResizeObserver(() => {
    size_();
    later();  // attached, or resized: columns and colours may have changed
  });
  if (resize) resize.observe(box);

  function at(ev) {  // the item under the pointer, or -1
    const rect = canvas.getBoundingClientRect();
    const x = ev.clientX - rect.left, y = ev.clientY - rect.top;
    const col = Math.floor(x / pitch), r = top + Math.floor(y / pitch), i = r * perRow + col;
    if (x < 0 || col >= perRow || x - col * pitch >= size || y - (r - top) * pitch >= size) return -1;
    return i >= 0 && i < n ? i : -1;
  }
  canvas.addEventListener("mousemove", (ev) => {
    const i = at(ev);
    canvas.title = i < 0 ? "" : `item ${i}: ${(colors[codes[i]] || colors[113]).name}`;
  });

  readColors();
  size_();
  // Item i's letter is now c: drawn if it changed (and is in view). A redrawn cell next to
  // the selected one covers part of its ring: the caller redraws that last.
  let drew = false;
  function set(i, c) {
    if (codes[i] === c) return;
    codes[i] = c;
    const r = Math.floor(i / perRow);
    if (r >= top && r < bottom) { cell(i); drew = true; }
  }
  function ring() { if (drew && sel >= 0) cell(sel); drew = false; }

  return {
    canvas, codes, at,
    // The full string and the cumulative patch: only the letters that changed are drawn
    // (no full redraw: that would read the theme's colours and the box's size again).
    load(base, patch) {
      if (!ctx) {
        for (let i = 0; i < n; i++) codes[i] = base.charCodeAt(i) || 113;
        for (const k in patch) { const i = +k; if (i < n) codes[i] = patch[k].charCodeAt(0); }
        all();
        return;
      }
      const m = Math.min(n, base.length);
      for (let i = 0; i < m; i++) set(i, base.charCodeAt(i));
      for (const k in patch) { const i = +k; if (i < n) set(i, patch[k].charCodeAt(0)); }
      ring();
    },
    patch(patch) {  // only the cells whose letter changed
      if (!ctx) place();
      for (const k in patch) { const i = +k; if (i < n) set(i, patch[k].charCodeAt(0)); }
      ring();
    },
    select(i) { if (i !== sel) { sel = i; all(); } },
    dispose() { theme.disconnect(); if (resize) resize.disconnect(); if (pending) cancelAnimationFrame(pending); },
  };
}

function render({ model, el }) {
  const root = h("div", "mapnb-grid");
  const head = h("div", "mapnb-head");
  const title = h("span", "mapnb-title");
  const state = h("span", "mapnb-state");
  const clock = h("span", "mapnb-clock");
  const rate = h("span", "mapnb-rate");
  const eta = h("span", "mapnb-eta");
  const cancel = h("button", "mapnb-cancel", "Cancel");
  const retry = h("button", "mapnb-retry", "Retry failed");
  const runid = h("span", "mapnb-runid");
  head.append(title, state, clock, rate, eta, cancel, retry, runid);
  const bar = h("div", "mapnb-bar");
  const counts = h("div", "mapnb-counts");
  const colorby = h("label", "mapnb-colorby");
  const select = h("select");
  colorby.append("colour by ", select);
  const legend = h("span", "mapnb-legend");
  colorby.append(legend);
  const cellsBox = h("div", "mapnb-cells");
  // The colour bar: the ramp, ticks at round values, and what the scale is.
  const colorbar = h("div", "mapnb-colorbar");
  const barTitle = h("div", "mapnb-colorbar-title");
  const barRamp = h("div", "mapnb-colorbar-ramp");
  barRamp.style.background = `linear-gradient(to right, ${[0, 1, 2, 3, 4, 5, 6, 7, 8].map((k) => ramp(k / 8)).join(", ")})`;
  const barTicks = h("div", "mapnb-colorbar-ticks");
  colorbar.append(barTitle, barRamp, barTicks);
  const detail = h("div", "mapnb-detail");
  // The sweep views (sweep.js), for runs over two or more parameters; a pick shows the panel.
  const pick = (i) => { model.set("selected", i); model.save_changes(); };
  const sweep = mountSweep({ model, onPick: pick, colors: model.get("colors") });
  root.append(head, bar, counts, colorby, cellsBox, colorbar, sweep.el, detail);
  el.appendChild(root);

  let cells = [], shown = "", layoutKey = "", showValues = false;
  let big = null;  // canvasCells(), for a large plain run

  function layout() {
    const n = model.get("n"), sheet = model.get("sheet") || {};
    const key = `${n}|${JSON.stringify(sheet)}`;
    if (key === layoutKey) return;
    layoutKey = key;
    cellsBox.replaceChildren();
    if (big) { big.dispose(); big = null; }
    delete cellsBox.dataset.cells;
    cellsBox.classList.remove("canvas", "chunked");
    cells = new Array(n);
    shown = "";
    const size = n <= 400 ? 16 : n <= 2500 ? 10 : 6;
    root.style.setProperty("--mapnb-cell", `${size}px`);
    cellsBox.classList.toggle("sheet", !!(sheet.x && sheet.y));
    if (sheet.x && sheet.y) {
      const nx = sheet.x.labels.length, ny = sheet.y.labels.length;
      // Sweep cells are big enough to click and, up to 16 columns, to hold their value.
      const w = nx <= 16 ? 48 : 28;
      showValues = w >= 44;
      root.style.setProperty("--mapnb-cell-w", `${w}px`);
      root.style.setProperty("--mapnb-cell-h", "28px");
      const table = h("div", `mapnb-sheet${showValues ? "" : " narrow"}`);
      table.style.gridTemplateColumns = `auto repeat(${nx}, var(--mapnb-cell-w))`;
      const corner = h("div", "mapnb-axis-name", `${sheet.y.name} \u2193  ${sheet.x.name} \u2192`);
      table.appendChild(corner);
      for (const lab of sheet.x.labels) {
        const e = h("div", "mapnb-xlabel", lab);
        e.title = `${sheet.x.name} = ${lab}`;
        table.appendChild(e);
      }
      for (let y = 0; y < ny; y++) {
        const e = h("div", "mapnb-ylabel", sheet.y.labels[y]);
        e.title = `${sheet.y.name} = ${sheet.y.labels[y]}`;
        table.appendChild(e);
        for (let x = 0; x < nx; x++) {
          // A grown sweep (run.extend) says which item sits where; -1: no item there.
          const i = sheet.cells ? sheet.cells[y * nx + x] : y * nx + x;
          if (i == null || i < 0 || i >= n) { table.appendChild(h("div", "mapnb-cell-empty")); continue; }
          const c = h("div", "mapnb-cell");
          c.dataset.i = i;
          cells[i] = c;
          table.appendChild(c);
        }
      }
      cellsBox.appendChild(table);
    } else if (n > CANVAS_MIN) {
      showValues = false;
      root.style.removeProperty("--mapnb-cell-w");
      root.style.removeProperty("--mapnb-cell-h");
      cells = [];
      cellsBox.classList.add("canvas");
      big = canvasCells(root, cellsBox, n, size, model.get("colors") || {});
    } else {
      showValues = false;
      root.style.removeProperty("--mapnb-cell-w");
      root.style.removeProperty("--mapnb-cell-h");
      const frag = document.createDocumentFragment();
      // A large run's cells come in chunks the browser skips while they are scrolled out of
      // view (content-visibility): with 100,000 cells in one box every patch restyled them all.
      let box = frag;
      // Whole rows per chunk, so that rows run on across chunks (900 px wide until shown).
      const perRow = Math.max(1, Math.floor(((cellsBox.clientWidth || 900) + 1) / (size + 1)));
      const chunk = perRow * Math.ceil(CHUNK / perRow);
      for (let i = 0; i < n; i++) {
        if (n > CHUNKED && i % chunk === 0) box = frag.appendChild(h("div", "mapnb-chunk"));
        const c = h("div", "mapnb-cell");
        c.dataset.i = i;
        cells[i] = c;
        box.appendChild(c);
      }
      cellsBox.classList.toggle("chunked", n > CHUNKED);
      cellsBox.appendChild(frag);
    }
  }

  // Every item's status letter: the full string overlaid with the cumulative patch. Kept
  // between messages, so that a patch repaints only the cells it names (at 100,000 items
  // rebuilding and walking every cell per patch took seconds).
  let now = [];
  function codes() {
    const base = model.get("statuses") || "", patch = model.get("patch") || {};
    now = base.split("");
    for (const k in patch) now[+k] = patch[k];
    return now;
  }

  // The scale comes from the kernel (grid.nice_scale): round bounds that only widen.
  function paintColorbar(byHeat, field, scale) {
    colorbar.style.display = byHeat && scale.lo != null ? "" : "none";
    if (colorbar.style.display) return;
    const key = JSON.stringify([field, scale]);
    if (colorbar._key === key) return;
    colorbar._key = key;
    barTitle.replaceChildren(h("b", "", field));
    if (scale.was) {
      const note = h("span", "mapnb-legend widened",
        ` scale widened from ${short(scale.was[0])} \u2013 ${short(scale.was[1])} to ` +
        `${short(scale.lo)} \u2013 ${short(scale.hi)} as results arrived; earlier cells recoloured`);
      barTitle.append(note);
    }
    barTicks.replaceChildren();
    for (const t of scale.ticks || []) {
      const e = h("span", "mapnb-tick", short(t));
      e.style.left = `${(100 * (t - scale.lo)) / (scale.hi - scale.lo || 1)}%`;
      barTicks.appendChild(e);
    }
  }

  // What paintCell needs besides the item: set by paintCells for all cells at once.
  let paint = { heat: [], field: "", byHeat: false, lo: null, hi: null, sel: -1 };

  function paintCells() {
    layout();
    if (big) {  // no heatmap here: a plain run, not a sheet
      cellsBox.classList.remove("by-value");
      legend.textContent = "";
      paintColorbar(false);
      big.select(model.get("selected"));
      const base = model.get("statuses") || "", patch = model.get("patch") || {};
      if (base !== shown) { shown = base; big.load(base, patch); } else big.patch(patch);
      return;
    }
    codes();
    const heat = model.get("heat") || [], field = model.get("heat_field");
    const scale = model.get("heat_scale") || {};
    const byHeat = colorby.style.display !== "none" && select.value !== "" && heat.length === cells.length;
    paint = { heat, field, byHeat, lo: scale.lo, hi: scale.hi, sel: model.get("selected") };
    cellsBox.classList.toggle("by-value", byHeat);
    legend.textContent = byHeat && scale.lo == null ? " (no values yet)" : "";
    paintColorbar(byHeat, field, scale);
    for (let i = 0; i < cells.length; i++) paintCell(i);
  }

  // A patch: only the cells whose letter changed are repainted.
  function paintPatch() {
    if (big ? big.codes.length !== model.get("n") : cells.length !== model.get("n")) return paintCells();
    if (big) return big.patch(model.get("patch") || {});
    const patch = model.get("patch") || {};
    for (const k in patch) {
      const i = +k;
      if (now[i] === patch[k]) continue;
      now[i] = patch[k];
      if (i < cells.length) paintCell(i);
    }
  }

  function paintCell(i) {
    const { heat, field, byHeat, lo, hi, sel } = paint;
    const c = cells[i], code = now[i] || "q", name = NAMES[code];
    const v = byHeat && lo != null ? heat[i] : null;
    const key = `${code}${v}${i === sel}${lo}${hi}`;
    if (c._key === key) return;
    c._key = key;
    c.className = `mapnb-cell s-${name}${i === sel ? " selected" : ""}${v != null ? " heat" : ""}`;
    if (v != null) {
      const rgb = rampRGB(hi > lo ? (v - lo) / (hi - lo) : 0.5);
      c.style.background = `rgb(${rgb.join(",")})`;
      c.style.color = textOn(rgb);
      c.textContent = showValues ? short(v) : "";
    } else {
      c.style.background = c.style.color = "";
      c.textContent = "";
    }
    c.title = `item ${i}: ${name}${v != null ? `, ${field} = ${+v.toPrecision(6)}` : ""}`;
  }

  function paintHead() {
    const st = model.get("state"), c = model.get("counts") || {}, n = model.get("n");
    root.dataset.state = st;
    title.textContent = model.get("title");
    state.textContent = st;
    state.className = `mapnb-state st-${st}`;
    runid.textContent = `run ${model.get("run_id")} \u00b7 ${model.get("backend")} \u00b7 concurrency ${model.get("concurrency")}`;
    const r = model.get("rate"), e = model.get("eta");
    rate.textContent = r > 0 ? `${r >= 100 ? Math.round(r) : r.toFixed(1)} items/s` : "";
    eta.textContent = e != null ? `ETA ${seconds(e)}` : "";
    cancel.style.display = st === "running" ? "" : "none";
    retry.style.display = model.get("can_retry") ? "" : "none";
    bar.replaceChildren();
    counts.replaceChildren();
    for (const k of ORDER) {
      if (!c[k]) continue;
      const seg = h("div", `mapnb-seg s-${k}`);
      seg.style.width = `${(100 * c[k]) / Math.max(1, n)}%`;
      bar.appendChild(seg);
      counts.appendChild(h("span", `mapnb-chip s-${k}`, `${k} ${c[k]}`));
    }
    tick();
  }

  // The clock moves every half second while items run, between the kernel's messages
  // too: from the kernel's last reading of its own clock, plus the time since it arrived.
  let ranFor = model.get("running_for"), ranAt = performance.now();
  model.on("change:running_for", () => { ranFor = model.get("running_for"); ranAt = performance.now(); });
  function tick() {
    const done = model.get("elapsed");
    clock.textContent = seconds(done != null ? done : ranFor + (performance.now() - ranAt) / 1000);
  }

  function paintFields() {
    const fields = model.get("fields") || [], sheet = model.get("sheet") || {};
    colorby.style.display = sheet.x && fields.length ? "" : "none";
    const want = ["", ...fields].join("|");
    if (select._fields !== want) {
      select._fields = want;
      select.replaceChildren(h("option", "", "status"));
      select.firstChild.value = "";
      for (const f of fields) { const o = h("option", "", f); o.value = f; select.appendChild(o); }
    }
    select.value = model.get("heat_field") || "";
  }

  // A running item is in its attempt n+1 (attempts counts the finished ones).
  function attemptsText(d) {
    if (d.status === "running") return `attempt ${d.attempts + 1}`;
    if (!d.attempts) return "";
    return `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`;
  }

  function paintDetail() {
    const d = model.get("detail") || {};
    detail.replaceChildren();
    if (d.index == null) { detail.style.display = "none"; return; }
    detail.style.display = "";
    const top = h("div", "mapnb-detail-head");
    const close = h("button", "mapnb-close", "\u00d7");
    close.onclick = () => { model.set("selected", -1); model.save_changes(); };
    const timing = d.duration != null ? `took ${seconds(d.duration)}` : d.status === "running" ? "running" : "";
    top.append(h("b", "", `item ${d.index}`), h("span", `mapnb-chip s-${d.status}`, d.status),
      h("span", "mapnb-attempts", attemptsText(d)),
      h("span", "mapnb-timing", timing), close);
    const inputs = h("table", "mapnb-inputs");
    const section = (name, rows) => {
      const tr = h("tr");
      const th = h("th", "mapnb-section", name);
      th.colSpan = 2;
      tr.appendChild(th);
      inputs.appendChild(tr);
      for (const [k, v] of rows) {
        const r = h("tr");
        r.append(h("th", "", k), h("td", "", v));
        inputs.appendChild(r);
      }
    };
    section("inputs", d.inputs);
    if (d.output) section("output", d.output);
    detail.append(top, inputs);
    if (d.pruned) detail.append(h("div", "mapnb-pruned-why", d.pruned));
    const m = d.metrics || {};
    if (m.last && m.last.length) {
      // The reported metrics: last values, and a sparkline of the chosen one (an SVG the
      // kernel drew from numbers only, so it is safe to insert as markup).
      const box = h("div", "mapnb-metrics");
      box.append(h("span", "mapnb-log-title", "metrics "));
      for (const [k, v] of m.last) box.append(h("span", "mapnb-metric", `${k} `), h("b", "", `${v} `));
      if (m.spark) {
        const spark = h("div", "mapnb-spark-box");
        spark.title = `${m.chosen} over ${m.steps} steps`;
        spark.append(h("span", "mapnb-log-title", `${m.chosen} `));
        const pic = h("span");
        pic.innerHTML = m.spark;
        spark.append(pic);
        box.append(spark);
      }
      detail.append(box);
    }
    if (d.error) detail.append(h("pre", "mapnb-error", d.error));
    detail.append(h("div", "mapnb-log-title", "log"));
    const logBox = h("pre", "mapnb-log");
    if (d.log_dropped) logBox.appendChild(h("span", "mapnb-dropped", `\u2026 ${d.log_dropped} earlier characters: see run.logs(${d.index})\n`));
    for (const [stream, text] of d.log) logBox.appendChild(h("span", `mapnb-${stream}`, text));
    if (!d.log.length) logBox.appendChild(h("span", "mapnb-dropped", d.finished ? "(no output)" : "(no output yet)"));
    detail.append(logBox);
    logBox.scrollTop = logBox.scrollHeight;
  }

  cellsBox.addEventListener("click", (ev) => {
    const i = big && ev.target === big.canvas ? (big.at(ev) < 0 ? undefined : big.at(ev)) : ev.target?.dataset?.i;
    if (i === undefined) return;
    model.set("selected", model.get("selected") === +i ? -1 : +i);
    model.save_changes();
  });
  cancel.onclick = () => model.send({ action: "cancel" });
  retry.onclick = () => model.send({ action: "retry_failed" });
  select.onchange = () => { model.set("heat_field", select.value); model.save_changes(); paintCells(); };

  const onCells = () => paintCells();
  // A message changes several of these at once: one paint, after its last change.
  let headQueued = false;
  const onHead = () => {
    if (headQueued) return;
    headQueued = true;
    queueMicrotask(() => { headQueued = false; paintHead(); });
  };
  const onFields = () => { paintFields(); paintCells(); };
  const onDetail = () => { paintDetail(); paintCells(); };
  model.on("change:statuses", onCells);
  model.on("change:patch", () => paintPatch());
  model.on("change:heat", onCells);
  model.on("change:heat_scale", onCells);
  model.on("change:selected", onCells);
  for (const k of ["state", "counts", "rate", "eta", "elapsed", "can_retry"]) model.on(`change:${k}`, onHead);
  model.on("change:fields", onFields);
  model.on("change:heat_field", onFields);
  model.on("change:detail", onDetail);
  paintHead(); paintFields(); paintCells(); paintDetail();
  const timer = setInterval(tick, 500);
  return () => { clearInterval(timer); sweep.dispose(); if (big) big.dispose(); };
}

export default { render };

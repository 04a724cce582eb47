// The live grid's front end (anywidget). State comes from mapnb/grid.py's GridModel:
// `statuses` (one letter per item) overlaid with `patch` (index -> letter) is the status
// of every item; `detail` describes the selected item, whose log the kernel streams.
const NAMES = { q: "queued", r: "running", t: "retrying", s: "succeeded", f: "failed",
                c: "cached", a: "aborted", x: "cancelled" };
const ORDER = ["succeeded", "cached", "failed", "aborted", "cancelled", "retrying", "running", "queued"];

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

// A perceptual ramp (viridis, 5 stops) for the heatmap.
const RAMP = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function ramp(t) {
  t = Math.min(1, Math.max(0, t)) * (RAMP.length - 1);
  const k = Math.min(RAMP.length - 2, Math.floor(t)), f = t - k, a = RAMP[k], b = RAMP[k + 1];
  return `rgb(${a.map((v, j) => Math.round(v + f * (b[j] - v))).join(",")})`;
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
  const detail = h("div", "mapnb-detail");
  root.append(head, bar, counts, colorby, cellsBox, detail);
  el.appendChild(root);

  let cells = [], shown = "", layoutKey = "";

  function layout() {
    const n = model.get("n"), sheet = model.get("sheet") || {};
    const key = `${n}|${JSON.stringify(sheet)}`;
    if (key === layoutKey) return;
    layoutKey = key;
    cellsBox.replaceChildren();
    cells = new Array(n);
    shown = "";
    const size = n <= 400 ? 16 : n <= 2500 ? 10 : 6;
    root.style.setProperty("--mapnb-cell", `${size}px`);
    if (sheet.x && sheet.y) {
      const nx = sheet.x.labels.length, ny = sheet.y.labels.length;
      const table = h("div", "mapnb-sheet");
      table.style.gridTemplateColumns = `auto repeat(${nx}, var(--mapnb-cell))`;
      const corner = h("div", "mapnb-axis-name", `${sheet.y.name} \u2193 ${sheet.x.name} \u2192`);
      table.appendChild(corner);
      for (const lab of sheet.x.labels) table.appendChild(h("div", "mapnb-xlabel", lab));
      for (let y = 0; y < ny; y++) {
        table.appendChild(h("div", "mapnb-ylabel", sheet.y.labels[y]));
        for (let x = 0; x < nx; x++) {
          const c = h("div", "mapnb-cell");
          c.dataset.i = y * nx + x;
          cells[y * nx + x] = c;
          table.appendChild(c);
        }
      }
      cellsBox.appendChild(table);
    } else {
      const frag = document.createDocumentFragment();
      for (let i = 0; i < n; i++) {
        const c = h("div", "mapnb-cell");
        c.dataset.i = i;
        cells[i] = c;
        frag.appendChild(c);
      }
      cellsBox.appendChild(frag);
    }
  }

  function codes() {
    const base = model.get("statuses") || "", patch = model.get("patch") || {};
    const out = base.split("");
    for (const k in patch) out[+k] = patch[k];
    return out;
  }

  function paintCells() {
    layout();
    const now = codes(), heat = model.get("heat") || [], field = model.get("heat_field");
    const byHeat = colorby.style.display !== "none" && select.value !== "" && heat.length === cells.length;
    let lo = Infinity, hi = -Infinity;
    if (byHeat) for (const v of heat) if (v != null) { lo = Math.min(lo, v); hi = Math.max(hi, v); }
    legend.textContent = byHeat && lo <= hi ? ` ${field}: ${+lo.toPrecision(4)} \u2026 ${+hi.toPrecision(4)}` : "";
    const sel = model.get("selected");
    for (let i = 0; i < cells.length; i++) {
      const c = cells[i], code = now[i] || "q", name = NAMES[code];
      const v = byHeat ? heat[i] : null;
      const key = `${code}${v}${i === sel}`;
      if (c._key === key) continue;
      c._key = key;
      c.className = `mapnb-cell s-${name}${i === sel ? " selected" : ""}${v != null ? " heat" : ""}`;
      c.style.background = v != null ? ramp(hi > lo ? (v - lo) / (hi - lo) : 0.5) : "";
      c.title = `item ${i}: ${name}${v != null ? `, ${field} = ${+v.toPrecision(6)}` : ""}`;
    }
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

  function tick() {
    const done = model.get("elapsed");
    clock.textContent = seconds(done != null ? done : Date.now() / 1000 - model.get("started"));
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

  function paintDetail() {
    const d = model.get("detail") || {};
    detail.replaceChildren();
    if (d.index == null) { detail.style.display = "none"; return; }
    detail.style.display = "";
    const top = h("div", "mapnb-detail-head");
    const close = h("button", "mapnb-close", "\u00d7");
    close.onclick = () => { model.set("selected", -1); model.save_changes(); };
    top.append(h("b", "", `item ${d.index}`), h("span", `mapnb-chip s-${d.status}`, d.status),
      h("span", "", `${d.attempts} attempt${d.attempts === 1 ? "" : "s"}`),
      h("span", "", d.duration != null ? seconds(d.duration) : ""), close);
    const inputs = h("table", "mapnb-inputs");
    for (const [k, v] of d.inputs) {
      const tr = h("tr");
      tr.append(h("th", "", k), h("td", "", v));
      inputs.appendChild(tr);
    }
    detail.append(top, inputs);
    if (d.error) detail.append(h("pre", "mapnb-error", d.error));
    const logBox = h("pre", "mapnb-log");
    if (d.log_dropped) logBox.appendChild(h("span", "mapnb-dropped", `\u2026 ${d.log_dropped} earlier characters: see run.logs(${d.index})\n`));
    for (const [stream, text] of d.log) logBox.appendChild(h("span", `mapnb-${stream}`, text));
    if (!d.log.length) logBox.appendChild(h("span", "mapnb-dropped", "(no output yet)"));
    detail.append(logBox);
    logBox.scrollTop = logBox.scrollHeight;
  }

  cellsBox.addEventListener("click", (ev) => {
    const i = ev.target?.dataset?.i;
    if (i === undefined) return;
    model.set("selected", model.get("selected") === +i ? -1 : +i);
    model.save_changes();
  });
  cancel.onclick = () => model.send({ action: "cancel" });
  retry.onclick = () => model.send({ action: "retry_failed" });
  select.onchange = () => { model.set("heat_field", select.value); model.save_changes(); paintCells(); };

  const onCells = () => paintCells();
  const onHead = () => paintHead();
  const onFields = () => { paintFields(); paintCells(); };
  const onDetail = () => { paintDetail(); paintCells(); };
  model.on("change:statuses", onCells);
  model.on("change:patch", onCells);
  model.on("change:heat", onCells);
  model.on("change:selected", onCells);
  for (const k of ["state", "counts", "rate", "eta", "elapsed", "can_retry"]) model.on(`change:${k}`, onHead);
  model.on("change:fields", onFields);
  model.on("change:heat_field", onFields);
  model.on("change:detail", onDetail);
  paintHead(); paintFields(); paintCells(); paintDetail();
  const timer = setInterval(tick, 500);
  return () => clearInterval(timer);
}

export default { render };

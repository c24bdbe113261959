// ember's report charts: small SVG charts drawn from the JSON in #ember-data, no library, no
// network. Each <figure data-chart="ID"> gets its chart; when all are drawn, <body> carries
// data-rendered (charts drawn), data-errors (errors seen) and data-overflow (1 if the page is
// wider than the window), which the browser tests read.
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  const DATA = JSON.parse(document.getElementById("ember-data").textContent);
  const errors = window.__emberErrors || [];

  function el(tag, attrs, parent) {
    const node = document.createElementNS(NS, tag);
    for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(node);
    return node;
  }
  // Numbers only: a string from a damaged or hostile file shows as "–", never as markup.
  function fmt(v) {
    if (typeof v !== "number" || !isFinite(v)) return "–";
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
    return String(+v.toPrecision(4));
  }
  // Ticks at 1, 2, 5 x 10^k spanning [lo, hi].
  function ticks(lo, hi, n) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / Math.max(n, 1), mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 5, 10].map(m => m * mag).find(s => s >= raw);
    const out = [];
    for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
    return out;
  }
  function scale(d0, d1, r0, r1, log) {
    const f = log ? Math.log10 : (v => v);
    const a = f(d0), b = f(d1), k = b === a ? 0 : (r1 - r0) / (b - a);
    return v => r0 + (f(v) - a) * k;
  }
  function extent(values) {
    let lo = Infinity, hi = -Infinity;
    for (const v of values) if (v !== null && isFinite(v)) { if (v < lo) lo = v; if (v > hi) hi = v; }
    if (lo === Infinity) return [0, 1];
    if (lo === hi) { const d = Math.abs(lo) * 0.05 || 1; return [lo - d, hi + d]; }
    return [lo, hi];
  }

  // A tooltip shared by every chart: one absolutely positioned box.
  const tip = document.createElement("div");
  tip.className = "tip";
  document.body.appendChild(tip);
  function showTip(evt, html) {
    tip.innerHTML = html;
    tip.style.display = "block";
    const w = tip.offsetWidth, h = tip.offsetHeight;
    let x = evt.pageX + 14, y = evt.pageY + 14;
    if (x + w > window.scrollX + document.documentElement.clientWidth - 4) x = evt.pageX - w - 14;
    if (x < window.scrollX + 4) x = window.scrollX + 4;
    if (y + h > window.scrollY + window.innerHeight - 4) y = evt.pageY - h - 14;
    tip.style.left = x + "px";
    tip.style.top = y + "px";
  }
  function hideTip() { tip.style.display = "none"; }
  // Everything a tooltip or legend shows that came from a run's files goes through esc (a name,
  // an epoch): innerHTML would run the markup of a crafted metrics.jsonl.
  function esc(s) { return String(s).replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]); }
  // A series' colour lands in a style attribute: only a #hex colour, else the palette's.
  function colorOf(s, i) {
    if (typeof s.color === "string" && /^#[0-9a-fA-F]{3,8}$/.test(s.color)) return s.color;
    const k = Number.isInteger(s.colorIndex) ? s.colorIndex : i;
    return COLORS[((k % COLORS.length) + COLORS.length) % COLORS.length];
  }

  // The frame every xy chart shares: size from the figure's width, margins, axes, grid, labels.
  function frame(fig, spec, xd, yd, opts) {
    const width = Math.max(220, Math.floor(fig.clientWidth || 480));
    const height = spec.height || Math.round(Math.min(320, Math.max(170, width * 0.6)));
    const ny = Math.max(2, Math.floor(height / 55));
    const yt = opts.logy ? logTicks(yd, ny) : ticks(yd[0], yd[1], ny);
    // The left margin fits the longest y tick label and the axis title beside it.
    const longest = Math.max(...yt.map(t => fmt(t).length));
    const m = { l: Math.round(6.5 * longest) + (spec.ylabel ? 26 : 10), r: 18, t: 8, b: spec.xlabel ? 38 : 22 };
    const svg = el("svg", { width: width, height: height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": spec.title || "chart" });
    const x = scale(xd[0], xd[1], m.l, width - m.r, opts.logx);
    const y = scale(yd[0], yd[1], height - m.b, m.t, opts.logy);
    const g = el("g", { class: "axes" }, svg);
    const nx = Math.max(2, Math.floor((width - m.l) / 90));
    let xt = opts.xticks || ticks(xd[0], xd[1], nx);
    if (opts.xint) {  // steps and trials are whole numbers
      const whole = xt.filter(t => Number.isInteger(t));
      xt = whole.length ? whole : [Math.round((xd[0] + xd[1]) / 2)];
    }
    for (const t of yt) {
      const py = y(t);
      if (py < m.t - 1 || py > height - m.b + 1) continue;
      el("line", { x1: m.l, x2: width - m.r, y1: py, y2: py, class: "grid" }, g);
      el("text", { x: m.l - 6, y: py + 4, "text-anchor": "end" }, g).textContent = fmt(t);
    }
    for (const t of xt) {
      const px = x(t);
      if (px < m.l - 1 || px > width - m.r + 1) continue;
      el("line", { x1: px, x2: px, y1: height - m.b, y2: height - m.b + 4, class: "tick" }, g);
      el("text", { x: px, y: height - m.b + 16, "text-anchor": "middle" }, g).textContent = opts.xlabelOf ? opts.xlabelOf(t) : fmt(t);
    }
    el("rect", { x: m.l, y: m.t, width: width - m.l - m.r, height: height - m.t - m.b, class: "plot" }, g);
    if (spec.xlabel) el("text", { x: (m.l + width - m.r) / 2, y: height - 4, "text-anchor": "middle", class: "label" }, g).textContent = spec.xlabel;
    if (spec.ylabel) el("text", { x: 12, y: (m.t + height - m.b) / 2, "text-anchor": "middle", class: "label", transform: `rotate(-90 12 ${(m.t + height - m.b) / 2})` }, g).textContent = spec.ylabel;
    return { svg, x, y, m, width, height };
  }
  function logTicks(yd, n) {
    const out = [];
    for (let e = Math.floor(Math.log10(yd[0])); e <= Math.ceil(Math.log10(yd[1])); e++) {
      for (const k of [1, 2, 5]) { const v = k * Math.pow(10, e); if (v >= yd[0] && v <= yd[1]) out.push(v); }
    }
    // Less than a decade: ordinary ticks, placed on the log axis.
    return out.length >= 3 ? out : ticks(yd[0], yd[1], n).filter(v => v > 0);
  }

  function nearest(points, xv) {  // index of the point whose x is closest (points sorted by x)
    let lo = 0, hi = points.length - 1;
    while (hi - lo > 1) { const mid = (lo + hi) >> 1; if (points[mid][0] < xv) lo = mid; else hi = mid; }
    return Math.abs(points[lo][0] - xv) <= Math.abs(points[hi][0] - xv) ? lo : hi;
  }

  // Line chart: several series of [x, y, epoch?] points; hover shows every series at the nearest
  // x; the legend hides and shows series; "log" switches the y axis when all values are positive.
  function line(fig, spec) {
    const state = fig.__state || (fig.__state = { hidden: {}, logy: spec.logy ? null : false });
    const series = spec.series.filter(s => s.points.length);
    if (state.logy === null) {  // by default log only where the values span more than 20x
      const v = series.flatMap(s => s.points.map(p => p[1])).filter(y => y !== null && isFinite(y));
      state.logy = v.length > 0 && Math.min(...v) > 0 && Math.max(...v) / Math.min(...v) > 20;
    }
    const visible = series.filter(s => !state.hidden[s.name]);
    const all = (visible.length ? visible : series).flatMap(s => s.points);
    const canLog = all.length > 0 && all.every(p => p[1] > 0);
    const logy = state.logy && canLog;
    const xd = extent(all.map(p => p[0]));
    let yd = extent(all.map(p => p[1]));
    if (logy) yd = [yd[0] / 1.1, yd[1] * 1.1];
    else { const pad = (yd[1] - yd[0]) * 0.05; yd = [yd[0] - pad, yd[1] + pad]; }
    const f = frame(fig, spec, xd, yd, { logy: logy, xint: true });
    const { svg, x, y } = f;
    series.forEach((s, i) => {
      if (state.hidden[s.name]) return;
      const color = colorOf(s, i);
      const d = s.points.filter(p => p[1] !== null && isFinite(p[1])).map((p, k) => (k ? "L" : "M") + x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join("");
      if (!s.markers) el("path", { d: d, class: "series", stroke: color, "stroke-dasharray": s.dash ? "5 3" : "none" }, svg);
      if ((s.points.length <= 40 || s.markers) && !spec.compact) for (const p of s.points) if (p[1] !== null && isFinite(p[1])) el("circle", { cx: x(p[0]), cy: y(p[1]), r: 2.5, fill: color, class: "dot" }, svg);
    });
    const guide = el("line", { y1: f.m.t, y2: f.height - f.m.b, class: "guide", visibility: "hidden" }, svg);
    const hit = el("rect", { x: f.m.l, y: f.m.t, width: f.width - f.m.l - f.m.r, height: f.height - f.m.t - f.m.b, class: "hit" }, svg);
    hit.addEventListener("pointermove", evt => {
      const box = svg.getBoundingClientRect();
      const px = evt.clientX - box.left, xv = xd[0] + (px - f.m.l) / (f.width - f.m.l - f.m.r) * (xd[1] - xd[0]);
      let rows = "", at = null;
      series.forEach((s, i) => {
        if (state.hidden[s.name]) return;
        const p = s.points[nearest(s.points, xv)];
        if (at === null) at = p;
        const color = colorOf(s, i);
        const epoch = p[2] !== undefined && p[2] !== null ? ` <small>epoch ${esc(p[2])}</small>` : "";
        rows += `<div><span class="sw" style="background:${color}"></span>${esc(s.name)}: <b>${fmt(p[1])}</b>${epoch}${p[0] !== at[0] ? ` <small>@${fmt(p[0])}</small>` : ""}</div>`;
      });
      if (at === null) return;
      guide.setAttribute("x1", x(at[0])); guide.setAttribute("x2", x(at[0])); guide.setAttribute("visibility", "visible");
      showTip(evt, `<div class="tt">${esc(spec.xlabel || "x")} ${fmt(at[0])}</div>${rows}`);
    });
    hit.addEventListener("pointerleave", () => { guide.setAttribute("visibility", "hidden"); hideTip(); });
    const legend = document.createElement("div");
    legend.className = "legend";
    series.forEach((s, i) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = state.hidden[s.name] ? "off" : "";
      const color = colorOf(s, i);
      b.innerHTML = `<span class="sw${s.dash ? " dash" : ""}" style="background:${color}"></span>${esc(s.name)}`;
      b.title = "show or hide " + s.name;
      b.addEventListener("click", () => { state.hidden[s.name] = !state.hidden[s.name]; draw(fig); });
      legend.appendChild(b);
    });
    if (canLog) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "log" + (logy ? " on" : "");
      b.textContent = "log y";
      b.title = "logarithmic y axis";
      b.addEventListener("click", () => { state.logy = !logy; draw(fig); });
      legend.appendChild(b);
    }
    return [svg, spec.compact ? null : legend];
  }

  // Heatmap (confusion matrix): rows true class, columns predicted; colour by the row share.
  function heatmap(fig, spec) {
    const state = fig.__state || (fig.__state = { share: true });
    const k = spec.labels.length, z = spec.values;
    const rowSum = z.map(r => r.reduce((a, b) => a + b, 0) || 1);
    const width = Math.max(220, Math.floor(fig.clientWidth || 480));
    const longest = Math.min(12, Math.max(...spec.labels.map(l => String(l).length)));
    const rotate = longest > 3;  // short names stand upright above the columns
    const left = 30 + 7 * longest, top = rotate ? 14 + 5 * longest : 22;
    const cell = Math.max(6, Math.min(44, Math.floor((width - left - 8) / k)));
    const size = left + cell * k + 8, height = top + cell * k + 28;
    const svg = el("svg", { width: size, height: height, viewBox: `0 0 ${size} ${height}`, role: "img", "aria-label": spec.title });
    const g = el("g", {}, svg);
    const showText = cell >= 20, zmax = Math.max(1, ...z.flat());
    for (let i = 0; i < k; i++) {
      for (let j = 0; j < k; j++) {
        const share = z[i][j] / rowSum[i], v = state.share ? share : z[i][j] / zmax;
        const fill = `rgba(${i === j ? "31,119,180" : "214,39,40"},${(0.06 + 0.94 * v).toFixed(3)})`;
        const r = el("rect", { x: left + j * cell, y: top + i * cell, width: cell - 1, height: cell - 1, fill: fill, class: "cell" }, g);
        r.addEventListener("pointermove", evt => showTip(evt, `true <b>${esc(spec.labels[i])}</b>, predicted <b>${esc(spec.labels[j])}</b><br>${esc(z[i][j])} samples, ${(100 * share).toFixed(1)}% of the row`));
        r.addEventListener("pointerleave", hideTip);
        if (showText && z[i][j]) el("text", { x: left + j * cell + cell / 2, y: top + i * cell + cell / 2 + 4, "text-anchor": "middle", class: v > 0.55 ? "cnt light" : "cnt" }, g).textContent = state.share ? Math.round(100 * share) : z[i][j];
      }
      const every = Math.ceil(12 / cell);
      if (i % every === 0) {
        el("text", { x: left - 4, y: top + i * cell + cell / 2 + 4, "text-anchor": "end" }, g).textContent = String(spec.labels[i]).slice(0, 12);
        const cx = left + i * cell + cell / 2;
        el("text", rotate ? { x: cx, y: top - 4, transform: `rotate(-60 ${cx} ${top - 4})` } : { x: cx, y: top - 6, "text-anchor": "middle" }, g).textContent = String(spec.labels[i]).slice(0, 12);
      }
    }
    el("text", { x: left + (cell * k) / 2, y: height - 6, "text-anchor": "middle", class: "label" }, g).textContent = "predicted class";
    const cy = top + (cell * k) / 2;
    el("text", { x: 12, y: cy, "text-anchor": "middle", class: "label", transform: `rotate(-90 12 ${cy})` }, g).textContent = "true class";
    const legend = document.createElement("div");
    legend.className = "legend";
    const b = document.createElement("button");
    b.type = "button";
    b.textContent = state.share ? "show counts" : "show row %";
    b.addEventListener("click", () => { state.share = !state.share; draw(fig); });
    legend.appendChild(b);
    return [svg, legend];
  }

  // Grouped bars over categories (per-class precision and recall), or a histogram when
  // spec.edges is given (bars between consecutive edges).
  function bars(fig, spec) {
    const hist = !!spec.edges;
    const cats = hist ? spec.edges.slice(0, -1) : spec.labels;
    const series = spec.series;
    const ymax = spec.ymax || Math.max(1e-12, ...series.flatMap(s => s.values));
    const xd = hist ? [spec.edges[0], spec.edges[spec.edges.length - 1]] : [0, cats.length];
    const f = frame(fig, spec, xd, [0, ymax * (spec.ymax ? 1 : 1.05)], hist ? {} : { xticks: cats.map((_, i) => i + 0.5), xlabelOf: t => String(cats[Math.floor(t)]).slice(0, 8) });
    const { svg, x, y } = f;
    cats.forEach((c, i) => {
      const x0 = hist ? x(spec.edges[i]) : x(i) + 2, x1 = hist ? x(spec.edges[i + 1]) : x(i + 1) - 2;
      const w = (x1 - x0) / series.length;
      series.forEach((s, j) => {
        const v = s.values[i];
        const r = el("rect", { x: x0 + j * w, y: y(v), width: Math.max(1, w - (hist ? 0.5 : 1)), height: Math.max(0, y(0) - y(v)), fill: COLORS[j % COLORS.length], class: "bar" }, svg);
        const what = hist ? `${fmt(spec.edges[i])} to ${fmt(spec.edges[i + 1])}` : esc(c);
        r.addEventListener("pointermove", evt => showTip(evt, `${what}<br>${esc(s.name)}: <b>${fmt(v)}</b>`));
        r.addEventListener("pointerleave", hideTip);
      });
    });
    const legend = document.createElement("div");
    legend.className = "legend";
    if (series.length > 1) series.forEach((s, j) => {
      const span = document.createElement("span");
      span.innerHTML = `<span class="sw" style="background:${COLORS[j % COLORS.length]}"></span>${esc(s.name)}`;
      legend.appendChild(span);
    });
    return [svg, legend];
  }

  // Scatter of predicted against true values, with the y = x line.
  function scatter(fig, spec) {
    const pts = spec.points;
    const d = extent(pts.flatMap(p => [p[0], p[1]]));
    const f = frame(fig, spec, d, d, {});
    const { svg, x, y } = f;
    el("line", { x1: x(d[0]), y1: y(d[0]), x2: x(d[1]), y2: y(d[1]), class: "diag" }, svg);
    for (const p of pts) el("circle", { cx: x(p[0]).toFixed(1), cy: y(p[1]).toFixed(1), r: 2.2, class: "pt" }, svg);
    const hit = el("rect", { x: f.m.l, y: f.m.t, width: f.width - f.m.l - f.m.r, height: f.height - f.m.t - f.m.b, class: "hit" }, svg);
    const mark = el("circle", { r: 5, class: "mark", visibility: "hidden" }, svg);
    hit.addEventListener("pointermove", evt => {
      const box = svg.getBoundingClientRect(), px = evt.clientX - box.left, py = evt.clientY - box.top;
      let best = -1, bd = Infinity;
      pts.forEach((p, i) => { const dd = (x(p[0]) - px) ** 2 + (y(p[1]) - py) ** 2; if (dd < bd) { bd = dd; best = i; } });
      if (best < 0 || bd > 400) { mark.setAttribute("visibility", "hidden"); hideTip(); return; }
      const p = pts[best];
      mark.setAttribute("cx", x(p[0])); mark.setAttribute("cy", y(p[1])); mark.setAttribute("visibility", "visible");
      showTip(evt, `true <b>${fmt(p[0])}</b><br>predicted <b>${fmt(p[1])}</b><br>residual ${fmt(p[1] - p[0])}`);
    });
    hit.addEventListener("pointerleave", () => { mark.setAttribute("visibility", "hidden"); hideTip(); });
    return [svg, null];
  }

  // Parallel coordinates (a study's trials): one vertical axis per parameter and one for the
  // metric; each trial a line, coloured from best (dark) to worst (light). Categorical axes
  // space their choices evenly; `log` axes are logarithmic.
  function parallel(fig, spec) {
    const axes = spec.axes, rows = spec.rows;
    const width = Math.max(220, Math.floor(fig.clientWidth || 480)), height = spec.height || 300;
    const m = { l: 30, r: 40, t: 24, b: 42 };
    const svg = el("svg", { width: width, height: height, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": spec.title || "parallel coordinates" });
    const step = (width - m.l - m.r) / Math.max(1, axes.length - 1);
    const scales = axes.map(a => {
      if (a.choices) return v => height - m.b - (a.choices.indexOf(String(v)) + 0.5) / a.choices.length * (height - m.t - m.b);
      const vals = rows.map(r => r[a.key]).filter(v => v !== null && isFinite(v) && (!a.log || v > 0));
      const [lo, hi] = extent(vals);
      return scale(lo, hi, height - m.b, m.t, a.log && lo > 0);
    });
    const metric = rows.map(r => r[spec.metric]).filter(v => v !== null && isFinite(v));
    const [lo, hi] = extent(metric);
    const rank = v => (hi === lo ? 0 : (spec.maximize ? (hi - v) : (v - lo)) / (hi - lo));
    const ordered = rows.slice().sort((a, b) => rank(b[spec.metric]) - rank(a[spec.metric]));  // best drawn last, on top
    for (const r of ordered) {
      const t = rank(r[spec.metric]);
      const pts = axes.map((a, i) => [m.l + i * step, scales[i](r[a.key])]).filter(p => isFinite(p[1]));
      const path = el("path", { d: pts.map((p, k) => (k ? "L" : "M") + p[0].toFixed(1) + "," + p[1].toFixed(1)).join(""), class: "series pc", stroke: `hsl(${210 - 170 * t}, 70%, ${30 + 40 * t}%)` }, svg);
      path.addEventListener("pointermove", evt => showTip(evt, `trial <b>${esc(r.trial)}</b><br>` + axes.map(a => `${esc(a.key)}: <b>${a.choices ? esc(r[a.key]) : fmt(r[a.key])}</b>`).join("<br>")));
      path.addEventListener("pointerleave", hideTip);
    }
    axes.forEach((a, i) => {
      const ax = m.l + i * step;
      el("line", { x1: ax, x2: ax, y1: m.t, y2: height - m.b, class: "tick" }, svg);
      el("text", { x: ax, y: height - 6, "text-anchor": i === 0 ? "start" : i === axes.length - 1 ? "end" : "middle", class: "label" }, svg).textContent = a.key.split(".").pop();
      const labels = a.choices ? a.choices : null;
      if (labels) labels.forEach(c => { el("text", { x: ax + 3, y: scales[i](c) + 4 }, svg).textContent = String(c).slice(0, 10); });
      else {
        const vals = rows.map(r => r[a.key]).filter(v => v !== null && isFinite(v));
        const [vlo, vhi] = extent(vals);
        const anchor = i === axes.length - 1 ? "end" : "start", dx = i === axes.length - 1 ? -3 : 3;
        el("text", { x: ax + dx, y: m.t - 6, "text-anchor": anchor }, svg).textContent = fmt(vhi);
        el("text", { x: ax + dx, y: height - m.b + 14, "text-anchor": anchor }, svg).textContent = fmt(vlo);
      }
    });
    return [svg, null];
  }

  const KINDS = { line: line, heatmap: heatmap, bars: bars, scatter: scatter, parallel: parallel };

  function draw(fig) {
    const spec = DATA.charts[fig.dataset.chart];
    const body = fig.querySelector(".chart-body");
    body.textContent = "";
    try {
      if (!spec) throw new Error("no data for chart " + fig.dataset.chart);
      const [svg, legend] = KINDS[spec.type](body, spec);
      body.appendChild(svg);
      if (legend) body.appendChild(legend);
      fig.dataset.rendered = "1";
    } catch (e) {
      fig.dataset.rendered = "0";
      body.textContent = "This chart could not be drawn: " + e.message;
      errors.push(String(e && e.stack || e));
    }
  }

  // Sortable tables: click a header to sort by that column (numbers as numbers).
  function sortable(table) {
    table.querySelectorAll("th").forEach((th, col) => {
      th.addEventListener("click", () => {
        const rows = Array.from(table.tBodies[0].rows);
        const dir = th.dataset.dir === "asc" ? -1 : 1;
        table.querySelectorAll("th").forEach(h => delete h.dataset.dir);
        th.dataset.dir = dir === 1 ? "asc" : "desc";
        const key = r => { const c = r.cells[col]; const v = c ? (c.dataset.v !== undefined ? c.dataset.v : c.textContent) : ""; const n = parseFloat(v); return isNaN(n) ? v : n; };
        rows.sort((a, b) => { const p = key(a), q = key(b); if (p === q) return 0; if (p === "" || p === "–") return 1; if (q === "" || q === "–") return -1; return (p < q ? -1 : 1) * dir; });
        rows.forEach(r => table.tBodies[0].appendChild(r));
      });
    });
  }

  function drawAll() {
    const figs = document.querySelectorAll("figure[data-chart]");
    figs.forEach(draw);
    document.body.dataset.rendered = String(document.querySelectorAll('figure[data-rendered="1"]').length);
    document.body.dataset.charts = String(figs.length);
    document.body.dataset.errors = String(errors.length);
    document.body.dataset.overflow = document.documentElement.scrollWidth > window.innerWidth + 1 ? "1" : "0";
    document.body.dataset.height = String(document.documentElement.scrollHeight);
    if (errors.length) document.body.dataset.errorText = errors.join(" | ").slice(0, 2000);
  }

  document.querySelectorAll("table.sortable").forEach(sortable);
  drawAll();
  let pending = null, lastWidth = window.innerWidth;
  window.addEventListener("resize", () => {
    if (window.innerWidth === lastWidth) return;
    lastWidth = window.innerWidth;
    clearTimeout(pending);
    pending = setTimeout(drawAll, 150);
  });
})();

"""The page template, stylesheet and script of attnkit's HTML views.

Kept as Python strings (not package data files) so that the views work from
any install, and so that every page carries all it needs inline: no network,
no CDN. The script reads ``window.ATTNKIT_DATA`` (built by
``attnkit.viz.views``) and draws on canvases only. It exposes
``window.attnkit`` for tests and tools: ``ready``, ``loadMs`` (script start
to first picture), ``drawMs`` (the last head-view redraw), ``lines``
(segments of the last head-view draw), ``hover`` (the hovered token or cell),
``open`` (the enlarged model-view map) and ``geom`` (where the canvas draws).
"""

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
<header><h1 id="title">{title}</h1><div id="controls"></div></header>
<main id="app"></main>
<div id="tip" hidden></div>
<script>window.ATTNKIT_DATA = {data};</script>
<script>{js}</script>
</body>
</html>
"""

CSS = """
body { font: 13px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif;
  margin: 12px; color: #222; background: #fff; }
h1 { font-size: 15px; margin: 0 0 6px 0; font-weight: 600; }
#controls { display: flex; flex-wrap: wrap; gap: 6px 14px; align-items: center;
  margin-bottom: 8px; }
#controls label { white-space: nowrap; cursor: pointer; user-select: none; }
.swatch { display: inline-block; width: 10px; height: 10px; border-radius: 2px;
  margin-right: 3px; vertical-align: -1px; }
canvas { display: block; }
#tip { position: fixed; pointer-events: none; background: rgba(30,30,30,.92);
  color: #fff; padding: 3px 7px; border-radius: 4px; font-size: 12px;
  white-space: pre; z-index: 10; }
.grid { display: grid; gap: 4px; align-items: center; }
.grid .rowname { font-size: 11px; text-align: right; padding-right: 4px;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.grid .colname { font-size: 11px; text-align: center; }
.grid canvas { cursor: zoom-in; outline: 1px solid #ddd; image-rendering: pixelated; }
.grid canvas:hover { outline: 2px solid #333; }
#overlay { position: fixed; inset: 0; background: rgba(255,255,255,.96);
  display: flex; flex-direction: column; align-items: center; justify-content: center;
  z-index: 5; }
#overlay[hidden] { display: none; }
#overlay .caption { margin: 6px; font-weight: 600; }
#overlay button { margin: 6px; }
.note { color: #666; font-size: 12px; margin-top: 6px; }
"""

JS = r"""
(function () {
"use strict";
const D = window.ATTNKIT_DATA;
const T0 = performance.now();
const api = { ready: false, drawMs: null, lines: 0, hover: null, kind: D.kind };
window.attnkit = api;
const controls = document.getElementById("controls");
const app = document.getElementById("app");
const tip = document.getElementById("tip");
if (!D.title) { document.getElementById("title").textContent = "attnkit " + D.kind + " view"; }

function bytes(s) {
  const bin = atob(s); const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}
function u16(s) { const b = bytes(s); return new Uint16Array(b.buffer, 0, b.length >> 1); }
function f32(s) { const b = bytes(s); return new Float32Array(b.buffer, 0, b.length >> 2); }
function el(tag, attrs, text) {
  const e = document.createElement(tag);
  for (const k in (attrs || {})) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  return e;
}
function showTip(ev, text) {
  tip.textContent = text; tip.hidden = false;
  const x = Math.min(ev.clientX + 14, window.innerWidth - tip.offsetWidth - 4);
  tip.style.left = x + "px"; tip.style.top = (ev.clientY + 14) + "px";
}
function hideTip() { tip.hidden = true; }
function fmt(v) { return v >= 0.001 || v === 0 ? v.toFixed(4) : v.toExponential(2); }
function lutIndex(x) { return Math.min(255, Math.floor(x * 256)); }  // x in [0, 1], as matplotlib
function span(tok, a, b) {
  return b - a <= 1 ? tok[a] + " (" + a + ")" : "positions " + a + "-" + (b - 1);
}
function edges(n, m) {  // block edges of n positions max-pooled to m cells, as pool_max
  const e = new Array(m + 1);
  for (let i = 0; i < m; i++) e[i] = Math.floor(i * n / m);
  e[m] = n; return e;
}
function done() {
  api.loadMs = performance.now() - T0;
  api.ready = true;
  document.body.dataset.ready = "1";
}

// ------------------------------------------------------------------ head view
function headView() {
  const L = D.layers.map(function (s) {
    return Object.assign({}, s, { I: u16(s.idx), V: bytes(s.val), sel: new Set(s.selected) });
  });
  let cur = D.layer;
  const levels = D.alphaLevels;
  const layerSel = el("select", { id: "layer", "aria-label": "layer" });
  L.forEach(function (s, i) { layerSel.appendChild(el("option", { value: String(i) }, s.name)); });
  layerSel.value = String(cur);
  const lab = el("label", {}, "layer "); lab.appendChild(layerSel); controls.appendChild(lab);
  const headBox = el("span", { id: "heads" }); controls.appendChild(headBox);
  const canvas = el("canvas", { id: "view" }); app.appendChild(canvas);
  const note = el("div", { class: "note" }); app.appendChild(note);
  const ctx = canvas.getContext("2d");
  let geom = null;
  let hover = null;

  function headBoxes() {
    headBox.textContent = "";
    const s = L[cur];
    for (let h = 0; h < s.h; h++) {
      const l = el("label", { title: "head " + h });
      const cb = el("input", { type: "checkbox", id: "head-" + h, "data-head": String(h) });
      cb.checked = s.sel.has(h);
      cb.addEventListener("change", function () {
        if (cb.checked) s.sel.add(h); else s.sel.delete(h);
        draw();
      });
      const sw = el("span", { class: "swatch" }); sw.style.background = D.colors[h];
      l.appendChild(cb); l.appendChild(sw); l.appendChild(document.createTextNode(String(h)));
      headBox.appendChild(l);
    }
    note.textContent = "Per query at most " + D.topK + " lines, none below " + D.threshold +
      "; opacity = weight. Hover a token to isolate its lines.";
  }
  function layout() {
    const s = L[cur];
    const rows = Math.max(s.tq, s.tv);
    const rh = Math.max(2, Math.min(20, 2400 / rows));
    const font = Math.max(7, Math.min(13, rh - 4));
    const labels = rh >= 9;
    ctx.font = font + "px sans-serif";
    let lw = 24;
    if (labels) {
      for (const t of s.qtok.concat(s.ktok)) lw = Math.max(lw, ctx.measureText(t).width);
      lw = Math.min(lw, 180);
    }
    lw = Math.round(lw + 10);
    const gap = 280, pad = 8;
    const w = Math.ceil(2 * lw + gap), h = Math.ceil(2 * pad + rows * rh);
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    geom = { rh: rh, font: font, labels: labels, x0: lw, x1: lw + gap, pad: pad, w: w, h: h };
    api.geom = geom;
  }
  function y(i) { return geom.pad + (i + 0.5) * geom.rh; }
  function draw() {
    const t = performance.now();
    layout();
    const s = L[cur], g = geom;
    ctx.clearRect(0, 0, g.w, g.h);
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, g.w, g.h);
    if (hover) {
      ctx.fillStyle = "#e8e8e8";
      const x = hover.side === "q" ? 0 : g.x1;
      ctx.fillRect(x, g.pad + hover.i * g.rh, g.x0, g.rh);
    }
    if (g.labels) {
      ctx.font = g.font + "px sans-serif"; ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (let i = 0; i < s.tq; i++) ctx.fillText(s.qtok[i], g.x0 - 6, y(i), g.x0 - 8);
      ctx.textAlign = "left";
      for (let j = 0; j < s.tv; j++) ctx.fillText(s.ktok[j], g.x1 + 6, y(j), g.x0 - 8);
    } else {
      ctx.fillStyle = "#bbb";
      ctx.fillRect(g.x0 - 6, g.pad, 4, s.tq * g.rh); ctx.fillRect(g.x1 + 2, g.pad, 4, s.tv * g.rh);
    }
    ctx.lineWidth = Math.max(s.tq, s.tv) <= 64 ? 2 : 1;
    let n = 0;
    const k = s.k;
    for (const h of Array.from(s.sel).sort(function (a, b) { return a - b; })) {
      const buckets = [];
      for (let b = 0; b < levels; b++) buckets.push([]);
      const qa = hover && hover.side === "q" ? hover.i : 0;
      const qb = hover && hover.side === "q" ? hover.i + 1 : s.tq;
      for (let i = qa; i < qb; i++) {
        const base = (h * s.tq + i) * k;
        for (let m = 0; m < k; m++) {
          const v = s.V[base + m];
          if (v === 0) continue;
          const j = s.I[base + m];
          if (hover && hover.side === "k" && j !== hover.i) continue;
          buckets[Math.min(levels - 1, Math.floor(v / 255 * levels))].push(i, j);
        }
      }
      ctx.strokeStyle = D.colors[h];
      for (let b = 0; b < levels; b++) {
        const segs = buckets[b];
        if (!segs.length) continue;
        ctx.globalAlpha = (b + 0.5) / levels;
        ctx.beginPath();
        for (let m = 0; m < segs.length; m += 2) {
          ctx.moveTo(g.x0, y(segs[m])); ctx.lineTo(g.x1, y(segs[m + 1]));
        }
        ctx.stroke();
        n += segs.length / 2;
      }
      ctx.globalAlpha = 1;
    }
    api.lines = n;
    api.drawMs = performance.now() - t;
  }
  function at(ev) {
    const r = canvas.getBoundingClientRect();
    const x = ev.clientX - r.left, yy = ev.clientY - r.top;
    const s = L[cur], g = geom;
    const i = Math.floor((yy - g.pad) / g.rh);
    if (x <= g.x0 && i >= 0 && i < s.tq) return { side: "q", i: i };
    if (x >= g.x1 && i >= 0 && i < s.tv) return { side: "k", i: i };
    return null;
  }
  canvas.addEventListener("mousemove", function (ev) {
    const h = at(ev);
    const same = (h === null && hover === null) ||
      (h && hover && h.side === hover.side && h.i === hover.i);
    if (h) {
      const s = L[cur];
      showTip(ev, (h.side === "q" ? "query " : "key ") + h.i + ": " +
        (h.side === "q" ? s.qtok : s.ktok)[h.i]);
    } else hideTip();
    if (same) return;
    hover = h; api.hover = h; draw();
  });
  canvas.addEventListener("mouseleave", function () {
    hideTip(); if (hover) { hover = null; api.hover = null; draw(); }
  });
  layerSel.addEventListener("change", function () {
    cur = Number(layerSel.value); hover = null; api.hover = null; headBoxes(); draw();
  });
  headBoxes(); draw();
}

// ------------------------------------------------------------------ heatmaps
const LUT = D.lut ? bytes(D.lut) : null;
function imageOf(rows, cols, value) {  // value(r, c) in [0, 1] -> an offscreen canvas
  const c = document.createElement("canvas"); c.width = cols; c.height = rows;
  const cx = c.getContext("2d");
  const img = cx.createImageData(cols, rows);
  const px = img.data;
  for (let r = 0, p = 0; r < rows; r++) {
    for (let q = 0; q < cols; q++, p += 4) {
      const li = 3 * lutIndex(value(r, q));
      px[p] = LUT[li]; px[p + 1] = LUT[li + 1]; px[p + 2] = LUT[li + 2]; px[p + 3] = 255;
    }
  }
  cx.putImageData(img, 0, 0);
  return c;
}
function blit(ctx, src, x, y, w, h) {
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(src, x, y, w, h);
}

// ------------------------------------------------------------------ model view
function modelView() {
  const ncols = Math.max(...D.layers.map(function (s) { return s.maps.length; }));
  const size = Math.max(36, Math.min(110, Math.floor((window.innerWidth - 150) / ncols) - 4));
  const grid = el("div", { class: "grid", id: "grid" });
  grid.style.gridTemplateColumns = "120px repeat(" + ncols + ", " + size + "px)";
  grid.appendChild(el("div"));
  for (let c = 0; c < ncols; c++) grid.appendChild(el("div", { class: "colname" }, "head " + c));
  const images = [];
  D.layers.forEach(function (s, r) {
    grid.appendChild(el("div", { class: "rowname", title: s.name }, s.name));
    images.push([]);
    for (let c = 0; c < ncols; c++) {
      if (c >= s.maps.length) { grid.appendChild(el("div")); continue; }
      const q = bytes(s.maps[c].q);
      const src = imageOf(s.rows, s.cols, function (i, j) { return q[i * s.cols + j] / 255; });
      images[r].push({ src: src, q: q });
      const cv = el("canvas", { width: String(size), height: String(size), id: "map-" + r + "-" + c,
        title: s.name + " · head " + c });
      blit(cv.getContext("2d"), src, 0, 0, size, size);
      cv.addEventListener("click", function () { enlarge(r, c); });
      grid.appendChild(cv);
    }
  });
  app.appendChild(grid);
  app.appendChild(el("div", { class: "note" },
    "Each map scaled to its own largest weight; maps longer than " + D.resolution +
    " positions are max-pooled. Click a map to enlarge it."));
  const overlay = el("div", { id: "overlay" }); overlay.hidden = true;
  const caption = el("div", { class: "caption" });
  const big = el("canvas", { id: "big" });
  const close = el("button", { id: "close" }, "close");
  overlay.appendChild(caption); overlay.appendChild(big); overlay.appendChild(close);
  document.body.appendChild(overlay);
  let open = null;
  function enlarge(r, c) {
    const s = D.layers[r];
    const side = Math.max(120, Math.min(window.innerHeight - 120, window.innerWidth - 60, 640));
    big.width = side; big.height = side;
    blit(big.getContext("2d"), images[r][c].src, 0, 0, side, side);
    caption.textContent = s.name + " · head " + c + " (largest weight " + fmt(s.maps[c].max) + ")";
    overlay.hidden = false; open = { r: r, c: c, side: side };
    api.open = open;
  }
  close.addEventListener("click", function () {
    overlay.hidden = true; open = null; api.open = null; hideTip();
  });
  big.addEventListener("mousemove", function (ev) {
    if (!open) return;
    const s = D.layers[open.r], m = s.maps[open.c];
    const rc = big.getBoundingClientRect();
    const i = Math.floor((ev.clientY - rc.top) / open.side * s.rows);
    const j = Math.floor((ev.clientX - rc.left) / open.side * s.cols);
    if (i < 0 || j < 0 || i >= s.rows || j >= s.cols) { hideTip(); return; }
    const er = edges(s.tq, s.rows), ec = edges(s.tv, s.cols);
    const v = images[open.r][open.c].q[i * s.cols + j] / 255 * m.max;
    api.hover = { i: i, j: j };
    const bound = s.rows < s.tq || s.cols < s.tv ? "≤ " : "";
    showTip(ev, "query " + span(s.qtok, er[i], er[i + 1]) + "\nkey   " +
      span(s.ktok, ec[j], ec[j + 1]) + "\nweight " + bound + fmt(v));
  });
  big.addEventListener("mouseleave", hideTip);
}

// ------------------------------------------------------------------ matrix view
function matrixView() {
  const M = D.maps.map(function (e) { return Object.assign({}, e, { W: f32(e.w) }); });
  let cur = D.map;
  if (M.length > 1) {
    const sel = el("select", { id: "map", "aria-label": "map" });
    M.forEach(function (e, i) { sel.appendChild(el("option", { value: String(i) }, e.name)); });
    sel.value = String(cur);
    sel.addEventListener("change", function () { cur = Number(sel.value); hover = null; build(); });
    const lab = el("label", {}, "map "); lab.appendChild(sel); controls.appendChild(lab);
  }
  const canvas = el("canvas", { id: "view" }); app.appendChild(canvas);
  const ctx = canvas.getContext("2d");
  let g = null, hover = null;
  function build() {
    const e = M[cur];
    const pooled = e.rows < e.tq || e.cols < e.tv;
    const cell = Math.max(1, Math.min(28, Math.floor(720 / Math.max(e.rows, e.cols))));
    const labels = cell >= 9 && !pooled;
    const font = Math.min(13, cell - 2);
    ctx.font = font + "px sans-serif";
    let left = 40, top = 40;
    if (labels) {
      left = 12 + Math.max(...e.qtok.map(function (t) { return ctx.measureText(t).width; }));
      top = 12 + Math.max(...e.ktok.map(function (t) { return ctx.measureText(t).width; }));
    }
    left = Math.round(Math.min(left, 200)); top = Math.round(Math.min(top, 200));
    const w = e.cols * cell, h = e.rows * cell;
    canvas.width = Math.ceil(left + w + 90); canvas.height = Math.ceil(top + h + 20);
    const top1 = Math.max(e.max, 1e-12);
    const src = imageOf(e.rows, e.cols, function (i, j) { return e.W[i * e.cols + j] / top1; });
    g = { cell: cell, labels: labels, font: font, left: left, top: top, w: w, h: h, src: src,
      pooled: pooled };
    api.geom = { cell: cell, left: left, top: top, rows: e.rows, cols: e.cols };
    draw();
  }
  function draw() {
    const e = M[cur];
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    blit(ctx, g.src, g.left, g.top, g.w, g.h);
    ctx.fillStyle = "#222"; ctx.font = g.font + "px sans-serif"; ctx.textBaseline = "middle";
    if (g.labels) {
      ctx.textAlign = "right";
      for (let i = 0; i < e.rows; i++) {
        ctx.fillStyle = hover && hover.i === i ? "#c00" : "#222";
        ctx.fillText(e.qtok[i], g.left - 5, g.top + (i + 0.5) * g.cell, g.left - 8);
      }
      ctx.textAlign = "left";
      for (let j = 0; j < e.cols; j++) {
        ctx.save();
        ctx.translate(g.left + (j + 0.5) * g.cell, g.top - 5);
        ctx.rotate(-Math.PI / 2);
        ctx.fillStyle = hover && hover.j === j ? "#c00" : "#222";
        ctx.fillText(e.ktok[j], 0, 0, g.top - 8);
        ctx.restore();
      }
    } else {
      ctx.textAlign = "left"; ctx.font = "11px sans-serif";
      ctx.fillText("key →" + (g.pooled ? " (max-pooled " + e.tv + " → " + e.cols + ")" : ""),
        g.left, g.top - 12);
      ctx.save(); ctx.translate(g.left - 12, g.top); ctx.rotate(Math.PI / 2);
      ctx.fillText("query →" + (g.pooled ? " (" + e.tq + " → " + e.rows + ")" : ""), 0, 0);
      ctx.restore();
    }
    // colour bar
    const bx = g.left + g.w + 16, bh = Math.max(60, Math.min(g.h, 300));
    for (let p = 0; p < bh; p++) {
      const li = 3 * lutIndex(1 - p / bh);
      ctx.fillStyle = "rgb(" + LUT[li] + "," + LUT[li + 1] + "," + LUT[li + 2] + ")";
      ctx.fillRect(bx, g.top + p, 14, 1);
    }
    ctx.fillStyle = "#222"; ctx.font = "11px sans-serif"; ctx.textAlign = "left";
    ctx.fillText(fmt(e.max), bx + 18, g.top + 5); ctx.fillText("0", bx + 18, g.top + bh - 5);
    if (hover) {
      ctx.strokeStyle = "#fff"; ctx.lineWidth = 1;
      ctx.strokeRect(g.left + 0.5, g.top + hover.i * g.cell + 0.5, g.w - 1, g.cell - 1);
      ctx.strokeRect(g.left + hover.j * g.cell + 0.5, g.top + 0.5, g.cell - 1, g.h - 1);
      ctx.strokeStyle = "#e00"; ctx.lineWidth = 2;
      ctx.strokeRect(g.left + hover.j * g.cell, g.top + hover.i * g.cell, g.cell, g.cell);
    }
  }
  canvas.addEventListener("mousemove", function (ev) {
    const e = M[cur];
    const r = canvas.getBoundingClientRect();
    const j = Math.floor((ev.clientX - r.left - g.left) / g.cell);
    const i = Math.floor((ev.clientY - r.top - g.top) / g.cell);
    let h = null;
    if (i >= 0 && j >= 0 && i < e.rows && j < e.cols) h = { i: i, j: j };
    if (h) {
      const er = edges(e.tq, e.rows), ec = edges(e.tv, e.cols);
      showTip(ev, "query " + span(e.qtok, er[i], er[i + 1]) + "\nkey   " +
        span(e.ktok, ec[j], ec[j + 1]) + "\nweight " + (g.pooled ? "≤ " : "") +
        fmt(e.W[i * e.cols + j]));
    } else hideTip();
    if ((h === null) !== (hover === null) || (h && (h.i !== hover.i || h.j !== hover.j))) {
      hover = h; api.hover = h; draw();
    }
  });
  canvas.addEventListener("mouseleave", function () {
    hideTip(); if (hover) { hover = null; api.hover = null; draw(); }
  });
  build();
}

if (D.kind === "head") headView();
else if (D.kind === "model") modelView();
else matrixView();
done();
})();
"""

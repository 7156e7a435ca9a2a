/* tuned-lens explorer (schema "tuned-lens-explorer", version 1; see docs/explorer.md).
 * Reads the document from <script id="tl-data">, draws the layer x position grid on a canvas,
 * the top-k of a cell, and the probability / rank of pinned tokens across layers. No request
 * leaves the page. window.tlExplorer exposes the state and a few read-outs for tests. */
(function () {
  "use strict";
  var T0 = performance.now();
  var $ = function (id) { return document.getElementById(id); };

  // ------------------------------------------------------------------ decoding
  var F16 = new Float32Array(65536);
  (function () {
    for (var h = 0; h < 65536; h++) {
      var s = h & 0x8000 ? -1 : 1, e = (h >> 10) & 0x1f, f = h & 0x3ff;
      F16[h] = e === 0 ? s * Math.pow(2, -14) * (f / 1024)
        : e === 31 ? (f ? NaN : s * Infinity) : s * Math.pow(2, e - 15) * (1 + f / 1024);
    }
  })();
  function decode(a) {
    if (!a) return null;
    var bin = atob(a.data), bytes = new Uint8Array(bin.length);
    for (var i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    var buf = bytes.buffer;
    switch (a.dtype) {
      case "f16": {
        var u = new Uint16Array(buf), out = new Float32Array(u.length);
        for (var j = 0; j < u.length; j++) out[j] = F16[u[j]];
        return out;
      }
      case "f32": return new Float32Array(buf);
      case "u8": return bytes;
      case "u16": return new Uint16Array(buf);
      case "u32": return new Uint32Array(buf);
      case "i32": return new Int32Array(buf);
    }
    throw new Error("unknown dtype " + a.dtype);
  }

  var D = null, VIEWS = [], PAIRS = {}, TOKENS = null;
  function view(i) {
    if (VIEWS[i]) return VIEWS[i];
    var v = D.views[i], out = {
      index: i, lens: v.lens, prompt: v.prompt, R: v.rows, T: v.positions, k: v.k,
      labels: v.row_labels || null, input: decode(v.input), targets: decode(v.targets),
      tt: decode(v.topk_tokens), tp: decode(v.topk_probs), stats: {}, tracked: null, pos: null
    };
    Object.keys(v.stats).forEach(function (n) { out.stats[n] = decode(v.stats[n]); });
    if (v.tracked) {
      out.tracked = { tokens: v.tracked.tokens, lp: decode(v.tracked.log_probs), index: {} };
      v.tracked.tokens.forEach(function (t, j) { out.tracked.index[t] = j; });
    }
    if (v.pos_tracked) {
      var ps = decode(v.pos_tracked.positions), ts = decode(v.pos_tracked.tokens);
      var pr = decode(v.pos_tracked.probs);
      out.pos = {};
      for (var n = 0; n < ps.length; n++) out.pos[ps[n] + ":" + ts[n]] = pr.subarray(n * v.rows, (n + 1) * v.rows);
    }
    if (!out.labels) {
      out.labels = [];
      for (var r = 0; r < v.rows; r++) out.labels.push(r === v.rows - 1 ? "output" : String(r));
    }
    VIEWS[i] = out;
    return out;
  }

  // ------------------------------------------------------------------ per-cell read-outs
  function topk(v, r, q) {
    var base = (r * v.T + q) * v.k, list = [];
    for (var j = 0; j < v.k; j++) {
      var p = v.tp[base + j];
      if (p === p) list.push({ tok: v.tt[base + j], p: p });
    }
    return list;
  }
  function probAt(v, r, q, tok) {
    if (v.tracked && tok in v.tracked.index) {
      var n = v.tracked.tokens.length;
      return Math.exp(v.tracked.lp[(r * v.T + q) * n + v.tracked.index[tok]]);
    }
    if (v.pos) { var t = v.pos[q + ":" + tok]; if (t) return t[r]; }
    var base = (r * v.T + q) * v.k;
    for (var j = 0; j < v.k; j++) if (v.tt[base + j] === tok && v.tp[base + j] === v.tp[base + j]) return v.tp[base + j];
    return NaN;
  }
  function rankAt(v, r, q, tok) {
    var base = (r * v.T + q) * v.k;
    for (var j = 0; j < v.k; j++) if (v.tt[base + j] === tok) return j + 1;
    if (v.targets && v.targets[q] === tok && v.stats.target_rank) return v.stats.target_rank[r * v.T + q];
    return NaN;
  }
  function groupProb(v, r, q, group) {
    var s = 0;
    for (var i = 0; i < group.length; i++) s += probAt(v, r, q, group[i]);
    return s;
  }
  function groupRank(v, r, q, group) {
    var best = NaN;
    group.forEach(function (t) { var x = rankAt(v, r, q, t); if (x === x && !(best <= x)) best = x; });
    return best;
  }
  function pairOf(a, b) { return PAIRS[a + ":" + b] || null; }
  function divergences(a, b, r, q) {
    // Exact when Python stored the pair; else a lower bound from the tokens known in both
    // cells (plus one "rest" bucket): coarse-graining never increases KL or JS.
    var pair = pairOf(a.index, b.index);
    if (pair) return { kl: pair.kl[r * a.T + q], js: pair.js[r * a.T + q], exact: true };
    var toks = {}, pa = [], pb = [], sa = 0, sb = 0;
    topk(a, r, q).concat(topk(b, r, q)).forEach(function (e) { toks[e.tok] = 1; });
    Object.keys(toks).forEach(function (t) {
      var x = probAt(a, r, q, +t), y = probAt(b, r, q, +t);
      if (x === x && y === y) { pa.push(x); pb.push(y); sa += x; sb += y; }
    });
    pa.push(Math.max(0, 1 - sa)); pb.push(Math.max(0, 1 - sb));
    var kl = 0, js = 0;
    for (var i = 0; i < pa.length; i++) {
      var m = (pa[i] + pb[i]) / 2;
      if (pa[i] > 0) { kl += pa[i] * Math.log(pa[i] / (pb[i] > 0 ? pb[i] : 1e-30)); js += 0.5 * pa[i] * Math.log(pa[i] / m); }
      if (pb[i] > 0) js += 0.5 * pb[i] * Math.log(pb[i] / m);
    }
    return { kl: Math.max(0, kl), js: Math.max(0, js), exact: false };
  }

  // ------------------------------------------------------------------ statistics
  var STATS = {
    entropy: { label: "Entropy (nats)" }, forward_kl: { label: "Forward KL(model ‖ row) (nats)" },
    cross_entropy: { label: "Cross entropy (nats)" }, target_rank: { label: "Rank of the target", log: true },
    max_prob: { label: "Max probability", range: [0, 1] },
    kl_other: { label: "KL(self ‖ other lens) (nats)" }, js_other: { label: "JS(self, other lens) (nats)" },
    pin_prob: { label: "Probability of pinned token", range: [0, 1], pin: true },
    pin_rank: { label: "Rank of pinned token", log: true, pin: true },
    diff_kl: { label: "KL(this ‖ compared) (nats)", cmp: true },
    diff_js: { label: "JS(this, compared) (nats)", cmp: true },
    diff_dp: { label: "Δp of pinned token (compared − this)", cmp: true, pin: true, signed: true }
  };
  function available(v) {
    return Object.keys(STATS).filter(function (n) {
      var s = STATS[n];
      if (n in v.stats || n === "max_prob") return true;
      if (s.cmp && S.cmp < 0) return false;
      if (s.pin && !S.pins.length) return false;
      return !!(s.pin || s.cmp);
    });
  }
  function cellValue(stat, v, r, q) {
    if (stat in v.stats) return v.stats[stat][r * v.T + q];
    var g = S.pins[0];
    switch (stat) {
      case "max_prob": return v.tp[(r * v.T + q) * v.k];
      case "pin_prob": return groupProb(v, r, q, g);
      case "pin_rank": return groupRank(v, r, q, g);
      case "diff_kl": return divergences(v, view(S.cmp), r, q).kl;
      case "diff_js": return divergences(v, view(S.cmp), r, q).js;
      case "diff_dp": return groupProb(view(S.cmp), r, q, g) - groupProb(v, r, q, g);
    }
    return NaN;
  }

  // ------------------------------------------------------------------ colour
  var SCALES = {
    viridis: ["#440154", "#482878", "#3e4989", "#31688e", "#26828e", "#1f9e89", "#35b779", "#6ece58", "#b5de2b", "#fde725"],
    cividis: ["#00224e", "#123570", "#3b496c", "#575d6d", "#707173", "#8a8779", "#a69d75", "#c4b56c", "#e4cf5b", "#fee838"],
    greys: ["#000000", "#ffffff"],
    puor: ["#542788", "#998ec3", "#d8daeb", "#f7f7f7", "#fee0b6", "#f1a340", "#b35806"]
  };
  function rgb(hex) { var n = parseInt(hex.slice(1), 16); return [n >> 16, (n >> 8) & 255, n & 255]; }
  function colour(scale, t) {
    var stops = SCALES[scale].map(rgb), x = Math.min(1, Math.max(0, t)) * (stops.length - 1);
    var i = Math.min(stops.length - 2, Math.floor(x)), f = x - i, a = stops[i], b = stops[i + 1];
    return [0, 1, 2].map(function (c) { return Math.round(a[c] + (b[c] - a[c]) * f); });
  }

  // ------------------------------------------------------------------ state and URL hash
  var S = { lens: 0, prompt: 0, cmp: -1, stat: "entropy", scale: "viridis", pins: [], ppos: [],
    cell: null, stride: 1, w: 44, dark: null, sx: 0 };
  function encodeState() {
    var parts = ["lens=" + S.lens, "prompt=" + S.prompt, "stat=" + S.stat, "scale=" + S.scale,
      "stride=" + S.stride, "w=" + S.w, "sx=" + Math.round(S.sx)];
    if (S.cmp >= 0) parts.push("cmp=" + S.cmp);
    if (S.pins.length) parts.push("pins=" + S.pins.map(function (g) { return g.join("~"); }).join(","));
    if (S.ppos.length) parts.push("ppos=" + S.ppos.join(","));
    if (S.cell) parts.push("cell=" + S.cell.join("."));
    if (S.dark !== null) parts.push("dark=" + (S.dark ? 1 : 0));
    return parts.join("&");
  }
  function ints(s, sep) { return s ? s.split(sep).map(Number).filter(function (x) { return x === x; }) : []; }
  function applyHash(hash) {
    hash.replace(/^#/, "").split("&").forEach(function (kv) {
      var i = kv.indexOf("="); if (i < 0) return;
      var k = kv.slice(0, i), val = decodeURIComponent(kv.slice(i + 1));
      if (k === "lens" || k === "prompt" || k === "cmp" || k === "stride" || k === "w" || k === "sx") S[k] = Number(val) || 0;
      else if (k === "stat" && val in STATS) S.stat = val;
      else if (k === "scale" && val in SCALES) S.scale = val;
      else if (k === "pins") S.pins = val.split(",").map(function (g) { return ints(g, "~"); }).filter(function (g) { return g.length; });
      else if (k === "ppos") S.ppos = ints(val, ",");
      else if (k === "cell") { var c = ints(val, "."); S.cell = c.length === 2 ? c : null; }
      else if (k === "dark") S.dark = val === "1";
    });
    if (!/(^|&|#)cmp=/.test(hash)) S.cmp = -1;
  }
  function clampState() {
    S.lens = Math.min(Math.max(0, S.lens), D.lenses.length - 1);
    S.prompt = Math.min(Math.max(0, S.prompt), D.prompts.length - 1);
    S.stride = Math.max(1, Math.floor(S.stride)); S.w = Math.min(80, Math.max(8, Math.round(S.w)));
    if (S.cmp >= D.views.length) S.cmp = -1;
  }
  var hashTimer = null;
  function saveHash() {
    clearTimeout(hashTimer);
    hashTimer = setTimeout(function () {
      try { history.replaceState(null, "", "#" + encodeState()); } catch (err) { /* about:srcdoc */ }
    }, 50);
  }
  function currentIndex() {
    for (var i = 0; i < D.views.length; i++) if (D.views[i].lens === S.lens && D.views[i].prompt === S.prompt) return i;
    return 0;
  }

  // ------------------------------------------------------------------ grid
  var ROW_H = 20, AXIS_H = 22, LABEL_W = 54, grid = null;
  function shownRows(v) {
    var rows = [];
    for (var r = v.R - 1; r >= 0; r--) if (r === v.R - 1 || r % S.stride === 0) rows.push(r);
    return rows; // output first (drawn at the top)
  }
  function domain(stat, v, rows) {
    var s = STATS[stat];
    if (s.range) return s.range;
    var lo = Infinity, hi = -Infinity;
    rows.forEach(function (r) {
      for (var q = 0; q < v.T; q++) { var x = cellValue(stat, v, r, q); if (isFinite(x)) { lo = Math.min(lo, x); hi = Math.max(hi, x); } }
    });
    if (!(hi >= lo)) { lo = 0; hi = 1; }
    if (s.signed) { var m = Math.max(Math.abs(lo), Math.abs(hi)) || 1; return [-m, m]; }
    if (s.log) return [Math.log10(Math.max(1, lo)), Math.log10(Math.max(2, hi))];
    return [lo, hi === lo ? lo + 1 : hi];
  }
  function fmt(x) {
    if (x !== x) return "–";
    if (!isFinite(x)) return x > 0 ? "∞" : "−∞";
    return Math.abs(x) >= 100 || x === Math.round(x) ? String(Math.round(x * 10) / 10) : x.toPrecision(3);
  }
  function pct(p) { return p === p ? (p * 100).toFixed(2) + "%" : "–"; }
  function drawGrid() {
    var v = view(currentIndex()), rows = shownRows(v), stat = S.stat;
    if (available(v).indexOf(stat) < 0) stat = S.stat = "max_prob";
    var dom = domain(stat, v, rows), sdef = STATS[stat];
    var scale = sdef.signed ? "puor" : S.scale, w = S.w, H = rows.length * ROW_H + AXIS_H;
    var canvas = $("grid"), W = v.T * w, dpr = Math.min(window.devicePixelRatio || 1, 2, 32000 / Math.max(W, 1));
    canvas.width = Math.floor(W * dpr); canvas.height = Math.floor(H * dpr);
    canvas.style.width = W + "px"; canvas.style.height = H + "px";
    var ctx = canvas.getContext("2d"), values = [];
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.font = "11px ui-monospace, monospace"; ctx.textBaseline = "middle"; ctx.textAlign = "center";
    var short = TOKENS.short;
    rows.forEach(function (r, y) {
      var line = [];
      for (var q = 0; q < v.T; q++) {
        var x = cellValue(stat, v, r, q); line.push(x);
        var t = sdef.log ? Math.log10(Math.max(1, x)) : x;
        var c = x === x ? colour(scale, (t - dom[0]) / (dom[1] - dom[0] || 1)) : [128, 128, 128];
        ctx.fillStyle = "rgb(" + c.join(",") + ")";
        ctx.fillRect(q * w, y * ROW_H, w, ROW_H);
        if (w >= 18) {
          var lum = 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2];
          ctx.fillStyle = lum > 140 ? "#000" : "#fff";
          ctx.save(); ctx.beginPath(); ctx.rect(q * w + 1, y * ROW_H, w - 2, ROW_H); ctx.clip();
          ctx.fillText(short[v.tt[(r * v.T + q) * v.k]], q * w + w / 2, y * ROW_H + ROW_H / 2);
          ctx.restore();
        }
      }
      values.push(line);
    });
    var body = getComputedStyle(document.body);
    ctx.fillStyle = body.getPropertyValue("--fg") || "#000";
    for (var q = 0; q < v.T; q++) {
      ctx.save(); ctx.beginPath(); ctx.rect(q * w + 1, rows.length * ROW_H, w - 2, AXIS_H); ctx.clip();
      ctx.fillText(short[v.input[q]], q * w + w / 2, rows.length * ROW_H + AXIS_H / 2);
      ctx.restore();
    }
    if (S.cell) outline(S.cell[0], S.cell[1], rows, body.getPropertyValue("--accent"), ctx);
    S.ppos.forEach(function (q) { outline(-1, q, rows, "#e66100", ctx); });
    grid = { view: v, rows: rows, values: values, stat: stat, domain: dom, scale: scale };
    drawRowLabels(v, rows, H); drawLegend(); renderStats();
  }
  function outline(r, q, rows, colourName, ctx) {
    var w = S.w, y = rows.indexOf(r);
    ctx.strokeStyle = colourName; ctx.lineWidth = 2;
    if (r < 0) ctx.strokeRect(q * w + 1, 1, w - 2, rows.length * ROW_H - 2);
    else if (y >= 0) ctx.strokeRect(q * w + 1, y * ROW_H + 1, w - 2, ROW_H - 2);
  }
  function drawRowLabels(v, rows, H) {
    var c = $("rowlabels"), ctx = c.getContext("2d");
    c.width = LABEL_W; c.height = H; ctx.clearRect(0, 0, LABEL_W, H);
    ctx.font = "11px system-ui, sans-serif"; ctx.textAlign = "right"; ctx.textBaseline = "middle";
    ctx.fillStyle = getComputedStyle(document.body).getPropertyValue("--muted") || "#666";
    rows.forEach(function (r, y) { ctx.fillText(v.labels[r], LABEL_W - 6, y * ROW_H + ROW_H / 2); });
    ctx.fillText("input", LABEL_W - 6, rows.length * ROW_H + AXIS_H / 2);
  }
  function drawLegend() {
    var c = $("colorbar"), ctx = c.getContext("2d");
    for (var x = 0; x < c.width; x++) {
      ctx.fillStyle = "rgb(" + colour(grid.scale, x / (c.width - 1)).join(",") + ")"; ctx.fillRect(x, 0, 1, c.height);
    }
    var d = grid.domain, log = STATS[grid.stat].log;
    $("lo").textContent = log ? fmt(Math.pow(10, d[0])) : fmt(d[0]);
    $("hi").textContent = log ? fmt(Math.pow(10, d[1])) : fmt(d[1]);
    $("statname").textContent = STATS[grid.stat].label + (log ? " (log scale)" : "");
  }
  function cellAt(evt) {
    var rect = $("grid").getBoundingClientRect(), x = evt.clientX - rect.left, y = evt.clientY - rect.top;
    var q = Math.floor(x / S.w), i = Math.floor(y / ROW_H);
    if (!grid || q < 0 || q >= grid.view.T || i < 0 || i >= grid.rows.length) return null;
    return [grid.rows[i], q];
  }

  // ------------------------------------------------------------------ side panel
  function tokenName(t) { return TOKENS.text[t]; }
  function showCell(cell) {
    var v = view(currentIndex()), box = $("topk");
    box.textContent = "";
    if (!cell) { $("cellinfo").textContent = "Hover or click a cell."; return; }
    var r = cell[0], q = cell[1], cmp = S.cmp >= 0 ? view(S.cmp) : null;
    var info = "layer " + v.labels[r] + ", position " + q + " (" + tokenName(v.input[q]) + ")";
    if (v.targets) info += ", target " + tokenName(v.targets[q]);
    Object.keys(v.stats).forEach(function (n) { info += " · " + n + " " + fmt(v.stats[n][r * v.T + q]); });
    $("cellinfo").textContent = info;
    var table = document.createElement("table"); table.className = "topk"; table.id = "topk-table";
    var head = "<tr><th>#</th><th>token</th><th class='num'>p</th>" + (cmp ? "<th class='num'>p compared</th>" : "") + "</tr>";
    table.innerHTML = head;
    topk(v, r, q).forEach(function (e, j) {
      var tr = document.createElement("tr"); tr.setAttribute("data-token", e.tok);
      var b = document.createElement("button"); b.className = "tok"; b.textContent = tokenName(e.tok);
      b.title = "click: pin; shift-click: add to the last pinned group";
      b.addEventListener("click", function (evt) { pinToken(e.tok, evt.shiftKey); });
      var c0 = document.createElement("td"); c0.textContent = String(j + 1);
      var c1 = document.createElement("td"); c1.appendChild(b);
      var c2 = document.createElement("td"); c2.className = "num prob"; c2.textContent = pct(e.p);
      tr.appendChild(c0); tr.appendChild(c1); tr.appendChild(c2);
      if (cmp) { var c3 = document.createElement("td"); c3.className = "num"; c3.textContent = pct(probAt(cmp, r, q, e.tok)); tr.appendChild(c3); }
      table.appendChild(tr);
    });
    box.appendChild(table);
    if (cmp) {
      var d = divergences(v, cmp, r, q), p = document.createElement("div"); p.className = "hint"; p.id = "cmpinfo";
      p.textContent = "vs compared: KL " + fmt(d.kl) + ", JS " + fmt(d.js) + (d.exact ? " (exact)" : " (lower bound from the kept tokens)");
      box.appendChild(p);
    }
  }
  function pinToken(tok, addToLast) {
    if (addToLast && S.pins.length) { if (S.pins[S.pins.length - 1].indexOf(tok) < 0) S.pins[S.pins.length - 1].push(tok); }
    else S.pins.push([tok]);
    update();
  }
  function findToken(s) {
    s = s.trim(); if (!s) return -1;
    var lists = [TOKENS.raw, TOKENS.text, TOKENS.short];
    for (var l = 0; l < lists.length; l++) { var i = lists[l].indexOf(s); if (i >= 0) return i; }
    return -1;
  }
  function pinTyped() {
    var text = $("pininput").value, group = [], missing = [];
    text.split(/\s\+\s|\|/).forEach(function (part) {
      var t = findToken(part); if (t >= 0) group.push(t); else if (part.trim()) missing.push(part.trim());
    });
    if (missing.length) { setStatus("not in this file's tokens: " + missing.join(", ")); return; }
    if (group.length) { S.pins.push(group); $("pininput").value = ""; setStatus(""); update(); }
  }
  function chips(box, items, label, remove) {
    box.textContent = "";
    items.forEach(function (item, i) {
      var c = document.createElement("span"); c.className = "chip"; c.textContent = label(item);
      var x = document.createElement("button"); x.textContent = "×"; x.title = "unpin";
      x.addEventListener("click", function () { remove(i); update(); });
      c.appendChild(x); box.appendChild(c);
    });
  }
  function groupName(g) { return g.map(tokenName).join(" + "); }

  // ------------------------------------------------------------------ charts of pinned tokens
  var SVGNS = "http://www.w3.org/2000/svg", LINE_COLOURS = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];
  function el(name, attrs, parent) {
    var e = document.createElementNS(SVGNS, name);
    Object.keys(attrs).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    if (parent) parent.appendChild(e);
    return e;
  }
  function chart(svg, series, R, yOf, yTicks, title) {
    svg.textContent = "";
    var W = svg.clientWidth || 400, H = svg.clientHeight || 220, L = 36, B = 22, top = 16;
    var x = function (r) { return L + (W - L - 10) * (R > 1 ? r / (R - 1) : 0.5); };
    var y = function (val) { return top + (H - top - B) * (1 - yOf(val)); };
    el("text", { x: L, y: 11 }, svg).textContent = title;
    el("line", { x1: L, y1: H - B, x2: W - 10, y2: H - B, "class": "axis" }, svg);
    yTicks.forEach(function (t) { el("text", { x: 2, y: y(t) + 3 }, svg).textContent = fmt(t); });
    for (var r = 0; r < R; r += Math.max(1, Math.ceil(R / 10))) el("text", { x: x(r) - 3, y: H - 6 }, svg).textContent = String(r);
    series.forEach(function (s, i) {
      var colour = LINE_COLOURS[i % LINE_COLOURS.length], d = "", pen = false;
      var g = el("g", { "class": "series", "data-label": s.label }, svg);
      s.values.forEach(function (val, r) {
        if (val !== val) { pen = false; return; }
        d += (pen ? "L" : "M") + x(r).toFixed(1) + " " + y(val).toFixed(1) + " "; pen = true;
        el("circle", { cx: x(r), cy: y(val), r: 2.5, fill: colour, "data-row": r, "data-value": val }, g);
      });
      el("path", { d: d, fill: "none", stroke: colour, "stroke-width": 1.5 }, g);
      el("text", { x: L + 4, y: top + 12 + 11 * i, style: "fill:" + colour }, svg).textContent = s.label;
    });
  }
  function drawCharts() {
    var v = view(currentIndex()), positions = S.ppos.length ? S.ppos : (S.cell ? [S.cell[1]] : []);
    var probs = [], ranks = [];
    S.pins.forEach(function (g) {
      positions.forEach(function (q) {
        var p = [], rk = [];
        for (var r = 0; r < v.R; r++) { p.push(groupProb(v, r, q, g)); rk.push(groupRank(v, r, q, g)); }
        var label = groupName(g) + " @" + q;
        probs.push({ label: label, values: p }); ranks.push({ label: label, values: rk });
      });
    });
    var maxRank = v.k + 1;
    chart($("probchart"), probs, v.R, function (p) { return p; }, [0, 0.5, 1], "probability across layers");
    chart($("rankchart"), ranks, v.R, function (k) { return 1 - Math.log(k) / Math.log(maxRank); }, [1, Math.min(3, v.k), v.k], "rank across layers (within the kept top-" + v.k + ")");
  }

  // ------------------------------------------------------------------ controls
  function options(select, items, value) {
    select.textContent = "";
    items.forEach(function (it) { var o = document.createElement("option"); o.value = it[0]; o.textContent = it[1]; select.appendChild(o); });
    select.value = String(value);
  }
  function renderStats() {
    var v = grid.view;
    options($("stat"), available(v).map(function (n) { return [n, STATS[n].label]; }), grid.stat);
  }
  function renderControls() {
    options($("lens"), D.lenses.map(function (l, i) { return [i, l.name]; }), S.lens);
    options($("prompt"), D.prompts.map(function (p, i) { return [i, p]; }), S.prompt);
    var cur = view(currentIndex()), cmp = [[-1, "nothing"]];
    D.views.forEach(function (vv, i) {
      // Views compare row by row only when their rows are the same layers (a lens covering some).
      var same = String(vv.row_labels || "") === String(D.views[cur.index].row_labels || "");
      if (i !== cur.index && vv.rows === cur.R && vv.positions === cur.T && same) cmp.push([i, D.lenses[vv.lens].name + " · " + D.prompts[vv.prompt]]);
    });
    if (!cmp.some(function (c) { return c[0] === S.cmp; })) S.cmp = -1;
    options($("cmp"), cmp, S.cmp);
    options($("scale"), [["viridis", "viridis"], ["cividis", "cividis"], ["greys", "greys"]], S.scale);
    $("stride").value = S.stride; $("width").value = S.w;
    chips($("pins"), S.pins, groupName, function (i) { S.pins.splice(i, 1); });
    chips($("ppos"), S.ppos, function (q) { return "position " + q + " " + tokenName(cur.input[q]); }, function (i) { S.ppos.splice(i, 1); });
  }
  function setStatus(text) { $("status").textContent = text; }
  function applyDark() {
    var dark = S.dark === null ? window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches : S.dark;
    document.body.classList.toggle("dark", !!dark);
  }
  function update() {
    clampState(); applyDark(); renderControls(); drawGrid(); showCell(S.cell); drawCharts(); saveHash();
  }
  function exportJSON() {
    var doc = {}; Object.keys(D).forEach(function (k) { doc[k] = D[k]; });
    doc.state = encodeState();
    return JSON.stringify(doc);
  }
  // logitlenskit V2 (meta, layers, input, topk, tracked) -> a version-1 document, as
  // tuned_lens.explorer.from_logitlenskit does it (arrays written as f32 / u32).
  function b64(typed) {
    var bytes = new Uint8Array(typed.buffer), out = "";
    for (var i = 0; i < bytes.length; i += 0x8000) out += String.fromCharCode.apply(null, bytes.subarray(i, i + 0x8000));
    return btoa(out);
  }
  function arr(dtype, shape, values) {
    var typed = dtype === "f32" ? new Float32Array(values) : dtype === "i32" ? new Int32Array(values) : new Uint32Array(values);
    return { dtype: dtype, shape: shape, data: b64(typed) };
  }
  function formatV2(s, max) {
    if (max && s.length > max) s = s.slice(0, max - 1) + "…";
    return s.split("\n").join("\\n").split(" ").join("_");
  }
  function fromV2(v2) {
    var R = v2.layers.length, T = v2.input.length, index = { "": 0 }, strings = [""];
    var add = function (s) { s = String(s); if (!(s in index)) { index[s] = strings.length; strings.push(s); } return index[s]; };
    if (v2.topk.length !== R || v2.tracked.length !== T) throw new Error("logitlenskit V2: topk / tracked do not fit layers x input");
    v2.input.forEach(add);
    var k = 1;
    v2.topk.forEach(function (layer) { layer.forEach(function (cell) { cell.forEach(add); k = Math.max(k, cell.length); }); });
    v2.tracked.forEach(function (entry) { Object.keys(entry).forEach(add); });
    var ids = new Array(R * T * k).fill(0), probs = new Array(R * T * k).fill(NaN);
    v2.topk.forEach(function (layer, r) {
      layer.forEach(function (cell, q) {
        cell.forEach(function (tok, j) {
          var traj = v2.tracked[q][tok], x = traj ? traj[r] : null;
          ids[(r * T + q) * k + j] = index[String(tok)]; probs[(r * T + q) * k + j] = x === null || x === undefined ? NaN : x;
        });
      });
    });
    var pos = [], toks = [], traj = [];
    v2.tracked.forEach(function (entry, q) {
      Object.keys(entry).forEach(function (tok) {
        pos.push(q); toks.push(index[tok]);
        entry[tok].forEach(function (x) { traj.push(x === null ? NaN : x); });
      });
    });
    var meta = v2.meta || {};
    return {
      format: "tuned-lens-explorer", version: 1,
      meta: { title: String(meta.prompt || ""), model: String(meta.model || ""), created: String(meta.timestamp || ""), generator: "logitlenskit V2 (converted in the page)", formatter: null },
      tokens: { ids: arr("i32", [strings.length], strings.map(function () { return -1; })),
        text: strings.map(function (s) { return formatV2(s, 0); }), short: strings.map(function (s) { return formatV2(s, 7); }), raw: strings },
      lenses: [{ name: String(meta.lens || "logitlenskit"), kind: "logitlenskit" }], prompts: [String(meta.prompt || "prompt 0")],
      views: [{ lens: 0, prompt: 0, rows: R, positions: T, k: k, row_labels: v2.layers.map(String),
        input: arr("u32", [T], v2.input.map(function (s) { return index[String(s)]; })), targets: null,
        topk_tokens: arr("u32", [R, T, k], ids), topk_probs: arr("f32", [R, T, k], probs), stats: {}, tracked: null,
        pos_tracked: { positions: arr("u32", [pos.length], pos), tokens: arr("u32", [toks.length], toks), probs: arr("f32", [pos.length, R], traj) } }],
      pairs: []
    };
  }
  function isV2(doc) { return doc && doc.meta && doc.meta.version === 2 && doc.layers && doc.input && doc.topk && doc.tracked; }
  function importJSON(text) {
    var doc = JSON.parse(text);
    if (isV2(doc)) doc = fromV2(doc);
    if (!doc || doc.format !== "tuned-lens-explorer" || doc.version !== 1) {
      throw new Error("not a tuned-lens-explorer version 1 file, nor a logitlenskit V2 file");
    }
    load(doc);
    S.lens = 0; S.prompt = 0; S.cmp = -1; S.pins = []; S.ppos = []; S.cell = null; S.sx = 0;
    if (doc.state) applyHash(doc.state);
    update();
    $("scroller").scrollLeft = S.sx;
  }
  function bind() {
    var num = function (id, key, event) {
      $(id).addEventListener(event || "change", function () { if ($(id).value !== "") { S[key] = Number($(id).value); update(); } });
    };
    num("lens", "lens"); num("prompt", "prompt"); num("cmp", "cmp"); num("stride", "stride", "input");
    $("width").addEventListener("input", function () { S.w = Number($("width").value); update(); });
    $("stat").addEventListener("change", function () { S.stat = $("stat").value; update(); });
    $("scale").addEventListener("change", function () { S.scale = $("scale").value; update(); });
    $("dark").addEventListener("click", function () { S.dark = !document.body.classList.contains("dark"); update(); });
    $("pinbtn").addEventListener("click", pinTyped);
    $("pininput").addEventListener("keydown", function (e) { if (e.key === "Enter") pinTyped(); });
    $("pinpos").addEventListener("click", function () { if (S.cell && S.ppos.indexOf(S.cell[1]) < 0) { S.ppos.push(S.cell[1]); update(); } });
    $("export").addEventListener("click", function () {
      var a = document.createElement("a");
      a.href = URL.createObjectURL(new Blob([exportJSON()], { type: "application/json" }));
      a.download = "trajectory.json"; a.click();
    });
    $("import").addEventListener("change", function () {
      var f = $("import").files[0]; if (!f) return;
      f.text().then(importJSON).then(function () { setStatus(""); }, function (err) { setStatus(String(err.message || err)); });
    });
    var canvas = $("grid");
    canvas.addEventListener("mousemove", function (e) { var c = cellAt(e); if (c) showCell(c); });
    canvas.addEventListener("mouseleave", function () { showCell(S.cell); });
    canvas.addEventListener("click", function (e) { var c = cellAt(e); if (c) { S.cell = c; canvas.focus(); update(); } });
    canvas.addEventListener("keydown", keys);
    $("scroller").addEventListener("scroll", function () { S.sx = $("scroller").scrollLeft; saveHash(); });
    window.addEventListener("hashchange", function () { applyHash(location.hash); update(); });
  }
  function keys(e) {
    var v = grid.view, rows = grid.rows, c = S.cell || [rows[0], 0], i = rows.indexOf(c[0]);
    var moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (e.key in moves) {
      var m = moves[e.key], ni = Math.min(rows.length - 1, Math.max(0, (i < 0 ? 0 : i) + m[0]));
      S.cell = [rows[ni], Math.min(v.T - 1, Math.max(0, c[1] + m[1]))];
      var sc = $("scroller"), x = S.cell[1] * S.w;
      if (x < sc.scrollLeft || x + S.w > sc.scrollLeft + sc.clientWidth) sc.scrollLeft = x - sc.clientWidth / 2;
    } else if (e.key === "p" && S.cell) { if (S.ppos.indexOf(S.cell[1]) < 0) S.ppos.push(S.cell[1]); }
    else if (e.key === "t" && S.cell) { S.pins.push([v.tt[(S.cell[0] * v.T + S.cell[1]) * v.k]]); }
    else if (e.key === "s") { var a = available(v); S.stat = a[(a.indexOf(grid.stat) + 1) % a.length]; }
    else if (e.key === "l") { S.lens = (S.lens + 1) % D.lenses.length; }
    else if (e.key === "d") { S.dark = !document.body.classList.contains("dark"); }
    else if (e.key === "Escape") { S.cell = null; }
    else return;
    e.preventDefault(); update();
  }
  function load(doc) {
    D = doc; VIEWS = []; PAIRS = {}; TOKENS = doc.tokens;
    (doc.pairs || []).forEach(function (p) {
      var kl = decode(p.kl_ab), back = decode(p.kl_ba), js = decode(p.js);
      PAIRS[p.a + ":" + p.b] = { kl: kl, js: js }; PAIRS[p.b + ":" + p.a] = { kl: back, js: js };
    });
    document.title = (doc.meta && doc.meta.title) || "tuned-lens explorer";
    $("title").textContent = document.title + (doc.meta && doc.meta.model ? " · " + doc.meta.model : "");
  }
  function start() {
    try {
      load(JSON.parse($("tl-data").textContent));
      applyHash(location.hash.length > 1 ? location.hash : (D.state || "")); bind(); update();
      $("scroller").scrollLeft = S.sx;
    } catch (err) { setStatus("could not show this trajectory: " + (err && err.message)); return; }
    window.tlExplorer.ready = true;
    window.tlExplorer.readyMs = performance.now() - T0;
  }
  window.tlExplorer = {
    ready: false, state: S, exportJSON: exportJSON, importJSON: importJSON,
    cellRect: function (r, q) {
      var i = grid.rows.indexOf(r); return i < 0 ? null : { x: q * S.w + S.w / 2, y: i * ROW_H + ROW_H / 2 };
    },
    gridValues: function () { return grid.values; },
    gridInfo: function () { return { view: grid.view.index, stat: grid.stat, rows: grid.rows }; },
    encodeState: encodeState
  };
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", start); else start();
})();

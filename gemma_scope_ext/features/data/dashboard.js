// Feature dashboards, rendered in the browser from the data files next to each page.
// Works from file:// (data arrive as <script> files calling GS.*, never via fetch) and fetches
// nothing from the network. Every string from the data (token texts, names) reaches the page
// through textContent or an attribute set with setAttribute on a fixed attribute name: no markup
// is ever built from data, so a token's text cannot become HTML.
"use strict";

const GS = { chunks: {}, waiting: {} };
window.GS = GS;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function svg(tag, attrs) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  return node;
}

function fmt(x, digits) {
  if (x === 0) return "0";
  const a = Math.abs(x);
  if (a >= 1e4 || a < 1e-3) return x.toExponential(2);
  return x.toPrecision(digits || 3);
}

function pct(x) { return x === 0 ? "0%" : (x * 100 < 0.01 ? "<0.01%" : fmt(x * 100, 3) + "%"); }

function loadScript(src) {
  const s = document.createElement("script");
  s.src = src;
  document.head.append(s);
}

function shown(text) {
  // Whitespace and control characters made visible; the text stays text.
  return text.replace(/\n/g, "\u21b5").replace(/\t/g, "\u21e5").replace(/\r/g, "") || "\u2205";
}

function neuronpediaLink(sae, index) {
  if (!sae.neuronpedia_id) return null;
  const path = sae.neuronpedia_id.split("/").map(encodeURIComponent).join("/");
  const href = "https://www.neuronpedia.org/" + path + "/" + encodeURIComponent(String(index));
  return el("a", { href: href, rel: "noopener" }, "Neuronpedia page");
}

function header(title, sub, nav) {
  const h = el("header", {}, el("h1", { text: title }));
  if (sub) h.append(el("div", { class: "sub", text: sub }));
  if (nav) h.append(el("div", { class: "sub nav" }, ...nav));
  document.body.replaceChildren(h);
  const main = el("main");
  document.body.append(main);
  return main;
}

function saeLine(sae) {
  return `${sae.site}${sae.layer === null ? "" : " layer " + sae.layer} \u00b7 ${sae.hook_name}` +
    (sae.hook_name_out !== sae.hook_name ? ` \u2192 ${sae.hook_name_out}` : "") +
    ` \u00b7 ${sae.d_sae} latents \u00b7 ${sae.model_name} \u00b7 ${sae.n_tokens.toLocaleString()} tokens`;
}

// ---- the list of SAEs (index.html at the top of the site) ----
GS.saes = function (list) {
  const main = header("Feature dashboards", `${list.length} SAE(s)`);
  const table = el("table", {}, el("tr", {}, el("th", { text: "SAE" }), el("th", { text: "site" }),
    el("th", { text: "hook" }), el("th", { text: "latents" }), el("th", { text: "tokens" })));
  for (const s of list) {
    table.append(el("tr", {},
      el("td", {}, el("a", { href: s.slug + "/index.html" }, s.name)),
      el("td", { text: s.site + (s.layer === null ? "" : " " + s.layer) }),
      el("td", { text: s.hook_name }), el("td", { class: "num", text: String(s.d_sae) }),
      el("td", { class: "num", text: s.n_tokens.toLocaleString() })));
  }
  main.append(table);
  document.body.dataset.ready = "1";
};

function chips(words) {
  return words.map((w) => el("span", { class: "chip" }, shown(w)));
}

// ---- one SAE's latents: search and sort (SAE folder's index.html) ----
GS.index = function (data) {
  const sae = data.sae, n = data.density.length, page = 200;
  const main = header(sae.name, saeLine(sae), [el("a", { href: "../index.html" }, "all SAEs")]);
  const search = el("input", { type: "search", id: "search",
    placeholder: "latent number or token text",
    "aria-label": "search latents by number, or by a token they fire on or promote" });
  const status = el("span", { class: "muted", id: "status" });
  main.append(el("div", { class: "controls" }, search, status));
  const keys = [["latent", "index"], ["density", "density"], ["max act", "max"], ["mean act", "mean"]];
  const head = el("tr", {});
  let sortKey = "density", descending = true, limit = page;
  for (const [label, key] of keys) {
    const b = el("button", { "data-sort": key, text: label });
    b.addEventListener("click", () => {
      descending = sortKey === key ? !descending : key !== "index";
      sortKey = key; limit = page; draw();
    });
    head.append(el("th", {}, b));
  }
  head.append(el("th", { text: "fires on" }), el("th", { text: "promotes" }));
  const body = el("tbody", { id: "latents" });
  const more = el("button", { text: "show more" });
  more.addEventListener("click", () => { limit += page; draw(); });
  main.append(el("table", {}, el("thead", {}, head), body), el("p", {}, more));
  const text = Array.from({ length: n }, (_, i) =>
    (data.labels[i].join("\u0000") + "\u0000" + data.promoted[i].join("\u0000")).toLowerCase());
  function draw() {
    const q = search.value.trim().toLowerCase();
    let rows = [];
    for (let i = 0; i < n; i++) {
      if (!q || String(i) === q || text[i].includes(q)) rows.push(i);
    }
    const col = sortKey === "index" ? null : data[sortKey];
    const sign = descending ? -1 : 1;  // ties: the lower latent number first, either way
    rows.sort((a, b) => (col ? sign * (col[a] - col[b]) : sign * (a - b)) || a - b);
    status.textContent = `${rows.length} of ${n} latents` + (rows.length > limit ? `, first ${limit} shown` : "");
    more.hidden = rows.length <= limit;
    body.replaceChildren(...rows.slice(0, limit).map((i) => el("tr", {},
      el("td", {}, el("a", { href: "latent.html#" + i }, String(i))),
      el("td", { class: "num", text: pct(data.density[i]) }),
      el("td", { class: "num", text: fmt(data.max[i]) }),
      el("td", { class: "num", text: fmt(data.mean[i]) }),
      el("td", {}, ...chips(data.labels[i])),
      el("td", {}, ...chips(data.promoted[i])))));
  }
  search.addEventListener("input", () => { limit = page; draw(); });
  if (location.hash.startsWith("#q=")) {  // index.html#q=TEXT opens with that search
    try { search.value = decodeURIComponent(location.hash.slice(3)); } catch (e) { /* not URI text */ }
  }
  draw();
  document.body.dataset.ready = "1";
};

// ---- one latent (latent.html#N) ----
function context(ctx, scale, vocab, special, center) {
  // [activation, token numbers in vocab.js, the latent's activation per token in % of its max]
  const [value, ids, acts] = ctx;
  const line = el("div", { class: "ctx" }, el("span", { class: "act", text: fmt(value) }));
  ids.forEach((id, j) => {
    if (id < 0) return;
    const a = j === center ? value : acts[j] / 100 * scale;  // others: 2 digits, as stored
    const word = vocab[id] === undefined ? `<${id}>` : vocab[id];
    const span = el("span", { class: "tok" + (j === center ? " center" : "") +
      (special.includes(id) ? " special" : ""), title: `${JSON.stringify(word)}  ${fmt(a, j === center ? 4 : 2)}` }, shown(word));
    if (acts[j] > 0) span.style.background = `rgba(245, 130, 11, ${(0.15 + 0.85 * acts[j] / 100).toFixed(3)})`;
    line.append(span);
  });
  return line;
}

function histogram(counts, width) {
  const w = 480, h = 120, pad = 22, n = counts.length, peak = Math.max(1, ...counts);
  const s = svg("svg", { width: w, height: h + pad, role: "img", "aria-label": "activation histogram" });
  const bw = (w - 2 * pad) / Math.max(n, 1);
  counts.forEach((c, i) => {
    if (c === 0) return;
    const bh = Math.max(1, (h - 10) * c / peak);
    const r = svg("rect", { class: "bar", x: pad + i * bw, y: h - bh, width: Math.max(1, bw - 1), height: bh });
    const t = svg("title");
    t.textContent = `[${fmt(i * width)}, ${fmt((i + 1) * width)}): ${c}`;
    r.append(t);
    s.append(r);
  });
  for (const [x, label] of [[pad, "0"], [w - pad, fmt(n * width)]]) {
    const t = svg("text", { x: x, y: h + 15, "text-anchor": "middle", "font-size": 11 });
    t.textContent = label;
    s.append(t);
  }
  return s;
}

function logitTable(title, rows, vocab, cls) {
  const t = el("table", { class: "logits" }, el("tr", {}, el("th", { text: title }), el("th", { text: "score" })));
  for (const [id, v] of rows) {
    t.append(el("tr", {}, el("td", { class: "ctx", text: shown(vocab[id] === undefined ? `<${id}>` : vocab[id]) }),
      el("td", { class: "v " + cls, text: fmt(v) })));
  }
  return t;
}

function renderLatent(data, chunk, i) {
  const sae = data.sae, L = chunk.latents[i - chunk.start], vocab = GS.vocabList, cfg = sae.config;
  const nav = [el("a", { href: "index.html" }, "all latents")];
  if (i > 0) nav.push(el("a", { href: "#" + (i - 1) }, "\u2190 " + (i - 1)));
  if (i + 1 < sae.d_sae) nav.push(el("a", { href: "#" + (i + 1) }, (i + 1) + " \u2192"));
  const np = neuronpediaLink(sae, i);
  if (np) nav.push(np);
  const main = header(`${sae.name} \u00b7 latent ${i}`, saeLine(sae), nav);
  document.title = `${sae.name} latent ${i}`;
  main.append(el("div", { class: "panel stats", id: "stats" },
    el("span", { text: `density ${pct(data.density[i])}` }),
    el("span", { text: `fires on ${data.fires[i].toLocaleString()} tokens` }),
    el("span", { text: `max activation ${fmt(data.max[i])}` }),
    el("span", { text: `mean activation ${fmt(data.mean[i])}` })));
  const row = el("div", { class: "row" });
  row.append(el("div", { class: "panel", id: "histogram" }, el("h2", { text: "Activation histogram (firing tokens)" }),
    data.fires[i] ? histogram(L.hist, L.width) : el("p", { class: "muted", text: "never fired" })));
  if (L.pro) {
    row.append(el("div", { class: "panel", id: "logits" }, el("h2", { text: "Output: tokens the decoder direction promotes and suppresses" }),
      el("div", { class: "row" }, logitTable("promoted", L.pro, vocab, "pos"), logitTable("suppressed", L.sup, vocab, "neg"))));
  }
  if (L.heads) {
    const peak = Math.max(...L.heads, 1e-12);
    const box = el("div", { class: "panel", id: "heads" }, el("h2", { text: "Decoder norm per attention head" }));
    L.heads.forEach((v, hd) => {
      const s = svg("svg", { width: 220, height: 14 });
      s.append(svg("rect", { class: "bar head", x: 0, y: 2, height: 10, width: Math.max(1, 200 * v / peak) }));
      box.append(el("div", { class: "ctx" }, el("span", { class: "act", text: `head ${hd}` }), s, " " + fmt(v)));
    });
    row.append(box);
  }
  main.append(row);
  const top = el("div", { class: "panel", id: "top" }, el("h2", { text: `Top activations (${L.top.length})` }));
  for (const c of L.top) top.append(context(c, data.max[i], vocab, sae.special, cfg.context_before));
  if (!L.top.length) top.append(el("p", { class: "muted", text: "no firing in the tokens seen" }));
  main.append(top);
  for (const [lo, hi, frac, examples] of L.q) {
    const box = el("div", { class: "panel quantile" },
      el("h2", { text: `Activations in [${fmt(lo)}, ${fmt(hi)}): ${pct(frac)} of firings, ${examples.length} sampled` }));
    for (const c of examples) box.append(context(c, data.max[i], vocab, sae.special, cfg.context_before));
    main.append(box);
  }
  document.body.dataset.ready = "1";
}

GS.vocab = function (list) { GS.vocabList = list; };

GS.data = function (data) {
  (document.body.dataset.page === "latent" ? GS.latentPage : GS.index)(data);
};

GS.chunk = function (chunk) {
  GS.chunks[chunk.start] = chunk;
  (GS.waiting[chunk.start] || []).forEach((f) => f(chunk));
  delete GS.waiting[chunk.start];
};

GS.latentPage = function (data) {
  const size = data.sae.chunk_size;
  function show() {
    document.body.dataset.ready = "0";
    const i = parseInt(location.hash.slice(1), 10);
    if (!(i >= 0 && i < data.sae.d_sae)) {
      header(data.sae.name, `no latent ${JSON.stringify(location.hash.slice(1))}: pick one from the index`,
        [el("a", { href: "index.html" }, "all latents")]);
      document.body.dataset.ready = "1";
      return;
    }
    const start = i - (i % size);
    if (GS.chunks[start]) return renderLatent(data, GS.chunks[start], i);
    (GS.waiting[start] = GS.waiting[start] || []).push((c) => renderLatent(data, c, i));
    loadScript(`data/chunk_${String(start / size).padStart(5, "0")}.js`);
  }
  window.addEventListener("hashchange", show);
  show();
};

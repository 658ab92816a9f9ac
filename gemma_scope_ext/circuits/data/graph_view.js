// A self-contained view of one attribution graph (circuit-tracer's graph JSON, embedded above).
(function () {
  const data = JSON.parse(document.getElementById('graph-data').textContent);
  const SVG = 'http://www.w3.org/2000/svg';
  const nodes = data.nodes, links = data.links, tokens = data.metadata.prompt_tokens;
  const byId = new Map(nodes.map(n => [n.node_id, n]));
  const kindOf = n => n.feature_type === 'logit' ? 'target'
    : n.feature_type === 'embedding' ? 'embedding'
    : n.feature_type.includes('error') ? 'error' : 'feature';
  // Rows: embeddings at the bottom, then layers, then the targets.
  const layerKey = n => n.layer === 'E' ? -1 : +n.layer;
  const layers = [...new Set(nodes.map(layerKey))].sort((a, b) => a - b);
  const rowOf = new Map(layers.map((l, i) => [l, i]));
  const nPos = tokens.length;
  const cells = new Map();
  nodes.forEach(n => {
    const key = n.ctx_idx + ':' + layerKey(n);
    if (!cells.has(key)) cells.set(key, []);
    cells.get(key).push(n);
  });
  const perCol = new Array(nPos).fill(1);
  cells.forEach((list, key) => {
    const p = +key.split(':')[0];
    perCol[p] = Math.max(perCol[p], list.length);
  });
  const step = 12, rowH = 46, left = 48, top = 16;
  const colX = [];
  let x = left;
  for (let p = 0; p < nPos; p++) { colX.push(x); x += Math.max(60, perCol[p] * step + 16); }
  const width = x + 16, height = top + layers.length * rowH + 70;
  cells.forEach((list, key) => {
    list.sort((a, b) => (b.activation || 0) - (a.activation || 0));
    list.forEach((n, i) => {
      n._x = colX[n.ctx_idx] + 8 + i * step;
      n._y = top + (layers.length - 1 - rowOf.get(layerKey(n))) * rowH + rowH / 2;
    });
  });
  const svg = document.createElementNS(SVG, 'svg');
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  document.getElementById('plot').appendChild(svg);
  const el = (tag, attrs, parent) => {
    const e = document.createElementNS(SVG, tag);
    Object.entries(attrs).forEach(([k, v]) => e.setAttribute(k, v));
    (parent || svg).appendChild(e);
    return e;
  };
  layers.forEach((l, i) => {
    const y = top + (layers.length - 1 - i) * rowH + rowH / 2;
    const label = l === -1 ? 'Emb' : (nodes.some(n => layerKey(n) === l && kindOf(n) === 'target')
      ? 'Out' : 'L' + l);
    el('text', {x: 6, y: y + 4, class: 'axis'}).textContent = label;
    el('line', {x1: left, x2: width, y1: y + rowH / 2, y2: y + rowH / 2, stroke: '#eee'});
  });
  tokens.forEach((t, p) => {
    const label = el('text', {x: colX[p] + 4, y: height - 40, class: 'tok',
                              transform: `rotate(30 ${colX[p] + 4} ${height - 40})`});
    label.textContent = t.replace(/\n/g, '\u23ce');
  });
  const maxW = Math.max(1e-12, ...links.map(l => Math.abs(l.weight)));
  const edgeLayer = el('g', {});
  const edges = links.map(l => {
    const s = byId.get(l.source), t = byId.get(l.target), a = Math.abs(l.weight) / maxW;
    const path = el('path', {
      d: `M${s._x},${s._y} C${s._x},${(s._y + t._y) / 2} ${t._x},${(s._y + t._y) / 2} ${t._x},${t._y}`,
      class: 'edge', stroke: l.weight > 0 ? '#2b6cb0' : '#c53030',
      'stroke-width': 0.4 + 3 * a, opacity: 0.15 + 0.75 * a}, edgeLayer);
    return {link: l, path, a};
  });
  const tip = document.getElementById('tip');
  const fmt = v => v === null || v === undefined ? '-' : (+v).toPrecision(4);
  const describe = n => [n.node_id, n.clerp || n.feature_type, 'activation ' + fmt(n.activation),
    'influence (cumulative) ' + fmt(n.influence), 'position ' + n.ctx_idx + ' "' +
    (tokens[n.ctx_idx] || '') + '"'].join('\n');
  let selected = null;
  const side = document.getElementById('side');
  const table = (title, rows) => {
    const h = document.createElement('h2');
    h.textContent = title;
    side.appendChild(h);
    const tb = document.createElement('table');
    rows.slice(0, 40).forEach(([id, w]) => {
      const tr = tb.insertRow();
      tr.insertCell().textContent = id;
      const c = tr.insertCell();
      c.textContent = w.toPrecision(3);
      c.className = 'w';
      tr.onclick = () => select(byId.get(id));
    });
    side.appendChild(tb);
  };
  const threshold = () => +document.getElementById('minw').value / 100;
  function render() {
    const cut = threshold();
    edges.forEach(e => {
      const on = e.a >= cut && (!selected || e.link.source === selected.node_id ||
                                e.link.target === selected.node_id);
      e.path.classList.toggle('faded', !on);
    });
  }
  function select(n) {
    selected = selected === n ? null : n;
    nodes.forEach(m => m._el.classList.toggle('selected', m === selected));
    side.innerHTML = '';
    if (selected) {
      const pre = document.createElement('pre');
      pre.textContent = describe(selected);
      side.appendChild(pre);
      const byW = (a, b) => Math.abs(b[1]) - Math.abs(a[1]);
      table('inputs', links.filter(l => l.target === selected.node_id)
        .map(l => [l.source, l.weight]).sort(byW));
      table('outputs', links.filter(l => l.source === selected.node_id)
        .map(l => [l.target, l.weight]).sort(byW));
    } else {
      side.textContent = 'Click a node to follow its edges.';
    }
    render();
  }
  nodes.forEach(n => {
    const shape = kindOf(n) === 'feature'
      ? el('circle', {cx: n._x, cy: n._y, r: 4.5})
      : el('rect', {x: n._x - 4.5, y: n._y - 4.5, width: 9, height: 9});
    shape.setAttribute('class', 'node ' + kindOf(n));
    shape.onmousemove = ev => {
      tip.style.display = 'block';
      tip.style.left = ev.clientX + 12 + 'px';
      tip.style.top = ev.clientY + 12 + 'px';
      tip.textContent = describe(n);
    };
    shape.onmouseleave = () => { tip.style.display = 'none'; };
    shape.onclick = () => select(n);
    n._el = shape;
  });
  document.getElementById('minw').oninput = render;
  document.getElementById('counts').textContent = nodes.length + ' nodes, ' + links.length + ' edges';
  select(null);
})();

// wan-accel in the editor: one look for all of the pack's nodes, and a stats panel under each of them showing what
// the last run really did (attention backend and fallbacks, cache steps, dequant path, time per step, ...).
// The server sends the numbers as the "wan_accel.stats" websocket event (nodes/stats/) and keeps the latest per
// node at GET /wan_accel/stats, which a reloaded editor and nodes served from the host's cache read back.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const NODE_PREFIX = "WanAccel";
const NODE_COLOR = "#1f4e5f";
const NODE_BGCOLOR = "#163843";
const STATS_EVENT = "wan_accel.stats";
const STATS_ROUTE = "/wan_accel/stats";

const PANEL = {
  gap: 5, padding: 5, lineHeight: 14, minWidth: 220, stripe: 3, radius: 6,
  font: "11px sans-serif", headerFont: "bold 11px sans-serif",
  background: "rgba(12, 30, 36, 0.94)", text: "#d5e6ea", header: "#7fd1c7",
  ok: "#3fb68b", warn: "#e6a23c",
};

let statsSignature = null;   // the graph (minus layout) the shown stats belong to
let pendingRestore = null;   // server-kept stats, applied once to the workflow the editor restores on load

function isOurs(node) {
  return (node?.comfyClass ?? node?.type ?? "").startsWith(NODE_PREFIX);
}

function allNodes(graph = app.graph) {
  const nodes = [];
  for (const node of graph?.nodes ?? []) {
    nodes.push(node);
    if (node.subgraph) nodes.push(...allNodes(node.subgraph));
  }
  return nodes;
}

// Prompt node ids are "12", or "5:3" for node 3 inside the subgraph node 5.
function nodeByExecutionId(executionId) {
  let graph = app.graph;
  let node = null;
  for (const part of String(executionId).split(":")) {
    node = graph?.getNodeById(Number(part)) ?? graph?.getNodeById(part);
    if (!node) return null;
    graph = node.subgraph;
  }
  return node;
}

// What a run depends on: node types, modes, widget values and links; positions and sizes are left out.
function graphSignature(serialised) {
  const part = (graph) => ({
    nodes: (graph?.nodes ?? [])
      .map((n) => [String(n.id), n.type, n.mode ?? 0, n.widgets_values ?? null, (n.inputs ?? []).map((i) => i.link ?? null)])
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0)),
    links: (graph?.links ?? [])
      .map((l) => (Array.isArray(l) ? l.slice(1, 5) : [l.origin_id, l.origin_slot, l.target_id, l.target_slot]))
      .map(String).sort(),
  });
  return JSON.stringify([part(serialised), (serialised?.definitions?.subgraphs ?? []).map(part)]);
}

function applyStats(message, { cached = false } = {}) {
  const node = nodeByExecutionId(message.node_id);
  if (!node || node.comfyClass !== message.node_type) return false;
  node.wanAccelStats = { ...message, cached };
  statsSignature = graphSignature(app.graph.serialize());
  node.setDirtyCanvas?.(true, true);
  return true;
}

function clearStats() {
  for (const node of allNodes()) {
    delete node.wanAccelStats;
    delete node.wanAccelDrawn;
  }
  statsSignature = null;
  app.graph?.setDirtyCanvas(true, true);
}

async function fetchKeptStats() {
  const response = await api.fetchApi(STATS_ROUTE, { cache: "no-store" });
  if (!response.ok) throw new Error(`GET ${STATS_ROUTE} answered ${response.status}`);
  return Object.values((await response.json()).nodes ?? {});
}

function panelRows(stats) {
  const time = new Date(stats.time * 1000).toLocaleTimeString([], { hourCycle: "h23" });  // 00:05, never 24:05
  return [
    { text: `⚡ wan-accel · ${stats.cached ? "cached, " : ""}${time}`, kind: "header" },
    ...stats.lines.map((text) => ({ text, kind: "line" })),
    ...stats.warnings.map((text) => ({ text: `⚠ ${text}`, kind: "warn" })),
  ];
}

function fitText(ctx, text, width) {
  if (ctx.measureText(text).width <= width) return text;
  let end = text.length;
  while (end > 1 && ctx.measureText(text.slice(0, end) + "…").width > width) end -= 1;
  return text.slice(0, end) + "…";
}

// The panel's place in graph space: just under the node's body, as wide as the node.
function panelBox(node) {
  const rows = panelRows(node.wanAccelStats);
  return { rows, x: node.pos[0], y: node.pos[1] + node.size[1] + PANEL.gap,
    width: Math.max(node.size[0], PANEL.minWidth), height: PANEL.padding * 2 + rows.length * PANEL.lineHeight };
}

function overlaps(box, [x, y, width, height]) {
  return box.x < x + width && box.x + box.width > x && box.y < y + height && box.y + box.height > y;
}

function drawStatsPanel(ctx, node, box) {
  const accent = node.wanAccelStats.warnings.length ? PANEL.warn : PANEL.ok;
  ctx.save();
  ctx.fillStyle = PANEL.background;
  ctx.strokeStyle = accent;
  ctx.lineWidth = 1;
  ctx.beginPath();
  ctx.roundRect(box.x, box.y, box.width, box.height, PANEL.radius);
  ctx.fill();
  ctx.stroke();
  ctx.fillStyle = accent;
  ctx.fillRect(box.x, box.y + PANEL.radius, PANEL.stripe, box.height - 2 * PANEL.radius);
  ctx.textAlign = "left";
  ctx.textBaseline = "middle";
  const drawn = box.rows.map((row, index) => {
    ctx.font = row.kind === "header" ? PANEL.headerFont : PANEL.font;
    ctx.fillStyle = row.kind === "header" ? PANEL.header : row.kind === "warn" ? PANEL.warn : PANEL.text;
    const text = fitText(ctx, row.text, box.width - 2 * PANEL.padding - PANEL.stripe);
    ctx.fillText(text, box.x + PANEL.padding + PANEL.stripe, box.y + PANEL.padding + (index + 0.5) * PANEL.lineHeight);
    return text;
  });
  ctx.restore();
  node.wanAccelDrawn = { rows: drawn, accent, height: box.height };
}

// Panels are painted after every node, on the canvas's foreground layer, so a neighbour never hides one; they never
// change a node's size or the saved layout.
function drawStatsPanels(ctx, visibleArea) {
  for (const node of app.canvas.graph?.nodes ?? []) {
    if (!node.wanAccelStats || node.flags?.collapsed) continue;
    const box = panelBox(node);
    if (overlaps(box, visibleArea)) drawStatsPanel(ctx, node, box);
  }
}

// The host serves this folder twice when a pack names it both in pyproject.toml and as WEB_DIRECTORY: register once.
if (!app.extensions?.some((extension) => extension.name === "wan_accel.stats")) registerExtensions();

function registerExtensions() {
  app.registerExtension({
    name: "wan_accel.appearance",
    nodeCreated(node) {
      if (isOurs(node)) {
        node.color = NODE_COLOR;
        node.bgcolor = NODE_BGCOLOR;
      }
    },
  });

  app.registerExtension({
    name: "wan_accel.stats",
    async setup() {
      const drawForeground = app.canvas.onDrawForeground;
      app.canvas.onDrawForeground = function (ctx, visibleArea) {
        drawForeground?.call(this, ctx, visibleArea);
        drawStatsPanels(ctx, visibleArea);
      };
      api.addEventListener(STATS_EVENT, ({ detail }) => applyStats(detail));
      api.addEventListener("graphChanged", ({ detail }) => {
        if (statsSignature !== null && graphSignature(detail) !== statsSignature) clearStats();
      });
      // Nodes the host serves from its cache do not run again: show what they reported when they last ran.
      api.addEventListener("execution_cached", async ({ detail }) => {
        const ids = new Set((detail?.nodes ?? []).map(String));
        if (![...ids].some((id) => isOurs(nodeByExecutionId(id)))) return;
        for (const message of await fetchKeptStats()) {
          if (ids.has(String(message.node_id))) applyStats(message, { cached: true });
        }
      });
      try {
        pendingRestore = await fetchKeptStats();
        pendingRestore.forEach((message) => applyStats(message));
      } catch (error) {
        console.warn("wan-accel: could not read the kept node stats", error);
      }
    },
    async afterConfigureGraph() {
      statsSignature = null;
      const restore = pendingRestore;
      pendingRestore = null;
      restore?.forEach((message) => applyStats(message));
    },
  });
}

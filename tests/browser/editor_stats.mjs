// Drives the ComfyUI editor in Debian's headless Chromium (playwright-core, no downloaded browser) to check the
// wan-accel stats panels: load a workflow, queue it with the editor's own Queue Prompt command (what its Run button
// and Ctrl+Enter call), read our nodes' stats back from the page and the panel text back from the canvas, change
// the graph, queue again, reload the editor. Writes what it saw as JSON for tests/host/test_host_browser.py.
//
//   node tests/browser/editor_stats.mjs --url http://127.0.0.1:8188 --workflow wf.json \
//        --screenshots test-artifacts --result result.json [--changed-widget 11:steps=3]
// Screenshots: editor_stats.png (the whole graph but its notes) and editor_stats_<node type>.png (each of our nodes).
// Works with the front ends of ComfyUI 0.3.64 (1.27) and 0.33 (1.49): it uses only the app object, the api's
// events and the command store, never the menus' DOM, which differs between the two.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-quic"];
const OUR_SCRIPT = "/extensions/wan_accel/";
const STATS_ROUTE = "/wan_accel/stats";

const { values: options } = parseArgs({
  options: {
    url: { type: "string" }, workflow: { type: "string" }, screenshots: { type: "string" }, result: { type: "string" },
    "changed-widget": { type: "string", default: "" }, "timeout-ms": { type: "string", default: "300000" },
  },
});
const timeout = Number(options["timeout-ms"]);
const origin = new URL(options.url).origin;
const workflow = JSON.parse(readFileSync(options.workflow, "utf8"));
// http_errors: the host's answers >= 400 ("404 /path?query"); our_requests: every request for our script and stats
// route with its status; offline: requests off the host, refused here (the host's update check, for instance).
const result = { http_errors: [], request_failures: [], console_errors: [], page_errors: [], our_requests: [],
  offline: [], steps: {}, screenshots: [] };

function onHost(url) {
  return url.startsWith(origin + "/");
}

function hostPath(url) {
  const { pathname, search } = new URL(url);
  return pathname + search;
}

function watch(page) {
  page.on("console", (message) => {
    if (message.type() === "error" || (message.type() === "warning" && message.location().url.includes(OUR_SCRIPT))) {
      result.console_errors.push({ type: message.type(), text: message.text(), url: message.location().url });
    }
  });
  page.on("pageerror", (error) => result.page_errors.push(String(error?.stack ?? error)));
  page.on("response", (response) => {
    const url = response.url();
    if (!onHost(url)) return;
    if (response.status() >= 400) result.http_errors.push(`${response.status()} ${hostPath(url)}`);
    if (url.includes(OUR_SCRIPT) || url.includes(STATS_ROUTE)) {
      result.our_requests.push({ path: hostPath(url), status: response.status() });
    }
  });
  page.on("requestfailed", (request) => {
    const url = request.url();
    if (onHost(url)) result.request_failures.push(`${request.failure()?.errorText} ${hostPath(url)}`);
  });
}

// Canvas text log: every fillText on the editor's main canvas while ``window.__wanAccelCanvasText`` is an array,
// with its place in canvas pixels. Installed before the page's own scripts run.
function installCanvasTextLog() {
  const fillText = CanvasRenderingContext2D.prototype.fillText;
  CanvasRenderingContext2D.prototype.fillText = function (text, x, y, ...rest) {
    const log = window.__wanAccelCanvasText;
    if (Array.isArray(log) && window.__wanAccelForeground && this.canvas === window.app?.canvas?.canvas) {
      const point = this.getTransform().transformPoint(new DOMPoint(x, y));
      log.push({ text: String(text), x: point.x, y: point.y });
    }
    return fillText.call(this, text, x, y, ...rest);
  };
}

async function openEditor(page, navigate) {
  const statsRead = page.waitForResponse((r) => r.url().includes(STATS_ROUTE), { timeout });
  await navigate();
  await page.waitForFunction(
    () => window.app?.graph && window.app.canvas && window.app.extensions?.some((e) => e.name === "wan_accel.stats"),
    null, { timeout });
  await statsRead;  // our extension's setup asked the server for the kept stats
}

// Our nodes as the page sees them: the stats received, what the extension says it drew, and the panel text the
// canvas really painted in a fresh frame: the foreground layer's fillText calls inside the panel's box under the
// node, top to bottom (the nodes' own text, painted before, is left out).
function ourNodes(page) {
  return page.evaluate(() => {
    const { canvas } = window.app;
    const ours = window.app.graph.nodes.filter((n) => (n.comfyClass ?? "").startsWith("WanAccel"));
    const drawForeground = canvas.onDrawForeground;
    canvas.onDrawForeground = function (...args) {
      window.__wanAccelForeground = true;
      try {
        return drawForeground?.apply(this, args);
      } finally {
        window.__wanAccelForeground = false;
      }
    };
    window.__wanAccelCanvasText = [];
    try {
      canvas.draw(true, true);
    } finally {
      canvas.onDrawForeground = drawForeground;
    }
    const painted = window.__wanAccelCanvasText;
    window.__wanAccelCanvasText = null;
    const pixels = canvas.canvas.width / canvas.canvas.clientWidth;
    const toPixels = (point) => canvas.ds.convertOffsetToCanvas(point).map((v) => v * pixels);
    return ours.map((n) => {
      const drawn = n.wanAccelStats ? n.wanAccelDrawn ?? null : null;
      let canvasRows = null;
      if (drawn) {
        const [x0, y0] = toPixels([n.pos[0], n.pos[1] + n.size[1]]);
        const [x1, y1] = toPixels([n.pos[0] + Math.max(n.size[0], 220), n.pos[1] + n.size[1] + drawn.height + 10]);
        canvasRows = painted.filter((t) => t.x >= x0 && t.x <= x1 && t.y >= y0 && t.y <= y1)
          .sort((a, b) => a.y - b.y).map((t) => t.text);
      }
      return { id: String(n.id), type: n.comfyClass, color: n.color, bgcolor: n.bgcolor,
        stats: n.wanAccelStats ?? null, drawn, canvas_rows: canvasRows };
    });
  });
}

// Waits until every node of ours is in ``state``: "shown" (stats received and drawn), "kept" (stats received) or
// "cleared" (no stats).
async function waitForOurNodes(page, state) {
  await page.waitForFunction((wanted) => {
    const holds = { shown: (n) => n.wanAccelStats && n.wanAccelDrawn, kept: (n) => n.wanAccelStats,
      cleared: (n) => !n.wanAccelStats }[wanted];
    const nodes = window.app.graph.nodes.filter((n) => (n.comfyClass ?? "").startsWith("WanAccel"));
    return nodes.length > 0 && nodes.every(holds);
  }, state, { timeout, polling: 100 }).catch(async (error) => {
    result.last_seen = { nodes: await ourNodes(page), events: await page.evaluate(() => window.__wanAccelEvents) };
    throw error;
  });
  return ourNodes(page);
}

// Test-side log of the events the extension acts on, for the result file when a wait fails.
async function recordEvents(page) {
  await page.evaluate(() => {
    const api = window.comfyAPI.api.api;
    window.__wanAccelEvents = [];
    for (const type of ["wan_accel.stats", "execution_cached", "graphChanged", "execution_start"]) {
      api.addEventListener(type, (e) => window.__wanAccelEvents.push(
        { type, at: Date.now(), detail: type === "graphChanged" ? null : e.detail }));
    }
  });
}

// Queues with the editor's "Comfy.QueuePrompt" command; waits for the host's verdict on that prompt: "success",
// "error" (execution_error), "rejected" (the host refused the prompt: HTTP 400) or "timeout".
async function runFromEditor(page) {
  await page.evaluate(() => {
    const api = window.comfyAPI.api.api;
    window.__wanAccelRuns = {};
    for (const [type, status] of [["execution_success", "success"], ["execution_error", "error"]]) {
      api.addEventListener(type, (e) => { window.__wanAccelRuns[e.detail.prompt_id] = { status, detail: e.detail }; });
    }
  });
  const started = Date.now();
  const queued = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST",
    { timeout });
  await page.evaluate(() => window.app.extensionManager.command.execute("Comfy.QueuePrompt"));
  const response = await queued;
  const answer = await response.json();
  if (!response.ok()) return { status: "rejected", detail: answer, seconds: 0 };
  const run = await page.waitForFunction((id) => window.__wanAccelRuns[id], answer.prompt_id, { timeout, polling: 100 })
    .then((handle) => handle.jsonValue(), () => ({ status: "timeout", detail: { prompt_id: answer.prompt_id } }));
  return { ...run, seconds: (Date.now() - started) / 1000 };
}

// Scales and centres the view on the nodes ``ids`` select (all but notes when empty), stats panels included.
async function focusView(page, ids, maxScale) {
  await page.evaluate(([wanted, limit]) => {
    const { canvas, graph } = window.app;
    const nodes = graph.nodes.filter((n) => (wanted.length ? wanted.includes(String(n.id)) : !/Note$/.test(n.type)));
    if (!nodes.length) throw new Error(`focusView: no node ${wanted.join(", ") || "but notes"} in the graph`);
    const boxes = nodes.map((n) => [n.pos[0] - 10, n.pos[1] - 40, n.pos[0] + Math.max(n.size[0], 220) + 10,
      n.pos[1] + n.size[1] + (n.wanAccelDrawn ? n.wanAccelDrawn.height + 16 : 10)]);
    const [x0, y0] = [Math.min(...boxes.map((b) => b[0])), Math.min(...boxes.map((b) => b[1]))];
    const [x1, y1] = [Math.max(...boxes.map((b) => b[2])), Math.max(...boxes.map((b) => b[3]))];
    const el = canvas.canvas;
    const scale = Math.min(el.clientWidth / (x1 - x0), (el.clientHeight - 90) / (y1 - y0), limit) * 0.95;
    canvas.ds.scale = scale;
    canvas.ds.offset[0] = (el.clientWidth / scale - (x1 - x0)) / 2 - x0;
    canvas.ds.offset[1] = (el.clientHeight / scale - (y1 - y0)) / 2 - y0;
    canvas.setDirty(true, true);
  }, [ids, maxScale]);
  await page.waitForTimeout(500);
}

async function screenshot(page, name) {
  await page.screenshot({ path: join(options.screenshots, name) });
  result.screenshots.push(name);
}

// A fresh host user gets the template browser on first load, over the canvas; this run is no first visit.
await fetch(`${options.url}/api/settings/Comfy.TutorialCompleted`, { method: "POST", body: "true" });

const userDataDir = mkdtempSync(join(tmpdir(), "wan-accel-chromium-"));
const context = await chromium.launchPersistentContext(userDataDir, {
  executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1920, height: 1080 }, deviceScaleFactor: 1,
  locale: "en-US", timezoneId: "UTC",  // the panels' clock, which the test reads back
});
try {
  await context.route((url) => !onHost(url.href), (route) => {
    result.offline.push(route.request().url());
    return route.abort("internetdisconnected");
  });
  await context.addInitScript(installCanvasTextLog);
  const page = context.pages()[0] ?? await context.newPage();
  watch(page);
  await openEditor(page, () => page.goto(options.url, { waitUntil: "domcontentloaded", timeout }));
  await recordEvents(page);

  result.steps.load = await page.evaluate(async (wf) => {
    const missing = wf.nodes.map((n) => n.type).filter((t) => !(t in window.LiteGraph.registered_node_types));
    await window.app.loadGraphData(wf);
    await new Promise((r) => setTimeout(r, 300));
    const dialogs = [...document.querySelectorAll('.p-dialog, [role="dialog"]')].map((d) => d.innerText);
    return { missing, dialogs, node_types: window.app.graph.nodes.map((n) => n.type) };
  }, workflow);

  await focusView(page, [], 1.0);  // the canvas draws only the nodes in view
  result.steps.first_run = await runFromEditor(page);
  if (result.steps.first_run.status !== "success") throw new Error(`first run: ${JSON.stringify(result.steps.first_run)}`);
  result.steps.first_run.nodes = await waitForOurNodes(page, "shown");
  await focusView(page, [], 1.0);
  await screenshot(page, "editor_stats.png");
  for (const node of result.steps.first_run.nodes) {
    await focusView(page, [node.id], 1.6);
    await screenshot(page, `editor_stats_${node.type}.png`);
  }

  if (options["changed-widget"]) {
    const [, nodeId, widget, value] = options["changed-widget"].match(/^([^:]+):([^=]+)=(.*)$/);
    await page.evaluate(([id, name, v]) => {
      const w = window.app.graph.getNodeById(Number(id)).widgets.find((x) => x.name === name);
      w.value = typeof w.value === "number" ? Number(v) : v;
      window.dispatchEvent(new MouseEvent("mouseup"));  // both front ends look for graph changes on mouse-up
    }, [nodeId, widget, value]);
    result.steps.after_change = { nodes: await waitForOurNodes(page, "cleared") };
    await focusView(page, [], 1.0);
    result.steps.second_run = await runFromEditor(page);
    if (result.steps.second_run.status !== "success") throw new Error(`second run: ${JSON.stringify(result.steps.second_run)}`);
    result.steps.second_run.nodes = await waitForOurNodes(page, "shown");
  }

  await openEditor(page, () => page.reload({ waitUntil: "domcontentloaded", timeout }));
  await page.waitForFunction(  // the editor restores the open workflow after its setup
    () => window.app.graph.nodes.some((n) => (n.comfyClass ?? "").startsWith("WanAccel")), null, { timeout });
  await focusView(page, [], 1.0);
  result.steps.after_reload = { nodes: await waitForOurNodes(page, "shown") };
} catch (error) {
  result.error = String(error?.stack ?? error);
} finally {
  writeFileSync(options.result, JSON.stringify(result, null, 2));
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(result.error ? 1 : 0);

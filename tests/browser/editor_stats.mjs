// Drives the ComfyUI editor in Debian's headless Chromium (playwright-core, no downloaded browser) to check the
// wan-accel stats panels: load a workflow, queue it from the Run button, read our nodes' stats back from the page,
// change the graph, queue again, reload the editor. Writes what it saw as JSON for tests/host/test_host_browser.py.
//
//   node tests/browser/editor_stats.mjs --url http://127.0.0.1:8188 --workflow wf.json \
//        --screenshots test-artifacts --result result.json [--changed-widget 11:steps=3]
// Screenshots: editor_stats.png (the whole graph but its notes) and editor_stats_<node type>.png (each of our nodes).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { chromium } from "playwright-core";

const CHROMIUM = "/usr/bin/chromium";
const FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
  "--disable-component-update", "--disable-sync", "--disable-quic"];

const { values: options } = parseArgs({
  options: {
    url: { type: "string" }, workflow: { type: "string" }, screenshots: { type: "string" }, result: { type: "string" },
    "changed-widget": { type: "string", default: "" }, "timeout-ms": { type: "string", default: "300000" },
  },
});
const timeout = Number(options["timeout-ms"]);
const workflow = JSON.parse(readFileSync(options.workflow, "utf8"));
const result = { console_errors: [], failed_requests: [], steps: {}, screenshots: [] };

async function editorReady(page) {
  await page.waitForFunction(
    () => window.app?.graph && window.app.extensions?.some((e) => e.name === "wan_accel.stats"), null, { timeout });
}

// Our nodes as the page sees them: the stats received, and the rows the canvas last drew under the node.
function ourNodes(page) {
  return page.evaluate(() => window.app.graph.nodes
    .filter((n) => (n.comfyClass ?? "").startsWith("WanAccel"))
    .map((n) => ({ id: String(n.id), type: n.comfyClass, color: n.color, bgcolor: n.bgcolor,
      stats: n.wanAccelStats ?? null, drawn: n.wanAccelStats ? n.wanAccelDrawn ?? null : null })));
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

// Queues from the editor's own Run button; waits for the host's verdict on that prompt: "success", "error"
// (execution_error), "rejected" (the host refused the prompt: HTTP 400) or "timeout".
async function runFromEditor(page) {
  await page.evaluate(() => {
    const api = window.comfyAPI.api.api;
    window.__wanAccelRun = new Promise((resolve) => {
      api.addEventListener("execution_success", (e) => resolve({ status: "success", detail: e.detail }), { once: true });
      api.addEventListener("execution_error", (e) => resolve({ status: "error", detail: e.detail }), { once: true });
    });
  });
  const started = Date.now();
  const queued = page.waitForResponse((r) => r.url().endsWith("/api/prompt") && r.request().method() === "POST",
    { timeout });
  await page.locator('[data-testid="queue-button"] button').first().click();
  const response = await queued;
  if (!response.ok()) return { status: "rejected", detail: await response.json(), seconds: 0 };
  const run = await page.evaluate((ms) => Promise.race([window.__wanAccelRun,
    new Promise((resolve) => setTimeout(() => resolve({ status: "timeout", detail: null }), ms))]), timeout);
  return { ...run, seconds: (Date.now() - started) / 1000 };
}

// Scales and centres the view on the nodes ``ids`` select (all but notes when empty), stats panels included.
async function focusView(page, ids, maxScale) {
  await page.evaluate(([wanted, limit]) => {
    const { canvas, graph } = window.app;
    const nodes = graph.nodes.filter((n) => (wanted.length ? wanted.includes(String(n.id)) : !/Note$/.test(n.type)));
    const boxes = nodes.map((n) => [n.pos[0] - 10, n.pos[1] - 40, n.pos[0] + Math.max(n.size[0], 220) + 10,
      n.pos[1] + n.size[1] + (n.wanAccelDrawn ? n.wanAccelDrawn.height + 16 : 10)]);
    const [x0, y0] = [Math.min(...boxes.map((b) => b[0])), Math.min(...boxes.map((b) => b[1]))];
    const [x1, y1] = [Math.max(...boxes.map((b) => b[2])), Math.max(...boxes.map((b) => b[3]))];
    const el = canvas.canvas;
    const scale = Math.min(el.clientWidth / (x1 - x0), (el.clientHeight - 90) / (y1 - y0), limit) * 0.95;
    canvas.ds.scale = scale;
    canvas.ds.offset = [(el.clientWidth / scale - (x1 - x0)) / 2 - x0, (el.clientHeight / scale - (y1 - y0)) / 2 - y0];
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
  executablePath: CHROMIUM, headless: true, args: FLAGS, viewport: { width: 1920, height: 1080 },
});
try {
  const page = context.pages()[0] ?? await context.newPage();
  page.on("console", (m) => { if (m.type() === "error") result.console_errors.push(m.text()); });
  page.on("pageerror", (e) => result.console_errors.push(String(e?.stack ?? e)));
  page.on("response", (r) => { if (r.status() >= 400) result.failed_requests.push(`${r.status()} ${r.url()}`); });
  page.on("requestfailed", (r) => result.failed_requests.push(`${r.failure()?.errorText} ${r.url()}`));
  await page.goto(options.url, { waitUntil: "domcontentloaded", timeout });
  await editorReady(page);
  await recordEvents(page);

  result.steps.load = await page.evaluate(async (wf) => {
    const missing = wf.nodes.map((n) => n.type).filter((t) => !(t in window.LiteGraph.registered_node_types));
    await window.app.loadGraphData(wf);
    await new Promise((r) => setTimeout(r, 300));
    const dialogs = [...document.querySelectorAll(".p-dialog")].map((d) => d.innerText);
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
    }, [nodeId, widget, value]);
    await page.mouse.click(8, 500);  // the editor checks for graph changes on mouse-up
    result.steps.after_change = { nodes: await waitForOurNodes(page, "cleared") };
    await focusView(page, [], 1.0);
    result.steps.second_run = await runFromEditor(page);
    if (result.steps.second_run.status !== "success") throw new Error(`second run: ${JSON.stringify(result.steps.second_run)}`);
    result.steps.second_run.nodes = await waitForOurNodes(page, "shown");
  }

  await page.reload({ waitUntil: "domcontentloaded", timeout });
  await editorReady(page);
  result.steps.after_reload = { nodes: await waitForOurNodes(page, "kept") };
} catch (error) {
  result.error = String(error?.stack ?? error);
} finally {
  writeFileSync(options.result, JSON.stringify(result, null, 2));
  await context.close();
  rmSync(userDataDir, { recursive: true, force: true });
}
process.exit(result.error ? 1 : 0);

// The page's load-to-first-verdict time, measured in the browser: the page opens with
// `#example=valid`, which loads an example and validates it on start, and marks
// `regcred-script` when its script starts, `regcred-module` once the module is
// instantiated and `regcred-first-verdict` when the verdict is on screen; its `startTime` is milliseconds
// since navigation started (performance.timeOrigin). Every run gets a fresh browser
// context (empty cache), served from 127.0.0.1.
//
//   node js/page/bench.mjs [RUNS]     after js/build.sh; prints each run and the median
import { chromium } from "playwright-core";
import { serve } from "./serve.mjs";
import { fileURLToPath } from "node:url";

const runs = Number(process.argv[2] ?? 15);
const dir = fileURLToPath(new URL("../../target/js/page/", import.meta.url));
const server = await serve(dir);
const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  headless: true,
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const median = (values) => {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
};
try {
  const script = [];
  const module = [];
  const verdict = [];
  for (let i = 0; i < runs; i += 1) {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.url}#example=valid`);
    await page.waitForSelector("article.verdict[data-status=valid]");
    const [s, m, v] = await page.evaluate(() => ["regcred-script", "regcred-module", "regcred-first-verdict"]
      .map((name) => performance.getEntriesByName(name)[0].startTime));
    script.push(s);
    module.push(m);
    verdict.push(v);
    console.log(`run ${i + 1}: script running ${s.toFixed(1)} ms, module instantiated ${m.toFixed(1)} ms, first verdict ${v.toFixed(1)} ms`);
    await context.close();
  }
  console.log(`median of ${runs}: script running ${median(script).toFixed(1)} ms, module instantiated ${median(module).toFixed(1)} ms, first verdict ${median(verdict).toFixed(1)} ms (min ${Math.min(...verdict).toFixed(1)}, max ${Math.max(...verdict).toFixed(1)})`);
} finally {
  await browser.close();
  await server.close();
}

// Preloaded into a Node process (NODE_OPTIONS="--require .../node_loop_trace.cjs"), this records when its
// event loop was blocked: a 1 ms interval timer notes every gap between its ticks longer than
// LOOP_TRACE_MIN_MS (default 2 ms) as one JSON line {"end": epoch ms, "ms": blocked ms} in the file
// LOOP_TRACE_FILE. A gap is time in which no timer could run: synchronous code, a chain of microtasks, or a
// run of I/O callbacks. Written by benchmarks/openclaw_loop_blocks.py; does nothing without LOOP_TRACE_FILE.
"use strict";
const fs = require("node:fs");
const { performance } = require("node:perf_hooks");

const file = process.env.LOOP_TRACE_FILE;
if (file && !globalThis.__loopTrace) {
  globalThis.__loopTrace = true;
  const minMs = Number(process.env.LOOP_TRACE_MIN_MS || "2");
  const intervalMs = 1;
  const pending = [];
  let last = performance.now();
  setInterval(() => {
    const now = performance.now();
    const blocked = now - last - intervalMs;
    last = now;
    if (blocked > minMs) {
      pending.push(JSON.stringify({ end: +(performance.timeOrigin + now).toFixed(1), ms: +blocked.toFixed(1) }));
    }
  }, intervalMs).unref();
  const flush = () => {
    if (pending.length) fs.appendFileSync(file, pending.splice(0).join("\n") + "\n");
  };
  setInterval(flush, 250).unref();
  process.on("exit", flush);
}

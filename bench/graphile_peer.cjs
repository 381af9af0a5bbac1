// graphile-worker as a peer of bench_queue.py (run by it with NODE_PATH=bench/.peers/node_modules).
//
//   node bench/graphile_peer.cjs URL single N | batch N | drain N CONCURRENCY | latency SAMPLES
//
// Tuned as its performance page recommends: localQueue size 500, completeJobBatchDelay 0,
// failJobBatchDelay 0, a pool one larger than the concurrency. Prints one JSON line.
"use strict";
const { run, makeWorkerUtils } = require("graphile-worker");

const [url, mode, a, b] = process.argv.slice(2);
const CHUNK = 1000;

function preset(concurrency) {
  return {
    worker: {
      connectionString: url,
      concurrentJobs: concurrency,
      maxPoolSize: concurrency + 1,
      localQueue: { size: 500 },
      completeJobBatchDelay: 0,
      failJobBatchDelay: 0,
      pollInterval: 2000,
    },
  };
}

const now = () => Number(process.hrtime.bigint()) / 1e9;
const wall = () => (performance.timeOrigin + performance.now()) / 1000;

async function main() {
  const utils = await makeWorkerUtils({ connectionString: url });
  await utils.migrate();
  const n = Number(a);
  if (mode === "single") {
    const t = now();
    for (let i = 0; i < n; i++) await utils.addJob("noop", {});
    return { rate: n / (now() - t) };
  }
  if (mode === "batch") {
    const t = now();
    for (let start = 0; start < n; start += CHUNK) {
      const k = Math.min(CHUNK, n - start);
      await utils.addJobs(Array.from({ length: k }, () => ({ identifier: "noop", payload: {} })));
    }
    return { rate: n / (now() - t) };
  }
  if (mode === "drain") {
    const seen = { first: null, last: null, count: 0 };
    let resolve;
    const done = new Promise((r) => (resolve = r));
    const runner = await run({
      preset: preset(Number(b)),
      noHandleSignals: true,
      taskList: {
        noop: async () => {
          const t = Date.now() / 1000;
          seen.first = seen.first ?? t;
          if (++seen.count >= n) resolve();
        },
      },
    });
    await done;
    // the drain ends when the last completion is committed (graphile-worker deletes a job when
    // it completes it), as native's ends with its last finish, not when the last task starts
    for (;;) {
      const { rows } = await utils.withPgClient((client) =>
        client.query("select exists (select 1 from graphile_worker._private_jobs) as left"));
      if (!rows[0].left) break;
      await new Promise((r) => setImmediate(r));
    }
    seen.last = Date.now() / 1000;
    await runner.stop();
    return seen;
  }
  if (mode === "latency") {
    let waiting = null;
    const runner = await run({
      preset: preset(4),
      noHandleSignals: true,
      taskList: { stamp: async (payload) => waiting && waiting(wall() - payload.t) },
    });
    const once = async () => {
      const answer = new Promise((r) => (waiting = r));
      await utils.addJob("stamp", { t: wall() });
      return answer;
    };
    await once(); // the worker is up
    await new Promise((r) => setTimeout(r, 1000));
    const samples = [];
    const deadline = now() + 15;
    for (let i = 0; i < n && (i < 20 || now() < deadline); i++) {
      samples.push(await once());
      await new Promise((r) => setTimeout(r, 10));
    }
    await runner.stop();
    return { samples };
  }
  throw new Error(`unknown mode ${mode}`);
}

main()
  .then(async (result) => {
    process.stdout.write(JSON.stringify(result) + "\n");
    process.exit(0);
  })
  .catch((error) => {
    process.stderr.write(`graphile peer: ${error && error.message}\n`);
    process.exit(1);
  });

// Preloaded into Azurite (`node -r`) by devhost/azurite.py when AZURITE_GC_INTERVAL_MS is set.
// Azurite sweeps unreferenced extents every 10 minutes and removes each one from a LokiJS
// collection in time proportional to the collection's size: after a test suite's worth of
// deleted data that sweep held its one thread for over a minute (10,000 removals among 20,000
// extents took 53 s here). The interval is a module constant Azurite reads when it starts its
// sweepers; this sets it before Azurite loads.
"use strict";
const path = require("path");
const interval = Number(process.env.AZURITE_GC_INTERVAL_MS);
if (Number.isFinite(interval) && interval > 0) {
  const src = path.join(__dirname, "..", "node_modules", "azurite", "dist", "src");
  for (const service of ["blob", "queue"]) {
    require(path.join(src, service, "utils", "constants")).DEFAULT_GC_INTERVAL_MS = interval;
  }
}

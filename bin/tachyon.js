#!/usr/bin/env node
// The `tachyon` command: runs the compiled CLI (npm install builds it through the prepare script).
import { main } from '../dist/src/cli/main.js';
main(process.argv).catch((err) => {
  process.stderr.write(`tachyon: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

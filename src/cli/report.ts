// `tachyon report RESULTS... --output report.html`: benchmark result files to one self-contained HTML page.

import { Command } from 'commander';
import { writeFileSync } from 'node:fs';
import { loadResultFiles, renderReport } from '../report/html.js';

export function reportCommand(): Command {
  return new Command('report')
    .description('turn benchmark result files (bench serve --save-result, bench sweep, vllm bench serve) into one HTML page of charts')
    .argument('<results...>', 'result JSON files (one run, a list of runs, or JSON lines)')
    .option('--output <file>', 'the HTML file to write', 'report.html')
    .option('--title <text>', 'page title', 'tachyon benchmark report')
    .action((results: string[], f: { output: string; title: string }) => {
      const runs = loadResultFiles(results);
      writeFileSync(f.output, renderReport(runs, { title: f.title }));
      process.stdout.write(`${runs.length} run${runs.length === 1 ? '' : 's'} → ${f.output}\n`);
    });
}

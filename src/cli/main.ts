// The `tachyon` command line: one subcommand per file in this folder, no logic of its own here.

import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TachyonError } from '../errors.js';
import { packageRoot } from '../model/default-model.js';
import { benchCommand } from './bench.js';
import { chatCommand } from './chat.js';
import { evalCommand } from './eval.js';
import { generateCommand } from './generate.js';
import { planCommand } from './plan.js';
import { quantizeCommand } from './quantize.js';
import { reportCommand } from './report.js';
import { serveCommand } from './serve.js';

export async function main(argv: string[]): Promise<void> {
  const version = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
  const program = new Command('tachyon')
    .description('run Llama-family language models fast, from TypeScript')
    .version(version)
    .showHelpAfterError()
    .exitOverride();
  program.addCommand(generateCommand().exitOverride());
  program.addCommand(chatCommand().exitOverride());
  program.addCommand(quantizeCommand().exitOverride());
  program.addCommand(serveCommand().exitOverride());
  program.addCommand(evalCommand().exitOverride());
  program.addCommand(benchCommand().exitOverride());
  program.addCommand(planCommand().exitOverride());
  program.addCommand(reportCommand().exitOverride());
  try {
    await program.parseAsync(argv);
  } catch (err) {
    if (err instanceof CommanderError) {
      process.exitCode = err.exitCode;
      return;
    }
    if (err instanceof TachyonError) {
      process.stderr.write(`tachyon: ${err.message}\n`);
      process.exitCode = 1;
      return;
    }
    throw err;
  }
}

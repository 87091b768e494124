// The `tachyon` command line: one subcommand per file in this folder, no logic of its own here.

import { Command, CommanderError } from 'commander';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { TachyonError } from '../errors.js';
import { packageRoot } from '../model/default-model.js';
import { chatCommand } from './chat.js';
import { generateCommand } from './generate.js';

export async function main(argv: string[]): Promise<void> {
  const version = JSON.parse(readFileSync(join(packageRoot(), 'package.json'), 'utf8')).version as string;
  const program = new Command('tachyon')
    .description('run Llama-family language models fast, from TypeScript')
    .version(version)
    .showHelpAfterError()
    .exitOverride();
  program.addCommand(generateCommand().exitOverride());
  program.addCommand(chatCommand().exitOverride());
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

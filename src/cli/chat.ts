// `tachyon chat`: talk to a model through its chat template, interactively or with one --message.

import { createInterface } from 'node:readline/promises';
import { Command } from 'commander';
import { collect, LLM } from '../llm.js';
import type { ChatMessage } from '../model/chat-template.js';
import { addModelOptions, addSamplingOptions, loadOptionsFrom, printLoadMessages, samplingFrom, specDecodeLine, speedLine, type ModelFlags, type SamplingFlags } from './options.js';

interface ChatFlags extends ModelFlags, SamplingFlags {
  message?: string;
  system?: string;
}

export function chatCommand(): Command {
  const cmd = new Command('chat').description('chat with a model (interactive, or one --message)').option('--message <text>', 'send one message, print the reply and exit').option('--system <text>', 'a system message to start the conversation');
  addModelOptions(cmd);
  addSamplingOptions(cmd, 256);
  return cmd.action(async (flags: ChatFlags) => {
    const llm = await LLM.load(loadOptionsFrom(flags));
    printLoadMessages(llm);
    const history: ChatMessage[] = flags.system ? [{ role: 'system', content: flags.system }] : [];
    const reply = async (content: string) => {
      history.push({ role: 'user', content });
      const result = await collect(
        (async function* () {
          for await (const chunk of llm.chat(history, samplingFrom(flags))) {
            process.stdout.write(chunk.text);
            yield chunk;
          }
        })(),
      );
      process.stdout.write('\n');
      process.stderr.write(speedLine(result) + '\n');
      const spec = specDecodeLine(llm.specDecodeStats());
      if (spec) process.stderr.write(spec + '\n');
      history.push({ role: 'assistant', content: result.text });
    };
    try {
      if (flags.message !== undefined) {
        await reply(flags.message);
        return;
      }
      const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: process.stdin.isTTY });
      process.stderr.write('type a message and press enter; /reset clears the conversation, /exit or Ctrl-D leaves\n');
      for (;;) {
        let line: string;
        try {
          line = await rl.question('> ');
        } catch {
          break; // stdin closed
        }
        const text = line.trim();
        if (text === '/exit') break;
        if (text === '/reset') {
          history.splice(flags.system ? 1 : 0);
          continue;
        }
        if (text) await reply(text);
      }
      rl.close();
    } finally {
      await llm.close();
    }
  });
}

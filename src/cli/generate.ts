// `tachyon generate`: complete one prompt in-process, streaming text to stdout and a speed line to stderr.

import { Command } from 'commander';
import { LLM, timingsOf } from '../llm.js';
import { addModelOptions, addSamplingOptions, loadOptionsFrom, printLoadMessages, samplingFrom, specDecodeLine, speedLine, type ModelFlags, type SamplingFlags } from './options.js';

interface GenerateFlags extends ModelFlags, SamplingFlags {
  prompt: string;
  json?: boolean;
}

export function generateCommand(): Command {
  const cmd = new Command('generate').description('generate a continuation of a prompt').requiredOption('--prompt <text>', 'the text to continue').option('--json', 'print one JSON object {text, token_ids, usage, timings} instead of streaming');
  addModelOptions(cmd);
  addSamplingOptions(cmd, 128);
  return cmd.action(async (flags: GenerateFlags) => {
    const llm = await LLM.load(loadOptionsFrom(flags));
    printLoadMessages(llm);
    try {
      const t0 = performance.now();
      let first = 0;
      let text = '';
      const tokenIds: number[] = [];
      let last;
      for await (const chunk of llm.generate(flags.prompt, samplingFrom(flags))) {
        if (first === 0 && chunk.tokenIds.length > 0) first = performance.now();
        if (!flags.json) process.stdout.write(chunk.text);
        text += chunk.text;
        tokenIds.push(...chunk.tokenIds);
        last = chunk;
      }
      const end = performance.now();
      const usage = last!.usage;
      const timings = timingsOf(t0, first || end, end, usage);
      if (flags.json) {
        const out = {
          text,
          token_ids: tokenIds,
          finish_reason: last!.finishReason,
          usage: { prompt_tokens: usage.promptTokens, completion_tokens: usage.completionTokens, total_tokens: usage.totalTokens },
          timings: { ttft_ms: timings.ttftMs, total_ms: timings.totalMs, prefill_tokens_per_s: timings.prefillTokensPerSecond, decode_tokens_per_s: timings.decodeTokensPerSecond },
          model: llm.loaded.dir,
          weight_bytes: llm.loaded.weightBytes,
          ...(llm.specDecodeStats() && { spec_decode: specDecodeJson(llm.specDecodeStats()!) }),
        };
        process.stdout.write(JSON.stringify(out) + '\n');
      } else {
        process.stdout.write('\n');
        process.stderr.write(speedLine({ usage, timings }) + '\n');
        const spec = specDecodeLine(llm.specDecodeStats());
        if (spec) process.stderr.write(spec + '\n');
      }
    } finally {
      await llm.close();
    }
  });
}

/** vLLM's counter names and the two figures derived from them. */
function specDecodeJson(s: { numDrafts: number; numDraftTokens: number; numAcceptedTokens: number; acceptedTokensPerPos: number[] }) {
  return {
    num_drafts: s.numDrafts,
    num_draft_tokens: s.numDraftTokens,
    num_accepted_tokens: s.numAcceptedTokens,
    accepted_tokens_per_pos: s.acceptedTokensPerPos,
    acceptance_rate: s.numDraftTokens > 0 ? s.numAcceptedTokens / s.numDraftTokens : null,
    mean_acceptance_length: s.numDrafts > 0 ? 1 + s.numAcceptedTokens / s.numDrafts : null,
  };
}

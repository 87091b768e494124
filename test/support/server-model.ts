// A small model directory the server tests can load like any Hugging Face model: a random tiny
// Llama checkpoint, the byte-level Llama 3 test tokenizer, a Llama-3-style chat template and a
// generation_config.json with the eos ids. Independent of the embedded default model.

import { copyFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fixturesDir } from './paths.js';
import { TINY_LLAMA, writeTinyCheckpoint } from './tiny-checkpoint.js';

const CHAT_TEMPLATE =
  "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m['role'] }}<|end_header_id|>\n\n" +
  "{{ m['content'] | trim }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";

/** The folder; vocab 1009 (1004 BPE tokens + 5 specials: bos 1004, eos 1005, eot 1008). */
export function writeServerTestModel(maxPositionEmbeddings = 512): string {
  const dir = writeTinyCheckpoint({ ...TINY_LLAMA, vocab_size: 1009, max_position_embeddings: maxPositionEmbeddings, bos_token_id: 1004, eos_token_id: 1005 });
  const tok = join(fixturesDir(), 'tokenizers', 'byte-level-llama3');
  copyFileSync(join(tok, 'tokenizer.json'), join(dir, 'tokenizer.json'));
  copyFileSync(join(tok, 'tokenizer_config.json'), join(dir, 'tokenizer_config.json'));
  writeFileSync(join(dir, 'chat_template.jinja'), CHAT_TEMPLATE);
  writeFileSync(join(dir, 'generation_config.json'), JSON.stringify({ bos_token_id: 1004, eos_token_id: [1005, 1008] }));
  return dir;
}

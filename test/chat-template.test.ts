// Chat templates rendered as transformers renders them: the committed fixtures
// (test/fixtures/chat-templates/cases.json, made by transformers) and hand-written cases. The expected
// strings of the hand-written templates below were produced by transformers 5.18 / Jinja2 3.1.6.

import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { InvalidRequestError, ModelLoadError } from '../src/errors.js';
import { loadChatTemplate, renderChatTemplate, strftime, validateMessages, type ChatMessage } from '../src/model/chat-template.js';
import { fixturesDir } from './support/paths.js';

interface TemplateCase {
  name: string;
  template: string;
  bos_token?: string | null;
  eos_token?: string | null;
  messages: ChatMessage[];
  add_generation_prompt: boolean;
  tools?: unknown[] | null;
  /** null when the template raises; then expected_error holds raise_exception's message. */
  expected: string | null;
  expected_error?: string;
}

describe('chat template fixtures rendered by transformers', () => {
  const path = join(fixturesDir(), 'chat-templates', 'cases.json');

  it('renders every fixture case exactly', () => {
    assert.ok(existsSync(path), `${path} is missing: the chat template fixtures must be committed`);
    const cases = JSON.parse(readFileSync(path, 'utf8')) as TemplateCase[];
    assert.ok(cases.length > 0, `${path} has no cases`);
    const mismatches: string[] = [];
    for (const c of cases) {
      let got: string;
      let error: unknown;
      try {
        got = renderChatTemplate(c.template, {
          messages: c.messages,
          addGenerationPrompt: c.add_generation_prompt,
          bosToken: c.bos_token ?? undefined,
          eosToken: c.eos_token ?? undefined,
          tools: c.tools ?? undefined,
        });
      } catch (err) {
        error = err;
        got = `<threw ${(err as Error).message}>`;
      }
      if (c.expected === null) {
        const ok = error instanceof InvalidRequestError && c.expected_error !== undefined && error.message === c.expected_error;
        if (!ok) mismatches.push(`${c.name}: got ${JSON.stringify(got)}, want an InvalidRequestError ${JSON.stringify(c.expected_error)}`);
      } else if (got !== c.expected) {
        mismatches.push(`${c.name}: got ${JSON.stringify(got)}, want ${JSON.stringify(c.expected)}`);
      }
    }
    assert.deepEqual(mismatches, [], `${mismatches.length} of ${cases.length} cases differ`);
  });
});

const SYSTEM_CHAT: ChatMessage[] = [{"role": "system", "content": "You are helpful.\n"}, {"role": "user", "content": "  Hi there  "}, {"role": "assistant", "content": "Hello! How can I help?"}, {"role": "user", "content": "Tell me a joke.\nPlease."}];
const MULTI_CHAT: ChatMessage[] = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}, {"role": "assistant", "content": "d"}, {"role": "user", "content": "e 你好 😀"}];

const LLAMA3 =
  "{{- bos_token }}{%- for message in messages %}{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}{%- endfor %}{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}";
const CHATML =
  "{%- for message in messages %}\n    {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n{%- endfor %}\n{%- if add_generation_prompt %}\n    {{- '<|im_start|>assistant\\n' }}\n{%- endif %}\n";
const GEMMA3 = "{{ bos_token }}\n{%- if messages[0]['role'] == 'system' -%}\n    {%- if messages[0]['content'] is string -%}\n        {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}\n    {%- else -%}\n        {%- set first_user_prefix = messages[0]['content'][0]['text'] + '\n\n' -%}\n    {%- endif -%}\n    {%- set loop_messages = messages[1:] -%}\n{%- else -%}\n    {%- set first_user_prefix = \"\" -%}\n    {%- set loop_messages = messages -%}\n{%- endif -%}\n{%- for message in loop_messages -%}\n    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}\n        {{ raise_exception(\"Conversation roles must alternate user/assistant/user/assistant/...\") }}\n    {%- endif -%}\n    {%- if (message['role'] == 'assistant') -%}\n        {%- set role = \"model\" -%}\n    {%- else -%}\n        {%- set role = message['role'] -%}\n    {%- endif -%}\n    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else \"\") }}\n    {%- if message['content'] is string -%}\n        {{ message['content'] | trim }}\n    {%- elif message['content'] is iterable -%}\n        {%- for item in message['content'] -%}\n            {%- if item['type'] == 'image' -%}\n                {{ '<start_of_image>' }}\n            {%- elif item['type'] == 'text' -%}\n                {{ item['text'] | trim }}\n            {%- endif -%}\n        {%- endfor -%}\n    {%- else -%}\n        {{ raise_exception(\"Invalid content type\") }}\n    {%- endif -%}\n    {{ '<end_of_turn>\n' }}\n{%- endfor -%}\n{%- if add_generation_prompt -%}\n    {{'<start_of_turn>model\n'}}\n{%- endif -%}\n";
const LLAMA2 = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}\n";
/** Loop controls, namespaces, filters, Python-style printing of lists and booleans, tojson. */
const FEATURES = "{# comment at top #}\n{% set ns = namespace(count=0, names=[]) %}\n  {% for m in messages %}\n    {% if m.role == 'system' %}{% continue %}{% endif %}\n    {% set ns.count = ns.count + 1 %}\n[{{ loop.index }}/{{ loop.length }}] {{ m.role | upper }}: {{ m.content | replace('\\n', ' ') | trim }}\n    {% if ns.count >= 3 %}{% break %}{% endif %}\n  {% endfor %}\ncount={{ ns.count }} first={{ messages[0].content[:5] }} last={{ (messages | last).role }} rev={{ messages | map(attribute='role') | reverse | join(',') }}\n{{ {'b': 1, 'a': [1, 2, {'x': 'ü'}], 'c': none, 'd': true} | tojson }}\n{{ {'b': 1, 'a': [1, 2]} | tojson(indent=2) }}\n{{ tools | tojson if tools else 'no tools' }}\n{{ 'yes' if tools is none else 'no' }} {{ 'defined' if documents is defined else 'undef' }} {{ enable_thinking | default(true) }}\n{% for k, v in {'x': 1, 'y': 2} | items %}{{ k }}={{ v }}{% if not loop.last %};{% endif %}{% endfor %}\n\n{{ \"%s-%d\" | format(\"a\", 3) if false else \"fmt-skip\" }} {{ range(3) | list }} {{ [3,1,2] | sort | join }} {{ \"  pad  \" | length }} {{ \"A,B\" .split(',') }} {{ \"abc\".startswith(\"a\") }} {{ 'x' ~ 5 }}\n{%- if add_generation_prompt %}\nGEN{{ eos_token }}\n{% endif %}\n";
/** trim_blocks / lstrip_blocks, comments, macros, selectattr, string methods. */
const WHITESPACE = "{# leading comment #}\n{% for m in messages %}\n    {% if m.role == 'user' %}\n  U: {{ m.content }}\n    {% else %}\n  A: {{ m.content }}\n    {%- endif %}\n{% endfor %}\n{%- macro tag(x) -%}\n<{{ x }}>\n{%- endmacro %}\n{{ tag('end') }}   {{ tag('x') }}\n  {# indented comment #}\ndone{% if add_generation_prompt %} gen{% endif %}\n{% for m in messages | selectattr('role', 'equalto', 'user') %}{{ loop.index }}{{ m.content[0] }}{% if loop.previtem is defined %}p{% endif %}{% endfor %}\n{% set x = messages | map(attribute='content') | list %}{{ x | length }} {{ x[-1] }} {{ 'a b c'.split()[1:] }} {{ 'Hello'.lower().title() }} {{ messages[0] is mapping }} {{ 'abc' is string }}\n";

describe('renderChatTemplate', () => {
  it('renders the Llama 3 and ChatML prompt shapes', () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
    ];
    assert.equal(
      renderChatTemplate(LLAMA3, { messages, addGenerationPrompt: true, bosToken: '<|begin_of_text|>' }),
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|><|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n',
    );
    assert.equal(renderChatTemplate(CHATML, { messages, addGenerationPrompt: false }), '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n');
    assert.equal(renderChatTemplate(CHATML, { messages, addGenerationPrompt: true }).endsWith('<|im_start|>assistant\n'), true);
  });

  it('matches transformers on real and feature-heavy templates', () => {
    assert.equal(renderChatTemplate(GEMMA3, { messages: SYSTEM_CHAT, addGenerationPrompt: true, bosToken: '<s>', eosToken: '</s>' }), "<s><start_of_turn>user\nYou are helpful.\n\n\nHi there<end_of_turn>\n<start_of_turn>model\nHello! How can I help?<end_of_turn>\n<start_of_turn>user\nTell me a joke.\nPlease.<end_of_turn>\n<start_of_turn>model\n");
    assert.equal(renderChatTemplate(LLAMA2, { messages: SYSTEM_CHAT, addGenerationPrompt: false, bosToken: '<s>', eosToken: '</s>' }), "<s>[INST] <<SYS>>\nYou are helpful.\n\n<</SYS>>\n\n  Hi there [/INST] Hello! How can I help? </s><s>[INST] Tell me a joke.\nPlease. [/INST]");
    assert.equal(renderChatTemplate(FEATURES, { messages: SYSTEM_CHAT, addGenerationPrompt: true, bosToken: '<s>', eosToken: '</s>' }), "[2/4] USER: Hi there\n[3/4] ASSISTANT: Hello! How can I help?\n[4/4] USER: Tell me a joke. Please.\ncount=3 first=You a last=user rev=user,assistant,user,system\n{\"b\": 1, \"a\": [1, 2, {\"x\": \"ü\"}], \"c\": null, \"d\": true}\n{\n  \"b\": 1,\n  \"a\": [\n    1,\n    2\n  ]\n}\nno tools\nyes defined True\nx=1;y=2\nfmt-skip [0, 1, 2] 123 7 ['A', 'B'] True x5GEN</s>\n");
    assert.equal(renderChatTemplate(WHITESPACE, { messages: MULTI_CHAT, addGenerationPrompt: true, bosToken: '<s>', eosToken: '</s>' }), "  U: a\n  A: b  U: c\n  A: d  U: e 你好 😀\n<end>   <x>\ndone gen1a2cp3ep5 e 你好 😀 ['b', 'c'] Hello True True");
  });

  it('keeps the output written before {% break %} and {% continue %} in the same iteration', () => {
    const t = "{% for m in messages %}<{{ m.content }}{% if m.content == 'b' %}!{% break %}{% endif %}>{% if loop.first %}{% continue %}{% endif %}.{% endfor %}|{% for x in [1, 2] %}{% continue %}{% else %}empty{% endfor %}";
    const messages = ['a', 'b', 'c'].map((content) => ({ role: 'user', content }));
    assert.equal(renderChatTemplate(t, { messages, addGenerationPrompt: false }), '<a><b!|empty');
    // Jinja2 runs a loop's else block when no iteration ran to its end.
    const one = [{ role: 'user', content: 'x' }];
    assert.equal(renderChatTemplate('{% for x in [1,2] %}{% break %}{% else %}empty{% endfor %}', { messages: one, addGenerationPrompt: false }), 'empty');
    assert.equal(renderChatTemplate('{% for x in [1,2] %}a{% if x == 2 %}{% continue %}{% endif %}b{% else %}empty{% endfor %}', { messages: one, addGenerationPrompt: false }), 'aba');
  });

  it('prints none, booleans, lists and dicts as Python does', () => {
    const t = "{{ none }}|{{ true }}|{{ [1, 'a', none, false] }}|{{ {'k': 'it\\'s', 'n': [2]} }}|{{ missing }}|{{ 1.5 }}";
    assert.equal(renderChatTemplate(t, { messages: [{ role: 'user', content: 'x' }], addGenerationPrompt: false }), "None|True|[1, 'a', None, False]|{'k': \"it's\", 'n': [2]}||1.5");
  });

  it('passes tools and documents as none when absent, and extra variables through', () => {
    const t = "{{ tools is none }} {{ documents is none }} {{ tools | length if tools else 0 }} {{ enable_thinking }} {{ bos_token is defined }}";
    const messages = [{ role: 'user', content: 'x' }];
    assert.equal(renderChatTemplate(t, { messages, addGenerationPrompt: false }), 'True True 0  False'); // undefined prints nothing
    assert.equal(renderChatTemplate(t, { messages, addGenerationPrompt: false, tools: [{ type: 'function' }], enable_thinking: false, bosToken: '<s>' }), 'False True 1 False True');
  });

  it('renders tojson like json.dumps(ensure_ascii=False), with indent and separators', () => {
    const t = "{{ x | tojson }}|{{ x | tojson(indent=2) }}|{{ x | tojson(separators=(',', ':')) }}";
    const x = { name: 'café ☀', list: [1, 2], nested: { ok: true, none: null } };
    assert.equal(
      renderChatTemplate(t, { messages: [{ role: 'user', content: 'x' }], addGenerationPrompt: false, x }),
      '{"name": "café ☀", "list": [1, 2], "nested": {"ok": true, "none": null}}|{\n  "name": "café ☀",\n  "list": [\n    1,\n    2\n  ],\n  "nested": {\n    "ok": true,\n    "none": null\n  }\n}|{"name":"café ☀","list":[1,2],"nested":{"ok":true,"none":null}}',
    );
  });

  it('turns raise_exception into an InvalidRequestError carrying the template message', () => {
    const messages = [
      { role: 'user', content: 'a' },
      { role: 'user', content: 'b' },
    ];
    assert.throws(
      () => renderChatTemplate(GEMMA3, { messages, addGenerationPrompt: true }),
      (e: unknown) => e instanceof InvalidRequestError && e.message === 'Conversation roles must alternate user/assistant/user/assistant/...',
    );
  });

  it('gives strftime_now today in Python strftime format', () => {
    const t = "{{ strftime_now('%d %b %Y') }}";
    const today = strftime(new Date(), '%d %b %Y');
    assert.match(today, /^\d\d [A-Z][a-z]{2} \d{4}$/);
    assert.equal(renderChatTemplate(t, { messages: [{ role: 'user', content: 'x' }], addGenerationPrompt: false }), today);
    const d = new Date(2024, 6, 26, 9, 5, 3); // 26 Jul 2024, a Friday, local time
    assert.equal(strftime(d, '%d %b %Y|%B %e|%A %a|%H:%M:%S %I%p|%y-%m-%d %j|%Y%%'), '26 Jul 2024|July 26|Friday Fri|09:05:03 09AM|24-07-26 208|2024%');
  });

  it('reports a template that cannot be parsed as a model problem', () => {
    assert.throws(() => renderChatTemplate('{% for %}', { messages: [{ role: 'user', content: 'x' }], addGenerationPrompt: false }), ModelLoadError);
  });
});

describe('validateMessages', () => {
  it('joins OpenAI text parts with newlines and keeps other fields', () => {
    const out = validateMessages([
      { role: 'user', content: [{ type: 'text', text: 'one' }, { type: 'text', text: 'two' }], name: 'bob' },
      { role: 'assistant', content: null, tool_calls: [{ type: 'function', function: { name: 'f', arguments: '{}' } }] },
    ]);
    assert.deepEqual(out[0], { role: 'user', content: 'one\ntwo', name: 'bob' });
    assert.equal(out[1]!.content, '');
    assert.ok(Array.isArray(out[1]!.tool_calls));
  });

  it('rejects what a template cannot use, naming the message', () => {
    const rejects = (messages: unknown, pattern: RegExp) => assert.throws(() => validateMessages(messages), (e: unknown) => e instanceof InvalidRequestError && pattern.test(e.message));
    rejects([], /non-empty list/);
    rejects('hi', /non-empty list/);
    rejects([{ content: 'x' }], /messages\[0\]\.role/);
    rejects([{ role: 'user', content: 'ok' }, { role: 'user' }], /messages\[1\]\.content/);
    rejects([{ role: 'user', content: 5 }], /messages\[0\]\.content/);
    rejects([{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'x' } }] }], /messages\[0\]\.content\[0\].*"image_url"/);
    rejects([null], /messages\[0\]/);
  });

  it('is applied by renderChatTemplate', () => {
    assert.throws(() => renderChatTemplate(CHATML, { messages: [], addGenerationPrompt: true }), InvalidRequestError);
    assert.throws(() => renderChatTemplate(CHATML, { messages: [{ role: 'user', content: 'x' }], addGenerationPrompt: true, tools: 'nope' as unknown as unknown[] }), InvalidRequestError);
  });
});

describe('loadChatTemplate', () => {
  const dir = (files: Record<string, string>) => {
    const d = mkdtempSync(join(tmpdir(), 'tachyon-chat-'));
    for (const [name, text] of Object.entries(files)) writeFileSync(join(d, name), text);
    return d;
  };

  it('prefers chat_template.jinja over tokenizer_config.json', () => {
    assert.equal(loadChatTemplate(dir({ 'chat_template.jinja': 'FILE', 'tokenizer_config.json': JSON.stringify({ chat_template: 'CONFIG' }) })), 'FILE');
    assert.equal(loadChatTemplate(dir({ 'tokenizer_config.json': JSON.stringify({ chat_template: 'CONFIG' }) })), 'CONFIG');
  });

  it('uses the "default" entry of a list of named templates', () => {
    const list = [
      { name: 'tool_use', template: 'TOOLS' },
      { name: 'default', template: 'DEFAULT' },
    ];
    assert.equal(loadChatTemplate(dir({ 'tokenizer_config.json': JSON.stringify({ chat_template: list }) })), 'DEFAULT');
    assert.equal(loadChatTemplate(dir({ 'tokenizer_config.json': JSON.stringify({ chat_template: [list[0]] }) })), undefined);
  });

  it('returns undefined when the model has no template', () => {
    assert.equal(loadChatTemplate(dir({})), undefined);
    assert.equal(loadChatTemplate(dir({ 'tokenizer_config.json': JSON.stringify({ bos_token: '<s>' }) })), undefined);
  });

  it('names the file when tokenizer_config.json is malformed', () => {
    const d = dir({ 'tokenizer_config.json': '{"chat_template": ' });
    assert.throws(() => loadChatTemplate(d), (e: unknown) => e instanceof ModelLoadError && e.message.includes(join(d, 'tokenizer_config.json')));
    const bad = dir({ 'tokenizer_config.json': JSON.stringify({ chat_template: 42 }) });
    assert.throws(() => loadChatTemplate(bad), (e: unknown) => e instanceof ModelLoadError && /chat_template must be/.test(e.message));
  });
});

// Chat templates: find a model's Jinja template and render a conversation into prompt text the way
// transformers' apply_chat_template does (trim_blocks + lstrip_blocks, raise_exception, tojson,
// strftime_now, tools/documents passed as None when absent).

import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as jinja from '@huggingface/jinja';
import { InvalidRequestError, ModelLoadError } from '../errors.js';

/** An OpenAI content part; only text parts are accepted. */
export interface ChatContentPart {
  type: string;
  text?: string;
  [key: string]: unknown;
}

export interface ChatMessage {
  role: string;
  /** Text, or OpenAI text parts (joined with "\n", as vLLM does); null only beside tool_calls (read as ""). */
  content: string | ChatContentPart[] | null;
  /** Other fields (name, tool_calls, tool_call_id, ...) reach the template unchanged. */
  [key: string]: unknown;
}

export interface ChatTemplateVars {
  messages: ChatMessage[];
  addGenerationPrompt: boolean;
  bosToken?: string;
  eosToken?: string;
  /** JSON tool schemas; templates see `none` when absent, as in transformers. */
  tools?: unknown[] | null;
  documents?: unknown[] | null;
  /** Anything else is passed to the template under its own name (e.g. enable_thinking). */
  [extra: string]: unknown;
}

// The package's .d.ts re-exports from extensionless paths NodeNext cannot follow; type what is used.
interface JinjaProgram {
  readonly type: string;
}
interface JinjaValue {
  type: string;
  value: unknown;
  toString(): string;
}
interface JinjaForNode {
  body: unknown[];
}
declare class JinjaInterpreter {
  constructor(env: unknown);
  run(program: JinjaProgram): JinjaValue;
  evaluate(node: unknown, env: unknown): JinjaValue;
  evaluateBlock(statements: unknown[], env: unknown): JinjaValue;
  evaluateFor(node: JinjaForNode, env: unknown): JinjaValue;
}
const jinjaLib = jinja as unknown as {
  Template: new (source: string) => { parsed: JinjaProgram };
  Environment: new () => { set(name: string, value: unknown): unknown };
  Interpreter: typeof JinjaInterpreter;
};

/**
 * The library's interpreter with two departures from Jinja2 fixed: output before a
 * `{% break %}`/`{% continue %}` in the same iteration was dropped, and non-string values printed
 * as JavaScript (true, JSON lists, nothing for none) instead of Python's str() (True, ['a'], None).
 */
class TransformersInterpreter extends jinjaLib.Interpreter {
  /**
   * One entry per for loop being run, innermost last. Its body's output is collected here rather
   * than returned to the library, so the part written before a break/continue is not lost when the
   * library unwinds that iteration; the library still decides what break, continue and else do.
   */
  private readonly loops: { body: unknown[]; output: string }[] = [];

  override evaluateFor(node: JinjaForNode, env: unknown): JinjaValue {
    const loop = { body: node.body, output: '' };
    this.loops.push(loop);
    try {
      const rest = super.evaluateFor(node, env); // only the else block's output: bodies return ''
      rest.value = loop.output + (rest.value as string);
      return rest;
    } finally {
      this.loops.pop();
    }
  }

  override evaluateBlock(statements: unknown[], env: unknown): JinjaValue {
    const loop = this.loops[this.loops.length - 1];
    const isLoopBody = loop !== undefined && statements === loop.body;
    const out = super.evaluateBlock([], env); // a StringValue to fill in
    let text = '';
    for (const statement of statements) {
      let value: JinjaValue;
      try {
        value = this.evaluate(statement, env);
      } catch (err) {
        if (loopControl(err)) {
          const partial = text + ((err as { partialOutput?: string }).partialOutput ?? '');
          if (isLoopBody) loop.output += partial;
          else (err as { partialOutput?: string }).partialOutput = partial;
        }
        throw err;
      }
      // Statements ({% set %}, {% if %} ...) yield none when they print nothing; only an expression
      // ({{ ... }}) prints a value, and Jinja2 prints none as "None".
      if (STATEMENT_TYPES.has((statement as { type: string }).type)) {
        if (value.type !== 'NullValue' && value.type !== 'UndefinedValue') text += value.toString();
      } else {
        text += pythonStr(value);
      }
    }
    if (isLoopBody) {
      loop.output += text;
      text = '';
    }
    out.value = text;
    return out;
  }
}

const STATEMENT_TYPES = new Set(['Program', 'If', 'For', 'Break', 'Continue', 'Set', 'Macro', 'Comment', 'FilterStatement', 'CallStatement']);

/** The library signals break/continue with exceptions of these (unexported) classes. */
function loopControl(err: unknown): boolean {
  const name = (err as { constructor?: { name?: string } } | null)?.constructor?.name;
  return name === 'BreakControl' || name === 'ContinueControl';
}

/** Python's str() of a template value, as Jinja2 prints it. */
function pythonStr(v: JinjaValue): string {
  switch (v.type) {
    case 'StringValue':
      return v.value as string;
    case 'UndefinedValue':
      return '';
    case 'NullValue':
    case 'BooleanValue':
    case 'ArrayValue':
    case 'TupleValue':
    case 'ObjectValue':
      return pythonRepr(v);
    default:
      return v.toString();
  }
}

function pythonRepr(v: JinjaValue): string {
  switch (v.type) {
    case 'StringValue':
      return pythonStringRepr(v.value as string);
    case 'NullValue':
    case 'UndefinedValue':
      return 'None';
    case 'BooleanValue':
      return v.value ? 'True' : 'False';
    case 'ArrayValue':
      return `[${(v.value as JinjaValue[]).map(pythonRepr).join(', ')}]`;
    case 'TupleValue': {
      const items = (v.value as JinjaValue[]).map(pythonRepr);
      return items.length === 1 ? `(${items[0]},)` : `(${items.join(', ')})`;
    }
    case 'ObjectValue':
      return `{${[...(v.value as Map<string, JinjaValue>).entries()].map(([k, x]) => `${pythonStringRepr(k)}: ${pythonRepr(x)}`).join(', ')}}`;
    default:
      return v.toString();
  }
}

function pythonStringRepr(s: string): string {
  const quote = s.includes("'") && !s.includes('"') ? '"' : "'";
  let out = quote;
  for (const ch of s) {
    const cp = ch.codePointAt(0)!;
    if (ch === quote || ch === '\\') out += '\\' + ch;
    else if (ch === '\n') out += '\\n';
    else if (ch === '\r') out += '\\r';
    else if (ch === '\t') out += '\\t';
    else if (cp < 0x20 || cp === 0x7f) out += '\\x' + cp.toString(16).padStart(2, '0');
    else out += ch;
  }
  return out + quote;
}

/** Thrown by the template's raise_exception(); becomes an InvalidRequestError with its message. */
class TemplateRaised extends Error {}

const compiled = new Map<string, JinjaProgram>();
const MAX_COMPILED = 64;

/** Render `template` for a conversation; returns the prompt text. */
export function renderChatTemplate(template: string, vars: ChatTemplateVars): string {
  const { messages, addGenerationPrompt, bosToken, eosToken, tools, documents, ...extra } = vars;
  const context: Record<string, unknown> = {
    ...extra,
    messages: validateMessages(messages),
    add_generation_prompt: addGenerationPrompt === true,
    tools: validateList(tools, 'tools'),
    documents: validateList(documents, 'documents'),
  };
  if (bosToken !== undefined) context.bos_token = bosToken;
  if (eosToken !== undefined) context.eos_token = eosToken;

  const program = compile(template);
  const env = new jinjaLib.Environment();
  for (const [name, value] of Object.entries(globals())) env.set(name, value);
  for (const [name, value] of Object.entries(context)) {
    if (value !== undefined && !(name in GLOBAL_NAMES)) env.set(name, value);
  }
  try {
    const out = new TransformersInterpreter(env).run(program).value;
    return typeof out === 'string' ? out : String(out ?? '');
  } catch (err) {
    if (err instanceof TemplateRaised) throw new InvalidRequestError(err.message);
    throw new InvalidRequestError(`the chat template failed on these messages: ${(err as Error).message}`);
  }
}

/**
 * The model's chat template: `chat_template.jinja` if present, else tokenizer_config.json's
 * `chat_template` (a string, or a list of {name, template} from which "default" is used).
 * Undefined when the model has none.
 */
export function loadChatTemplate(dir: string): string | undefined {
  const jinjaPath = join(dir, 'chat_template.jinja');
  if (existsSync(jinjaPath)) {
    try {
      return readFileSync(jinjaPath, 'utf8');
    } catch (err) {
      throw new ModelLoadError(`${jinjaPath}: cannot read (${(err as Error).message})`);
    }
  }
  const configPath = join(dir, 'tokenizer_config.json');
  if (!existsSync(configPath)) return undefined;
  let config: unknown;
  try {
    config = JSON.parse(readFileSync(configPath, 'utf8'));
  } catch (err) {
    throw new ModelLoadError(`${configPath}: not valid JSON (${(err as Error).message})`);
  }
  const value = isRecord(config) ? config.chat_template : undefined;
  if (value === undefined || value === null) return undefined;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    for (const entry of value) {
      if (!isRecord(entry) || typeof entry.name !== 'string' || typeof entry.template !== 'string') {
        throw new ModelLoadError(`${configPath}: chat_template list entries must be {name, template} strings`);
      }
    }
    // Without a "default" entry transformers refuses to pick one; the model then has no usable default.
    const chosen = value.find((e) => (e as Record<string, unknown>).name === 'default');
    return chosen ? ((chosen as Record<string, unknown>).template as string) : undefined;
  }
  throw new ModelLoadError(`${configPath}: chat_template must be a string or a list of {name, template}`);
}

/**
 * Check a conversation and return it with OpenAI text parts joined into plain strings. Throws
 * InvalidRequestError naming the offending message.
 */
export function validateMessages(messages: unknown): ChatMessage[] {
  if (!Array.isArray(messages) || messages.length === 0) throw new InvalidRequestError('messages must be a non-empty list');
  return messages.map((m, i) => {
    const where = `messages[${i}]`;
    if (!isRecord(m)) throw new InvalidRequestError(`${where} must be an object with role and content`);
    if (typeof m.role !== 'string' || m.role.length === 0) throw new InvalidRequestError(`${where}.role must be a non-empty string`);
    const content = m.content;
    if (typeof content === 'string') return { ...m, role: m.role, content };
    if (Array.isArray(content)) {
      const texts = content.map((part, j) => {
        if (!isRecord(part) || part.type !== 'text' || typeof part.text !== 'string') {
          const type = isRecord(part) ? JSON.stringify(part.type) : typeof part;
          throw new InvalidRequestError(`${where}.content[${j}]: only {type: "text", text} parts are supported, got type ${type}`);
        }
        return part.text;
      });
      return { ...m, role: m.role, content: texts.join('\n') };
    }
    // An assistant turn that only calls tools may omit content; like vLLM, templates then see "".
    if ((content === null || content === undefined) && Array.isArray(m.tool_calls)) return { ...m, role: m.role, content: '' };
    throw new InvalidRequestError(`${where}.content must be a string or a list of text parts`);
  });
}

function validateList(value: unknown, name: string): unknown[] | null {
  if (value === undefined || value === null) return null;
  if (!Array.isArray(value)) throw new InvalidRequestError(`${name} must be a list`);
  return value;
}

function compile(template: string): JinjaProgram {
  let program = compiled.get(template);
  if (program) return program;
  try {
    program = new jinjaLib.Template(template).parsed;
  } catch (err) {
    throw new ModelLoadError(`the model's chat template cannot be parsed: ${(err as Error).message}`);
  }
  if (compiled.size >= MAX_COMPILED) compiled.delete(compiled.keys().next().value!);
  compiled.set(template, program);
  return program;
}

const GLOBAL_NAMES = { false: 1, true: 1, none: 1, False: 1, True: 1, None: 1, range: 1, raise_exception: 1, strftime_now: 1 };

/** What transformers puts in the template's globals (plus Jinja's literals and range). */
function globals(): Record<keyof typeof GLOBAL_NAMES, unknown> {
  return {
    false: false,
    true: true,
    none: null,
    False: false,
    True: true,
    None: null,
    range: pythonRange,
    raise_exception: (message: unknown) => {
      throw new TemplateRaised(String(message));
    },
    strftime_now: (format: unknown) => strftime(new Date(), String(format)),
  };
}

function pythonRange(start: number, stop?: number, step = 1): number[] {
  if (stop === undefined) [start, stop] = [0, start];
  if (step === 0) throw new Error('range() arg 3 must not be zero');
  const out: number[] = [];
  for (let i = start; step > 0 ? i < stop : i > stop; i += step) out.push(i);
  return out;
}

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'];

/** Python's datetime.strftime in the C locale (English names), on local time like datetime.now(). */
export function strftime(date: Date, format: string): string {
  const pad = (n: number, width = 2, fill = '0') => String(n).padStart(width, fill);
  const hour12 = date.getHours() % 12 === 0 ? 12 : date.getHours() % 12;
  const startOfYear = new Date(date.getFullYear(), 0, 1);
  const dayOfYear = Math.round((new Date(date.getFullYear(), date.getMonth(), date.getDate()).getTime() - startOfYear.getTime()) / 86_400_000) + 1;
  return format.replace(/%([a-zA-Z%])/g, (whole, code: string) => {
    switch (code) {
      case 'a':
        return DAYS[date.getDay()]!.slice(0, 3);
      case 'A':
        return DAYS[date.getDay()]!;
      case 'b':
      case 'h':
        return MONTHS[date.getMonth()]!.slice(0, 3);
      case 'B':
        return MONTHS[date.getMonth()]!;
      case 'd':
        return pad(date.getDate());
      case 'e':
        return pad(date.getDate(), 2, ' ');
      case 'm':
        return pad(date.getMonth() + 1);
      case 'y':
        return pad(date.getFullYear() % 100);
      case 'Y':
        return String(date.getFullYear());
      case 'H':
        return pad(date.getHours());
      case 'I':
        return pad(hour12);
      case 'p':
        return date.getHours() < 12 ? 'AM' : 'PM';
      case 'M':
        return pad(date.getMinutes());
      case 'S':
        return pad(date.getSeconds());
      case 'j':
        return pad(dayOfYear, 3);
      case 'w':
        return String(date.getDay());
      case 'F':
        return `${date.getFullYear()}-${pad(date.getMonth() + 1)}-${pad(date.getDate())}`;
      case 'D':
        return `${pad(date.getMonth() + 1)}/${pad(date.getDate())}/${pad(date.getFullYear() % 100)}`;
      case 'T':
        return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}`;
      case '%':
        return '%';
      default:
        return whole;
    }
  });
}

function isRecord(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

// How each quantization config names the modules it covers: compressed-tensors targets/ignore
// ("re:" regexes, exact names, class names), ModelOpt's fnmatch wildcards, GPTQModel's `dynamic`.

/** The module classes a Llama checkpoint has that a config can name by class. */
export type ModuleClass = 'Linear' | 'Embedding';

/** Python's re.match: anchored at the start only. Named groups use Python's (?P<name>…) spelling. */
export function pythonRegexMatch(pattern: string, name: string): boolean {
  return new RegExp(`^(?:${pattern.replace(/\(\?P</g, '(?<')})`).test(name);
}

/**
 * compressed-tensors' target matching: `re:<regex>` matched with re.match, otherwise an exact module
 * name or a module class name ("Linear").
 */
export function matchesCompressedTensorsTarget(target: string, module: string, moduleClass: ModuleClass): boolean {
  if (target.startsWith('re:')) return pythonRegexMatch(target.slice(3), module);
  return target === module || target === moduleClass;
}

/** Python fnmatch (case-sensitive form): `*`, `?`, `[seq]`, `[!seq]` over the whole name. */
export function fnmatch(name: string, pattern: string): boolean {
  let re = '';
  for (let i = 0; i < pattern.length; i++) {
    const c = pattern[i];
    if (c === '*') re += '.*';
    else if (c === '?') re += '.';
    else if (c === '[') {
      const end = pattern.indexOf(']', i + 2);
      if (end < 0) re += '\\[';
      else {
        let body = pattern.slice(i + 1, end);
        if (body.startsWith('!')) body = '^' + body.slice(1);
        re += `[${body.replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\/]/g, '\\$&');
  }
  return new RegExp(`^${re}$`, 's').test(name);
}

/** ModelOpt's exclude_modules / ignore: a pattern excludes a module when it matches it or one of its parents. */
export function excludedByModelOpt(patterns: readonly string[], module: string): boolean {
  const parts = module.split('.');
  const names = parts.map((_, i) => parts.slice(0, i + 1).join('.'));
  return patterns.some((p) => names.some((n) => fnmatch(n, p)));
}

/**
 * GPTQModel's per-module overrides (`dynamic`): keys are regexes matched with re.match; "-:" marks
 * modules left unquantized, "+:" (or no prefix) gives a dict overriding bits, group_size, sym, desc_act.
 * Returns 'skip', the override, or undefined.
 */
export function gptqDynamicOverride(dynamic: Record<string, unknown> | undefined, module: string): 'skip' | Record<string, unknown> | undefined {
  if (!dynamic) return undefined;
  for (const [key, value] of Object.entries(dynamic)) {
    if (key.startsWith('-:')) {
      if (pythonRegexMatch(key.slice(2), module)) return 'skip';
      continue;
    }
    const pattern = key.startsWith('+:') ? key.slice(2) : key;
    if (pythonRegexMatch(pattern, module)) return (value ?? {}) as Record<string, unknown>;
  }
  return undefined;
}

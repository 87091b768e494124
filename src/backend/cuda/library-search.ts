// Where a CUDA shared library (libnvrtc, libcublasLt) may be on a machine: the path an environment
// variable names, the dynamic loader's own search, CUDA toolkits (JetPack's targets/aarch64-linux
// too), the distribution's lib folders, ldconfig, and NVIDIA's Python wheels. Lazy, so the slower
// places (ldconfig, python3) are asked only when the fast ones fail.

import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

export interface LibrarySpec {
  /** The file name's stem: 'nvrtc' for libnvrtc.so.13. */
  name: string;
  /** An environment variable holding the library's path, tried first. */
  envVar: string;
  /** Major versions to ask the loader for by name, newest first. */
  majors: readonly string[];
  /** Folders under a wheel's site-packages/nvidia/ whose lib/ may hold it (cu13, cu12, cuda_nvrtc, …). */
  wheelDirs: readonly string[];
}

export function* libraryCandidates(spec: LibrarySpec, env: NodeJS.ProcessEnv = process.env): Generator<string> {
  const seen = new Set<string>();
  const fresh = (paths: string[]) => paths.filter((p) => !seen.has(p) && seen.add(p));
  const file = `lib${spec.name}.so`;
  const envPath = env[spec.envVar];
  if (envPath) yield* fresh([envPath]);
  // The dynamic loader's search (LD_LIBRARY_PATH, the ld.so cache): plain names.
  yield* fresh([file, ...spec.majors.map((m) => `${file}.${m}`)]);
  const roots = [env.CUDA_HOME, env.CUDA_PATH, '/usr/local/cuda', ...listDirs('/usr/local', /^cuda-[\d.]+$/)].filter((d): d is string => !!d);
  for (const root of roots) {
    for (const lib of ['lib64', 'lib', 'targets/x86_64-linux/lib', 'targets/aarch64-linux/lib', 'targets/sbsa-linux/lib']) yield* fresh(librariesIn(join(root, lib), spec.name));
  }
  yield* fresh([...librariesIn('/usr/lib/x86_64-linux-gnu', spec.name), ...librariesIn('/usr/lib/aarch64-linux-gnu', spec.name)]);
  yield* fresh(fromLdconfig(spec.name));
  yield* fresh(fromPythonWheels(spec));
}

/** Entries of `dir` matching `re`, as paths, newest (highest-sorting) first; none if it is unreadable. */
export function listDirs(dir: string, re: RegExp): string[] {
  try {
    return readdirSync(dir)
      .filter((n) => re.test(n))
      .sort()
      .reverse()
      .map((n) => join(dir, n));
  } catch {
    return [];
  }
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

/** lib<name>.so* in a folder (not e.g. libnvrtc-builtins), newest version first. */
function librariesIn(dir: string, name: string): string[] {
  return listDirs(dir, new RegExp(`^lib${escape(name)}\\.so(\\.\\d+)*$`));
}

function fromLdconfig(name: string): string[] {
  try {
    const text = execFileSync('ldconfig', ['-p'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'], timeout: 5000 });
    return [...text.matchAll(new RegExp(`^\\s*lib${escape(name)}\\.so[^\\s]*\\s.*=>\\s*(\\S+)\\s*$`, 'gm'))].map((m) => m[1]);
  } catch {
    return [];
  }
}

/** NVIDIA's wheels put libraries in site-packages/nvidia/<dir>/lib; python3 says where site-packages are. */
function fromPythonWheels(spec: LibrarySpec): string[] {
  const sites = new Set<string>();
  for (const dir of [...listDirs('/usr/local/lib', /^python3/), ...listDirs('/usr/lib', /^python3/)]) {
    sites.add(join(dir, 'site-packages'));
    sites.add(join(dir, 'dist-packages'));
  }
  try {
    const text = execFileSync('python3', ['-c', 'import site,sys; print("\\n".join(site.getsitepackages() + [site.getusersitepackages()] + sys.path))'], {
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
      timeout: 10000,
    });
    for (const line of text.split('\n')) if (line.trim()) sites.add(line.trim());
  } catch {
    // no python3
  }
  const out: string[] = [];
  for (const site of sites) {
    const nvidia = join(site, 'nvidia');
    if (!existsSync(nvidia)) continue;
    for (const sub of spec.wheelDirs) out.push(...librariesIn(join(nvidia, sub, 'lib'), spec.name));
  }
  return out;
}

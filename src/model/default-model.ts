// Where the embedded default models live: models/ at the package root, shipped with the package.

import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ModelLoadError } from '../errors.js';

/** The package root: the folder holding package.json, found from this compiled file's location. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json'))) {
    const parent = dirname(dir);
    if (parent === dir) throw new Error('cannot find the tachyon package root');
    dir = parent;
  }
  return dir;
}

export const DEFAULT_MODEL_NAME = 'tachyon-tiny';
export const DEFAULT_DRAFT_MODEL_NAME = 'tachyon-tiny-draft';
export const DEFAULT_EAGLE3_MODEL_NAME = 'tachyon-tiny-eagle3';

export function embeddedModelDir(name: string): string {
  return join(packageRoot(), 'models', name);
}

/** The model directory to use: the one given, else the embedded default (with a clear error if absent). */
export function resolveModelDir(model?: string): string {
  if (model) return resolve(model);
  const dir = embeddedModelDir(DEFAULT_MODEL_NAME);
  if (!existsSync(join(dir, 'config.json'))) {
    throw new ModelLoadError(`no default model is installed (expected ${dir}); pass --model DIR with a Hugging Face model directory`);
  }
  return dir;
}

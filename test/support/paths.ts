// Locations of committed test fixtures, resolved from the compiled test's folder.
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packageRoot } from '../../src/model/default-model.js';

export function fixturesDir(): string {
  return join(packageRoot(), 'test', 'fixtures');
}

export const here = (url: string) => dirname(fileURLToPath(url));

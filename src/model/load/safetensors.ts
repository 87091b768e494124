// Reads safetensors checkpoints (single file or sharded with model.safetensors.index.json) lazily:
// only headers are read up front; each tensor's bytes are read once, when asked for, straight from
// the file, so a checkpoint is never held in memory twice.

import { closeSync, existsSync, fstatSync, openSync, readSync } from 'node:fs';
import { basename, join } from 'node:path';
import { ModelLoadError } from '../../errors.js';

/** Element size in bytes of every dtype the format defines that we can read as raw data. */
const DTYPE_BYTES: Record<string, number> = {
  BOOL: 1, U8: 1, I8: 1, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1,
  I16: 2, U16: 2, F16: 2, BF16: 2,
  I32: 4, U32: 4, F32: 4,
  I64: 8, U64: 8, F64: 8,
};

export type SafetensorsDtype = keyof typeof DTYPE_BYTES | string;

export interface TensorInfo {
  name: string;
  dtype: SafetensorsDtype;
  shape: number[];
  /** Absolute byte offset of the tensor's data in its file. */
  fileOffset: number;
  byteLength: number;
  file: string;
}

/** A tensor's raw little-endian bytes plus its declared dtype and shape. */
export interface HostTensor {
  dtype: SafetensorsDtype;
  shape: number[];
  bytes: Uint8Array;
}

const MAX_HEADER_BYTES = 100_000_000;

/** Parse and validate one file's header; throws ModelLoadError naming the file and the problem. */
export function readSafetensorsHeader(file: string): { tensors: TensorInfo[]; metadata: Record<string, string> } {
  let fd: number;
  try {
    fd = openSync(file, 'r');
  } catch (err) {
    throw new ModelLoadError(`${file}: cannot open (${(err as Error).message})`);
  }
  try {
    const fileSize = fstatSync(fd).size;
    if (fileSize < 8) throw new ModelLoadError(`${file}: truncated safetensors file (${fileSize} bytes, no header length)`);
    const lenBuf = Buffer.alloc(8);
    readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen > MAX_HEADER_BYTES || 8 + headerLen > fileSize) {
      throw new ModelLoadError(`${file}: corrupt safetensors header (declares ${headerLen} header bytes, file has ${fileSize})`);
    }
    const headerBuf = Buffer.alloc(headerLen);
    readSync(fd, headerBuf, 0, headerLen, 8);
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(headerBuf.toString('utf8'));
    } catch (err) {
      throw new ModelLoadError(`${file}: corrupt safetensors header (not valid JSON: ${(err as Error).message})`);
    }
    if (header === null || typeof header !== 'object' || Array.isArray(header)) {
      throw new ModelLoadError(`${file}: corrupt safetensors header (not a JSON object)`);
    }
    const dataStart = 8 + headerLen;
    const dataLen = fileSize - dataStart;
    const tensors: TensorInfo[] = [];
    let metadata: Record<string, string> = {};
    for (const [name, entry] of Object.entries(header)) {
      if (name === '__metadata__') {
        metadata = (entry ?? {}) as Record<string, string>;
        continue;
      }
      const e = entry as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
      if (typeof e?.dtype !== 'string' || !Array.isArray(e.shape) || !Array.isArray(e.data_offsets) || e.data_offsets.length !== 2) {
        throw new ModelLoadError(`${file}: tensor '${name}' has a malformed header entry`);
      }
      const elemBytes = DTYPE_BYTES[e.dtype];
      if (elemBytes === undefined) throw new ModelLoadError(`${file}: tensor '${name}' has unsupported dtype ${e.dtype}`);
      const shape = e.shape as number[];
      const [begin, end] = e.data_offsets as number[];
      const count = shape.reduce((a, b) => a * b, 1);
      if (!(Number.isInteger(begin) && Number.isInteger(end) && begin >= 0 && end >= begin && end <= dataLen)) {
        throw new ModelLoadError(`${file}: tensor '${name}' data [${begin}, ${end}) lies outside the file's ${dataLen} data bytes (truncated file?)`);
      }
      if (end - begin !== count * elemBytes) {
        throw new ModelLoadError(`${file}: tensor '${name}' holds ${end - begin} bytes but ${e.dtype}[${shape.join(', ')}] needs ${count * elemBytes}`);
      }
      tensors.push({ name, dtype: e.dtype, shape, fileOffset: dataStart + begin, byteLength: end - begin, file });
    }
    return { tensors, metadata };
  } finally {
    closeSync(fd);
  }
}

/** All tensors of a model directory, by name, from model.safetensors or a sharded index. */
export class SafetensorsCheckpoint {
  private readonly infos = new Map<string, TensorInfo>();
  private readonly fds = new Map<string, number>();

  private constructor(readonly dir: string) {}

  static open(dir: string): SafetensorsCheckpoint {
    const ckpt = new SafetensorsCheckpoint(dir);
    const index = join(dir, 'model.safetensors.index.json');
    const single = join(dir, 'model.safetensors');
    let files: string[];
    if (existsSync(index)) {
      let weightMap: Record<string, string>;
      try {
        weightMap = JSON.parse(readFileText(index)).weight_map;
      } catch (err) {
        throw new ModelLoadError(`${index}: not valid JSON (${(err as Error).message})`);
      }
      if (!weightMap || typeof weightMap !== 'object') throw new ModelLoadError(`${index}: has no "weight_map" object`);
      files = [...new Set(Object.values(weightMap))].map((f) => join(dir, f));
      for (const f of files) if (!existsSync(f)) throw new ModelLoadError(`${index}: names shard ${basename(f)}, which is missing from ${dir}`);
    } else if (existsSync(single)) {
      files = [single];
    } else {
      throw new ModelLoadError(`${dir}: no model weights found (expected model.safetensors or model.safetensors.index.json)`);
    }
    for (const f of files) {
      for (const t of readSafetensorsHeader(f).tensors) {
        if (ckpt.infos.has(t.name)) throw new ModelLoadError(`${f}: tensor '${t.name}' appears in more than one shard`);
        ckpt.infos.set(t.name, t);
      }
    }
    return ckpt;
  }

  get names(): string[] {
    return [...this.infos.keys()];
  }

  has(name: string): boolean {
    return this.infos.has(name);
  }

  info(name: string): TensorInfo {
    const info = this.infos.get(name);
    if (!info) throw new ModelLoadError(`${this.dir}: checkpoint has no tensor '${name}'`);
    return info;
  }

  /** Read one tensor's bytes from disk (into a fresh, aligned buffer). */
  read(name: string): HostTensor {
    const info = this.info(name);
    let fd = this.fds.get(info.file);
    if (fd === undefined) {
      fd = openSync(info.file, 'r');
      this.fds.set(info.file, fd);
    }
    // An ArrayBuffer of its own keeps typed-array views aligned whatever the file offset.
    const bytes = new Uint8Array(new ArrayBuffer(info.byteLength));
    let done = 0;
    while (done < info.byteLength) {
      const n = readSync(fd, bytes, done, info.byteLength - done, info.fileOffset + done);
      if (n === 0) throw new ModelLoadError(`${info.file}: unexpected end of file reading '${name}'`);
      done += n;
    }
    return { dtype: info.dtype, shape: info.shape, bytes };
  }

  close(): void {
    for (const fd of this.fds.values()) closeSync(fd);
    this.fds.clear();
  }
}

function readFileText(path: string): string {
  const fd = openSync(path, 'r');
  try {
    const size = fstatSync(fd).size;
    const buf = Buffer.alloc(size);
    readSync(fd, buf, 0, size, 0);
    return buf.toString('utf8');
  } finally {
    closeSync(fd);
  }
}

/** Serialise tensors to the safetensors format (used by tests and, later, by quantize). */
export function encodeSafetensors(tensors: Record<string, HostTensor>, metadata?: Record<string, string>): Buffer {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  const names = Object.keys(tensors);
  for (const name of names) {
    const t = tensors[name];
    header[name] = { dtype: t.dtype, shape: t.shape, data_offsets: [offset, offset + t.bytes.byteLength] };
    offset += t.bytes.byteLength;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const headerBytes = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + headerBytes.length + offset);
  out.writeBigUInt64LE(BigInt(headerBytes.length), 0);
  headerBytes.copy(out, 8);
  let pos = 8 + headerBytes.length;
  for (const name of names) {
    out.set(tensors[name].bytes, pos);
    pos += tensors[name].bytes.byteLength;
  }
  return out;
}

// CUDA graphs over decode steps. A Llama-8B decode step is ~260 kernel launches; issued one by one
// the GPU idles 1–2 µs between them (0.3–0.65 ms a step on the H100, docs/cuda.md). Replayed as one
// graph launch, the kernels run back to back.
//
// The model knows nothing of it: it runs a step through `StepGraphs.run(key, …)`, and while the step
// runs the driver hands every launch to a recording instead of the stream. The first step under a
// key builds its launches into graphs (chains of kernel nodes, in pieces of 8, 16, 32, … launches,
// each launched as soon as it is complete so the GPU works while the host runs the rest of the step).
// A later step under the key runs the same ops on the host again, each computing its launch as it
// always does, and the recording compares each launch with the node at its place: the same, nothing
// to do; different (a grid, a pointer, a scalar such as a sequence's block count or a kernel chosen by
// context length), that node is patched before its piece launches; a piece with a different number of
// launches is rebuilt. So a replay runs exactly the kernels the eager step would have, and the key only
// picks which recording to compare with (a poor key costs rebuilds, never correctness).
//
// For pointers to stay equal from step to step, a step's activations come from its graph's own arena
// (the same buffers in the same order each run, memory-pool.ts PoolArena), and its host arrays go to
// the graph's upload slots (the n-th array of a step to the n-th slot, rewritten in place when its
// contents change; stream order puts that after the previous replay).
//
// A cuBLASLt GEMM (steps of more than 8 tokens, and of 4 to 8 on 16-bit weights) is held too:
// captured from a side stream into a child graph at its place in the chain, and compared by its
// signature (shape, plan, pointers) like a launch; one that differs rebuilds its piece. What a graph cannot hold (a memset, an event, another upload)
// interrupts the recording: the deferred work is queued as usual and the rest of the step runs eagerly.
// A read back to the host launches the graph first.
//
// Steps of more than 8 tokens are recorded from the second time their key comes (decode steps of many
// sequences, speculative windows recur step after step; a prefill chunk's shape mostly does not, and
// building a graph for it would cost more than it saves).

import { CudaError, isCapturable, type CapturableWork, type CudaDriver, type DevicePtr, type Handle, type KernelLaunch, type LaunchRecorder, type RecordedWork } from './driver.js';
import { PoolArena, type DevicePool, type PooledBuffer } from './memory-pool.js';
import { GEMV_MAX_TOKENS, GRAPH_MAX_TOKENS } from '../../engine/kv-budget.js';

/** Host arrays of a step as the kernels see them on the device (the backend's StepUploads, or a graph's slots). */
export interface Uploads {
  get(key: string, arr: Int32Array | Float32Array): DevicePtr;
  /** Whether `ptr`, which get(key, …) returned, still holds that upload (nothing sent under key since, in this step). */
  holds(key: string, ptr: DevicePtr): boolean;
}

/** What the graphs did, for tests and benchmarks. */
export interface StepGraphStats {
  /** Steps run under `run`, recorded or not. */
  steps: number;
  /** Steps too large to record, or with graphs off: run eagerly. */
  eager: number;
  /** Steps that built a graph (a key's first step, or a piece whose launches differed in number). */
  builds: number;
  /** Steps replayed from existing graphs, patched or not. */
  replays: number;
  /** Nodes given new parameters before a replay. */
  patchedNodes: number;
  /** Recordings ended by work a graph cannot hold (the step finished eagerly). */
  interrupted: number;
  /** Graphs dropped to stay within maxGraphs. */
  evicted: number;
}

/** Graphs kept at once (least recently used dropped first). */
export const DEFAULT_MAX_GRAPHS = 32;

/** Whether graphs are on by default: $TACHYON_CUDA_GRAPHS=0 turns them off (like vLLM's --enforce-eager). */
export function cudaGraphsFromEnv(env: NodeJS.ProcessEnv = process.env): boolean {
  const v = env.TACHYON_CUDA_GRAPHS;
  if (v === undefined || v === '' || v === '1') return true;
  if (v === '0') return false;
  throw new CudaError(`TACHYON_CUDA_GRAPHS must be 0 or 1, got '${v}'`);
}

/**
 * Launches per piece of a recorded step: 8, 16, 32, … A step is recorded as a chain of graphs, each
 * launched as soon as its launches are in, so the GPU starts on the first few kernels while the host
 * is still running the rest of the step's ops (one graph per step would wait for the whole forward on
 * the host first, and serialise that time with the GPU's). Doubling keeps the pieces few.
 */
export function pieceLaunches(piece: number): number {
  return 8 * 2 ** Math.min(piece, 20);
}

/** One piece of a step: its launches (and captured work) as recorded (and patched since), nodes and executable graph. */
class Piece {
  launches: RecordedWork[] = [];
  nodes: Handle[] = [];
  graph: Handle | undefined;
  exec: Handle | undefined;

  constructor(private readonly driver: CudaDriver) {}

  /** Replace the graph with a chain of `launches`. */
  build(launches: RecordedWork[]): void {
    this.destroy();
    this.launches = launches;
    if (launches.length === 0) return;
    const graph = this.driver.createGraph();
    let prev: Handle | undefined;
    let prevLaunch: KernelLaunch | undefined;
    try {
      for (const l of launches) {
        // A kernel right after certain kernels may be chained programmatically (driver.ts); after library work not.
        const captured = isCapturable(l);
        this.nodes.push((prev = captured ? this.addCaptured(graph, prev, l) : this.driver.addKernelNode(graph, prev, l, prevLaunch)));
        prevLaunch = captured ? undefined : l;
      }
      this.graph = graph;
      this.exec = this.driver.instantiateGraph(graph);
    } catch (err) {
      this.graph = graph;
      this.destroy();
      throw err;
    }
  }

  /** Library work as a child graph node (the node holds a copy of what was captured). */
  private addCaptured(graph: Handle, after: Handle | undefined, w: CapturableWork): Handle {
    const child = this.driver.captureGraph(w.name, (stream) => w.issue(stream));
    try {
      return this.driver.addChildGraphNode(graph, after, child, w.name);
    } finally {
      this.driver.destroyGraph(child, undefined);
    }
  }

  destroy(): void {
    if (this.graph) this.driver.destroyGraph(this.graph, this.exec);
    this.graph = this.exec = undefined;
    this.nodes = [];
    this.launches = [];
  }
}

/** One key's recording: its pieces, arena and upload slots. */
class StepGraph {
  readonly pieces: Piece[] = [];
  readonly arena = new PoolArena();
  readonly uploads: SlotUploads;

  constructor(
    private readonly driver: CudaDriver,
    pool: DevicePool,
  ) {
    this.uploads = new SlotUploads(driver, pool);
  }

  piece(i: number): Piece {
    return (this.pieces[i] ??= new Piece(this.driver));
  }

  destroy(): void {
    for (const p of this.pieces) p.destroy();
    this.pieces.length = 0;
  }
}

/**
 * A graph's upload slots: the n-th distinct array a step uploads goes to slot n, a buffer kept for
 * the graph and rewritten only when the contents differ from what it holds. Within a step the same
 * array under the same key (every layer passes the batch's positions) maps to the slot it got first.
 */
class SlotUploads implements Uploads {
  private readonly slots: Array<{ buffer: PooledBuffer; held?: Int32Array | Float32Array }> = [];
  private next = 0;
  private readonly thisStep = new Map<string, { src: Int32Array | Float32Array; held: Int32Array | Float32Array; ptr: DevicePtr }>();

  constructor(
    private readonly driver: CudaDriver,
    private readonly pool: DevicePool,
  ) {}

  reset(): void {
    this.next = 0;
    this.thisStep.clear();
  }

  get(key: string, arr: Int32Array | Float32Array): DevicePtr {
    const seen = this.thisStep.get(key);
    if (seen && seen.src === arr && sameArray(seen.held, arr)) return seen.ptr;
    const bytes = Math.max(arr.byteLength, 4);
    let slot = this.slots[this.next];
    if (!slot || slot.buffer.bytes < bytes) {
      // Queued replays may still read the old buffer: the pool lends it again only in stream order.
      if (slot) this.pool.release(slot.buffer);
      slot = { buffer: this.pool.allocOutsideArena(bytes) };
      this.slots[this.next] = slot;
    }
    this.next++;
    if (!slot.held || !sameArray(slot.held, arr)) {
      this.driver.uploadNow(slot.buffer.ptr, arr);
      slot.held = arr.slice();
    }
    this.thisStep.set(key, { src: arr, held: slot.held, ptr: slot.buffer.ptr });
    return slot.buffer.ptr;
  }

  holds(key: string, ptr: DevicePtr): boolean {
    return this.thisStep.get(key)?.ptr === ptr;
  }

  /** Give every slot's buffer back to the pool. */
  dispose(): void {
    for (const s of this.slots) this.pool.release(s.buffer);
    this.slots.length = 0;
  }
}

function sameArray(a: Int32Array | Float32Array, b: Int32Array | Float32Array): boolean {
  if (a.constructor !== b.constructor || a.length !== b.length) return false;
  // Compare bits, so NaN equals NaN and -0 differs from 0 (what the device would see).
  const x = new Int32Array(a.buffer, a.byteOffset, a.length);
  const y = new Int32Array(b.buffer, b.byteOffset, b.length);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return false;
  return true;
}

/** One step's launches, compared piece by piece with its recording as they come. */
class Recording implements LaunchRecorder {
  private piece = 0;
  /** Launches of the current piece seen so far that matched (or patched) the recorded ones, in place. */
  private index = 0;
  private patches: Array<[number, KernelLaunch]> = [];
  /** Set once the current piece's launches stop lining up with the recorded ones: the piece, to build anew. */
  private fresh: RecordedWork[] | undefined;
  /** A piece of this step was built (else every piece was replayed). */
  private built = false;
  done = false;

  constructor(
    private readonly driver: CudaDriver,
    private readonly g: StepGraph,
    private readonly stats: StepGraphStats,
  ) {}

  kernel(fn: Handle, name: string, grid: [number, number, number], block: number, shared: number, argStorage: Buffer, argBytes: number): void {
    const copy = (): KernelLaunch => ({ fn, name, grid: [grid[0], grid[1], grid[2]], block, shared, args: Buffer.from(argStorage.subarray(0, argBytes)) });
    if (this.fresh) {
      this.fresh.push(copy());
    } else {
      const at = this.g.piece(this.piece).launches[this.index];
      // Another function at a node rebuilds the piece: its edges may be programmatic (driver.ts) by function.
      if (!at || isCapturable(at) || at.fn !== fn) {
        this.fresh = this.sofar();
        this.fresh.push(copy());
      } else {
        const same =
          at.block === block && at.shared === shared && at.grid[0] === grid[0] && at.grid[1] === grid[1] && at.grid[2] === grid[2] &&
          at.args.length === argBytes && argStorage.compare(at.args, 0, argBytes, 0, argBytes) === 0;
        if (!same) this.patches.push([this.index, copy()]);
        this.index++;
      }
    }
    if (this.seen === pieceLaunches(this.piece)) this.endPiece();
  }

  captured(work: CapturableWork): void {
    if (this.fresh) {
      this.fresh.push(work);
    } else {
      const at = this.g.piece(this.piece).launches[this.index];
      // The same work again needs nothing; other work (no patching a captured graph) rebuilds the piece.
      if (at && isCapturable(at) && at.signature.equals(work.signature)) {
        this.index++;
      } else {
        this.fresh = this.sofar();
        this.fresh.push(work);
      }
    }
    if (this.seen === pieceLaunches(this.piece)) this.endPiece();
  }

  /** Launches of the current piece so far. */
  private get seen(): number {
    return this.fresh ? this.fresh.length : this.index;
  }

  /** The current piece's launches so far, in order, as they should run. */
  private sofar(): RecordedWork[] {
    if (this.fresh) return this.fresh;
    const list = this.g.piece(this.piece).launches.slice(0, this.index);
    for (const [i, l] of this.patches) list[i] = l;
    return list;
  }

  /** Bring the current piece's graph in line with its launches (patch or build) and launch it. */
  private endPiece(): void {
    const p = this.g.piece(this.piece);
    if (!this.fresh && this.index !== p.launches.length) this.fresh = this.sofar();
    if (this.fresh) {
      p.build(this.fresh);
      this.built = true;
    } else {
      for (const [i, l] of this.patches) {
        this.driver.setKernelNode(p.exec!, p.nodes[i], l);
        p.launches[i] = l;
      }
      this.stats.patchedNodes += this.patches.length;
    }
    if (p.exec) this.driver.launchGraph(p.exec);
    this.piece++;
    this.index = 0;
    this.patches = [];
    this.fresh = undefined;
  }

  interrupt(): void {
    if (this.done) return;
    this.finish();
    for (const l of this.sofar()) {
      if (isCapturable(l)) {
        this.driver.otherStreamWork();
        l.issue(this.driver.stream);
      } else {
        this.driver.launchRecorded(l);
      }
    }
    this.stats.interrupted++;
  }

  flush(): void {
    if (this.done) return;
    if (this.seen > 0) this.endPiece();
    this.finish();
  }

  /** The step failed: nothing it deferred runs (the pieces are left as they were). */
  abandon(): void {
    this.done = true;
    this.driver.recorder = undefined;
  }

  private finish(): void {
    this.done = true;
    this.driver.recorder = undefined;
    if (this.built) this.stats.builds++;
    else this.stats.replays++;
  }
}

export class StepGraphs {
  enabled: boolean;
  /**
   * Steps of more tokens run eagerly. Every graph keeps its own activations, which the KV-cache
   * sizing sets aside for maxGraphs steps of this size (llm.ts, which lowers it to the engine's largest
   * decode step).
   */
  maxTokens = GRAPH_MAX_TOKENS;
  maxGraphs = DEFAULT_MAX_GRAPHS;
  readonly stats: StepGraphStats = { steps: 0, eager: 0, builds: 0, replays: 0, patchedNodes: 0, interrupted: 0, evicted: 0 };
  private readonly graphs = new Map<string, StepGraph>();
  /** Keys of steps of more than GEMV_MAX_TOKENS tokens run once, eagerly (recorded when they come again). */
  private readonly seenOnce = new Set<string>();
  private active: StepGraph | undefined;

  constructor(
    private readonly driver: CudaDriver,
    private readonly pool: DevicePool,
    enabled = cudaGraphsFromEnv(),
  ) {
    this.enabled = enabled;
  }

  /** The upload slots of the step being recorded, if one is. */
  get uploads(): Uploads | undefined {
    return this.active?.uploads;
  }

  /**
   * Run `step` (a forward pass's ops) so that its launches replay as one graph; see the top of the
   * file. Runs it eagerly when graphs are off, when it has more than maxTokens tokens, when it has
   * more than GEMV_MAX_TOKENS and its key is new, inside another recorded step, or when every launch
   * is synchronized (TACHYON_CUDA_SYNC names failing kernels).
   */
  run<T>(key: string, numTokens: number, step: () => T): T {
    this.stats.steps++;
    if (!this.enabled || numTokens > this.maxTokens || this.active || this.driver.recorder || this.driver.syncEveryLaunch || this.firstOfLarge(key, numTokens)) {
      this.stats.eager++;
      return step();
    }
    const g = this.graphFor(key);
    g.arena.reset();
    g.uploads.reset();
    const recording = new Recording(this.driver, g, this.stats);
    this.active = g;
    this.pool.arena = g.arena;
    this.driver.recorder = recording;
    let ok = false;
    try {
      const out = step();
      ok = true;
      return out;
    } finally {
      this.active = undefined;
      this.pool.arena = undefined;
      if (!recording.done) {
        if (ok) recording.flush();
        else recording.abandon();
      }
    }
  }

  /** Whether this is the first step under `key` of more than GEMV_MAX_TOKENS tokens (noting it if so). */
  private firstOfLarge(key: string, numTokens: number): boolean {
    if (numTokens <= GEMV_MAX_TOKENS || this.graphs.has(key) || this.seenOnce.delete(key)) return false;
    // Bounded: prefill chunks bring a new key nearly every step.
    if (this.seenOnce.size >= 4 * this.maxGraphs) this.seenOnce.clear();
    this.seenOnce.add(key);
    return true;
  }

  private graphFor(key: string): StepGraph {
    let g = this.graphs.get(key);
    if (g) {
      this.graphs.delete(key); // most recently used last
    } else {
      g = new StepGraph(this.driver, this.pool);
      while (this.graphs.size >= this.maxGraphs) {
        const [oldest, old] = this.graphs.entries().next().value as [string, StepGraph];
        this.graphs.delete(oldest);
        this.drop(old);
        this.stats.evicted++;
      }
    }
    this.graphs.set(key, g);
    return g;
  }

  private drop(g: StepGraph): void {
    g.destroy();
    this.pool.adopt(g.arena);
    g.uploads.dispose();
  }

  /** Graphs held, and the device bytes their arenas keep. */
  get size(): { graphs: number; arenaBytes: number } {
    let arenaBytes = 0;
    for (const g of this.graphs.values()) arenaBytes += g.arena.bytes;
    return { graphs: this.graphs.size, arenaBytes };
  }

  /** Drop every graph (their memory back to the pool). */
  clear(): void {
    for (const g of this.graphs.values()) this.drop(g);
    this.graphs.clear();
    this.seenOnce.clear();
  }
}

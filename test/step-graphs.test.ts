// The recording logic of CUDA graphs over decode steps (src/backend/cuda/step-graphs.ts) and the
// pool arenas that keep a graph's buffers fixed, on the CPU: a stand-in for the driver keeps what
// each graph node holds and what "runs" on the stream, so every sequence of steps can be checked to
// run exactly the launches the eager steps would have. The real graphs run on the GPU in
// cuda-graphs.test.ts.

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { CapturableWork, CudaDriver, KernelLaunch, LaunchRecorder } from '../src/backend/cuda/driver.js';
import { DevicePool, PoolArena, sizeClass } from '../src/backend/cuda/memory-pool.js';
import { StepGraphs } from '../src/backend/cuda/step-graphs.js';
import { Rng } from '../src/engine/rng.js';

/** A captured graph: what its work queued while captured. */
interface Captured {
  ran: string[];
}
type Node = { launch: KernelLaunch } | { child: Captured };
interface Graph {
  nodes: Node[];
}
interface Exec {
  graph: Graph;
  params: Array<KernelLaunch | Captured>;
}

const describeLaunch = (l: KernelLaunch) => `${l.name} ${l.grid.join('x')} [${[...l.args].join(',')}]`;

/** The driver calls step-graphs.ts and the pool make, on host memory; `ran` is what the GPU would run, in order. */
class StandInDriver {
  recorder: LaunchRecorder | undefined;
  syncEveryLaunch = false;
  readonly ran: string[] = [];
  readonly calls = { graphLaunches: 0, nodeSets: 0, builds: 0, uploads: 0, captures: 0 };
  readonly stream = 'main';
  private capturing: string[] | undefined;
  private readonly argStorage = Buffer.alloc(256);
  private nextPtr = 1 << 20;
  private readonly fns = new Map<string, object>();

  tryMemAlloc(bytes: number): number {
    const p = this.nextPtr;
    this.nextPtr += bytes;
    return p;
  }
  memInfo() {
    return { freeBytes: 1 << 30, totalBytes: 1 << 30 };
  }
  uploadNow(): void {
    this.calls.uploads++;
  }
  createGraph(): Graph {
    this.calls.builds++;
    return { nodes: [] };
  }
  addKernelNode(graph: Graph, _after: unknown, l: KernelLaunch): Node {
    const node = { launch: l };
    graph.nodes.push(node);
    return node;
  }
  addChildGraphNode(graph: Graph, _after: unknown, child: Captured): Node {
    // The node holds a copy: the caller destroys its graph.
    const node = { child: { ran: [...child.ran] } };
    graph.nodes.push(node);
    return node;
  }
  captureGraph(_name: string, issue: (stream: string) => void): Captured {
    this.calls.captures++;
    this.capturing = [];
    issue('capture');
    const ran = this.capturing;
    this.capturing = undefined;
    return { ran };
  }
  instantiateGraph(graph: Graph): Exec {
    return { graph, params: graph.nodes.map((n) => ('launch' in n ? n.launch : n.child)) };
  }
  setKernelNode(exec: Exec, node: Node, l: KernelLaunch): void {
    this.calls.nodeSets++;
    exec.params[exec.graph.nodes.indexOf(node)] = l;
  }
  launchGraph(exec: Exec): void {
    this.calls.graphLaunches++;
    for (const l of exec.params) {
      if ('ran' in l) this.ran.push(...l.ran);
      else this.ran.push(describeLaunch(l));
    }
  }
  destroyGraph(): void {}
  otherStreamWork(): void {}
  launchRecorded(l: KernelLaunch): void {
    this.ran.push(describeLaunch(l));
  }
  /** What CudaDriver.launch does: arguments into the 8-byte slots, then to the recorder or the stream. */
  launch(name: string, grid: [number, number, number], args: number[]): void {
    args.forEach((a, i) => this.argStorage.writeBigUInt64LE(BigInt(a), 8 * i));
    let fn = this.fns.get(name);
    if (!fn) this.fns.set(name, (fn = {}));
    if (this.recorder) return this.recorder.kernel(fn, name, grid, 128, 0, this.argStorage, 8 * args.length);
    this.ran.push(describeLaunch({ fn, name, grid, block: 128, shared: 0, args: Buffer.from(this.argStorage.subarray(0, 8 * args.length)) }));
  }
  /** Library work (a cuBLASLt GEMM): captured into a recorded step, else queued on the stream. */
  gemm(sig: string): void {
    const work: CapturableWork = {
      name: 'gemm',
      signature: Buffer.from(sig),
      issue: (stream) => {
        if (stream === 'capture') this.capturing!.push(`gemm ${sig}`);
        else this.ran.push(`gemm ${sig}`);
      },
    };
    if (this.recorder) return this.recorder.captured(work);
    work.issue(this.stream);
  }
  /** A read back to the host. */
  download(): void {
    this.recorder?.flush();
  }
  /** Work a graph cannot hold. */
  memset(): void {
    this.recorder?.interrupt();
    this.ran.push('memset');
  }
}

type Op = { kind: 'launch'; name: string; grid: [number, number, number]; args: number[] } | { kind: 'gemm'; sig: string } | { kind: 'memset' } | { kind: 'download' };

function runOps(d: StandInDriver, ops: Op[]): void {
  for (const op of ops) {
    if (op.kind === 'launch') d.launch(op.name, op.grid, op.args);
    else if (op.kind === 'gemm') d.gemm(op.sig);
    else if (op.kind === 'memset') d.memset();
    else d.download();
  }
}

function setup() {
  const driver = new StandInDriver();
  const pool = new DevicePool(driver as unknown as CudaDriver);
  const graphs = new StepGraphs(driver as unknown as CudaDriver, pool, true);
  return { driver, pool, graphs };
}

describe('step graphs: recording and replay', () => {
  const decodeStep = (ctx: number): Op[] => [
    { kind: 'launch', name: 'embedding', grid: [1, 1, 1], args: [100, 200] },
    { kind: 'launch', name: 'attention', grid: [1, 2, Math.ceil(ctx / 16)], args: [300, Math.ceil(ctx / 4)] },
    { kind: 'launch', name: 'gemv', grid: [64, 1, 1], args: [400, 500] },
    { kind: 'download' },
  ];

  it('builds once, replays unchanged steps, patches only the nodes that differ', () => {
    const { driver, graphs } = setup();
    const eager = new StandInDriver();
    for (let ctx = 10; ctx < 40; ctx++) {
      graphs.run('decode', 1, () => runOps(driver, decodeStep(ctx)));
      runOps(eager, decodeStep(ctx));
    }
    assert.deepEqual(driver.ran, eager.ran);
    assert.equal(graphs.stats.builds, 1);
    assert.equal(graphs.stats.replays, 29);
    assert.equal(driver.calls.graphLaunches, 30);
    // The attention node changes at each multiple of 4 (its block count) and of 16 (its grid) past 10.
    const changes = Array.from({ length: 29 }, (_, i) => i + 11).filter((c) => Math.ceil(c / 4) !== Math.ceil((c - 1) / 4) || Math.ceil(c / 16) !== Math.ceil((c - 1) / 16)).length;
    assert.equal(graphs.stats.patchedNodes, changes);
    assert.equal(driver.calls.nodeSets, changes);
  });

  it('rebuilds when a step has more or fewer launches, and runs every sequence of steps as eager would', () => {
    const rng = new Rng(7);
    const { driver, graphs } = setup();
    const eager = new StandInDriver();
    for (let i = 0; i < 300; i++) {
      // Random steps over a few keys: launch counts, grids and arguments vary; some are interrupted.
      const key = `k${Math.floor(rng.next() * 3)}`;
      const n = 1 + Math.floor(rng.next() * 4);
      const ops: Op[] = [];
      for (let j = 0; j < n; j++) {
        ops.push({ kind: 'launch', name: `kern${Math.floor(rng.next() * 3)}`, grid: [1 + Math.floor(rng.next() * 2), 1, 1], args: [Math.floor(rng.next() * 3), j] });
        if (rng.next() < 0.2) ops.push({ kind: 'gemm', sig: `g${Math.floor(rng.next() * 2)}` });
        if (rng.next() < 0.05) ops.push({ kind: 'memset' });
      }
      if (rng.next() < 0.8) ops.push({ kind: 'download' });
      ops.push({ kind: 'launch', name: 'after', grid: [1, 1, 1], args: [i % 2] });
      graphs.run(key, 1, () => runOps(driver, ops));
      runOps(eager, ops);
    }
    assert.deepEqual(driver.ran, eager.ran);
    const s = graphs.stats;
    assert.ok(s.builds > 3 && s.replays > 0 && s.patchedNodes > 0 && s.interrupted > 0, JSON.stringify(s));
  });

  it('launches a long step in pieces of 8, 16, 32, … as soon as each is recorded', () => {
    const { driver, graphs } = setup();
    const eager = new StandInDriver();
    const graphLaunchesAt: number[] = [];
    const step = (d: StandInDriver) => () => {
      for (let i = 0; i < 30; i++) {
        d.launch('k', [1, 1, 1], [i]);
        graphLaunchesAt.push(driver.calls.graphLaunches);
      }
    };
    graphs.run('long', 1, step(driver));
    // The 8th launch completes the first piece, the 24th the second; the last 6 go at the step's end.
    assert.deepEqual([graphLaunchesAt[6], graphLaunchesAt[7], graphLaunchesAt[22], graphLaunchesAt[23], graphLaunchesAt[29]], [0, 1, 1, 2, 2]);
    assert.equal(driver.calls.graphLaunches, 3);
    graphs.run('long', 1, step(driver));
    assert.equal(driver.calls.graphLaunches, 6);
    assert.deepEqual([graphs.stats.builds, graphs.stats.replays], [1, 1]);
    step(eager)();
    step(eager)();
    assert.deepEqual(driver.ran, eager.ran);
  });

  it('runs an interrupted step in order: deferred launches, the work, then the rest', () => {
    const { driver, graphs } = setup();
    const ops: Op[] = [
      { kind: 'launch', name: 'a', grid: [1, 1, 1], args: [1] },
      { kind: 'launch', name: 'b', grid: [1, 1, 1], args: [2] },
      { kind: 'memset' },
      { kind: 'launch', name: 'c', grid: [1, 1, 1], args: [3] },
    ];
    graphs.run('k', 1, () => runOps(driver, ops));
    assert.deepEqual(driver.ran, ['a 1x1x1 [1,0,0,0,0,0,0,0]', 'b 1x1x1 [2,0,0,0,0,0,0,0]', 'memset', 'c 1x1x1 [3,0,0,0,0,0,0,0]']);
    assert.equal(graphs.stats.interrupted, 1);
    assert.equal(driver.recorder, undefined);
  });

  it('runs nothing of a step that throws, and records the next step afresh', () => {
    const { driver, graphs } = setup();
    assert.throws(
      () =>
        graphs.run('k', 1, () => {
          driver.launch('a', [1, 1, 1], [1]);
          throw new RangeError('bad batch');
        }),
      /bad batch/,
    );
    assert.deepEqual(driver.ran, []);
    assert.equal(driver.recorder, undefined);
    graphs.run('k', 1, () => driver.launch('a', [1, 1, 1], [1]));
    assert.equal(driver.ran.length, 1);
  });

  it('holds library work as captured child graphs: captured when built, replayed, rebuilt when it differs, queued in order when interrupted', () => {
    const { driver, graphs } = setup();
    const eager = new StandInDriver();
    const step = (sig: string, memset = false): Op[] => [
      { kind: 'launch', name: 'a', grid: [1, 1, 1], args: [1] },
      { kind: 'gemm', sig },
      { kind: 'launch', name: 'b', grid: [1, 1, 1], args: [2] },
      ...(memset ? [{ kind: 'memset' } as Op] : []),
      { kind: 'gemm', sig: 'last' },
      { kind: 'download' },
    ];
    const sigs = ['x', 'x', 'x', 'y', 'y'];
    for (const sig of sigs) {
      graphs.run('k', 1, () => runOps(driver, step(sig)));
      runOps(eager, step(sig));
    }
    assert.deepEqual(driver.ran, eager.ran);
    // Built for 'x' (two captures), replayed twice, rebuilt for 'y' (two captures again), replayed.
    assert.deepEqual([graphs.stats.builds, graphs.stats.replays, driver.calls.captures], [2, 3, 4]);
    // Interrupted before the second GEMM: the deferred launch and GEMM run on the stream, in order.
    driver.ran.length = 0;
    graphs.run('k', 1, () => runOps(driver, step('y', true)));
    assert.deepEqual(driver.ran, ['a 1x1x1 [1,0,0,0,0,0,0,0]', 'gemm y', 'b 1x1x1 [2,0,0,0,0,0,0,0]', 'memset', 'gemm last']);
    assert.equal(graphs.stats.interrupted, 1);
  });

  it('records a step of more than 8 tokens from the second time its key comes', () => {
    const { driver, graphs } = setup();
    for (let i = 0; i < 3; i++) graphs.run('decode16', 16, () => driver.launch('a', [1, 1, 1], [i]));
    graphs.run('prefill40', 40, () => driver.launch('b', [1, 1, 1], [1]));
    graphs.run('decode8', 8, () => driver.launch('c', [1, 1, 1], [1]));
    // decode16: eager, built, replayed; prefill40 eager (new key); decode8 recorded at once.
    assert.deepEqual([graphs.stats.eager, graphs.stats.builds, graphs.stats.replays], [2, 2, 1]);
    assert.deepEqual(driver.ran.map((r) => r.slice(0, 10)), ['a 1x1x1 [0', 'a 1x1x1 [1', 'a 1x1x1 [2', 'b 1x1x1 [1', 'c 1x1x1 [1']);
  });

  it('leaves steps eager when off, too large, nested or synchronized per launch', () => {
    const { driver, graphs } = setup();
    graphs.run('big', graphs.maxTokens + 1, () => driver.launch('a', [1, 1, 1], [1]));
    graphs.run('big', graphs.maxTokens + 1, () => driver.launch('a', [1, 1, 1], [1]));
    graphs.run('outer', 1, () => graphs.run('inner', 1, () => driver.launch('b', [1, 1, 1], [1])));
    driver.syncEveryLaunch = true;
    graphs.run('sync', 1, () => driver.launch('c', [1, 1, 1], [1]));
    driver.syncEveryLaunch = false;
    graphs.enabled = false;
    graphs.run('off', 1, () => driver.launch('d', [1, 1, 1], [1]));
    assert.equal(graphs.stats.eager, 5);
    assert.equal(graphs.stats.builds, 1, 'only the outer step recorded');
    assert.equal(driver.ran.length, 5);
  });

  it('gives a graph upload slots that keep their address and upload only changed contents', () => {
    const { driver, graphs } = setup();
    const ptrs: number[][] = [];
    for (const pos of [[5, 9], [5, 9], [6, 10]]) {
      graphs.run('k', 2, () => {
        const positions = Int32Array.from(pos);
        // The same array twice in a step (every layer passes it) is one slot.
        ptrs.push([graphs.uploads!.get('positions', positions), graphs.uploads!.get('positions', positions), graphs.uploads!.get('ids', Int32Array.from([1, 2]))]);
      });
    }
    assert.deepEqual(ptrs[1], ptrs[0]);
    assert.deepEqual(ptrs[2], ptrs[0]);
    assert.equal(ptrs[0][0], ptrs[0][1]);
    assert.notEqual(ptrs[0][0], ptrs[0][2]);
    assert.equal(driver.calls.uploads, 3, 'positions and ids once, then positions again when they changed');
    assert.equal(graphs.uploads, undefined, 'slots only while a step is recorded');
  });

  it("says whether a pointer still holds a key's upload (holds): not once another array went under the key", () => {
    const { graphs } = setup();
    graphs.run('h', 2, () => {
      const up = graphs.uploads!;
      const cos = Float32Array.from([0.5, 0.25]);
      const first = up.get('rope.cos', cos);
      assert.ok(up.holds('rope.cos', first), 'just uploaded');
      assert.ok(!up.holds('rope.sin', first), 'another key');
      const second = up.get('rope.cos', Float32Array.from([1, 2]));
      assert.notEqual(second, first);
      assert.ok(!up.holds('rope.cos', first) && up.holds('rope.cos', second), 'the key now names the second upload');
    });
  });
});

describe('pool arenas', () => {
  it('hand out the same buffers for the same allocations and releases after each reset', () => {
    const driver = new StandInDriver();
    const pool = new DevicePool(driver as unknown as CudaDriver);
    const arena = new PoolArena();
    const sequence = () => {
      const a = pool.alloc(4000);
      const b = pool.alloc(4000);
      pool.release(a);
      const c = pool.alloc(4000); // a's buffer again (last in, first out)
      const d = pool.alloc(100_000);
      return [a.ptr, b.ptr, c.ptr, d.ptr];
    };
    pool.arena = arena;
    arena.reset();
    const first = sequence();
    arena.reset();
    const second = sequence();
    pool.arena = undefined;
    assert.deepEqual(second, first);
    assert.equal(first[2], first[0]);
    assert.equal(arena.bytes, 2 * sizeClass(4000) + sizeClass(100_000));
    // Outside the arena the pool never lends the arena's buffers.
    const other = pool.alloc(4000, true);
    assert.ok(!first.includes(other.ptr));
    pool.adopt(arena);
    assert.equal(arena.bytes, 0);
    assert.ok(first.includes(pool.alloc(4000, true).ptr), 'an adopted buffer is lent again');
  });

  it('makes the last run\'s tensors stale at reset', () => {
    const driver = new StandInDriver();
    const pool = new DevicePool(driver as unknown as CudaDriver);
    const arena = new PoolArena();
    pool.arena = arena;
    arena.reset();
    const buf = pool.alloc(2048);
    const gen = buf.generation;
    arena.reset();
    pool.arena = undefined;
    assert.notEqual(buf.generation, gen);
  });
});

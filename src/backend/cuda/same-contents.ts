// Whether two host arrays hold the same bytes, by a native memcmp: the step-upload cache and the
// attention planner compare a step's arrays with their copies before every layer's use (an
// element-by-element loop over a prefill's RoPE tables took 35–45 ms of host time per forward, and a
// loop run once a forward stays in V8's interpreter for dozens of forwards).
export function sameContents(a: Int32Array | Float32Array, b: Int32Array | Float32Array): boolean {
  return a.byteLength === b.byteLength && Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

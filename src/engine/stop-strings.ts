// Stop strings over streamed text: text that might be the start of a stop string is held back until
// it is known not to be, so a stop split across tokens is caught and never shown; the text ends
// right before the stop.

export interface StopPushResult {
  /** Text that is safe to show now. */
  emit: string;
  /** A stop string completed; nothing after it will be emitted. */
  stopped: boolean;
}

export class StopStringMatcher {
  private readonly stops: string[];
  private readonly longest: number;
  private held = '';
  private matchedStop: string | undefined;

  constructor(stops: readonly string[]) {
    // An empty stop would match everywhere; request validation rejects it, and it is ignored here.
    this.stops = [...new Set(stops.filter((s) => s.length > 0))];
    this.longest = this.stops.reduce((m, s) => Math.max(m, s.length), 0);
  }

  get stopped(): boolean {
    return this.matchedStop !== undefined;
  }

  /** The stop string that ended the text (OpenAI's stop_reason), once stopped. */
  get matched(): string | undefined {
    return this.matchedStop;
  }

  push(text: string): StopPushResult {
    if (this.stopped) return { emit: '', stopped: true };
    if (this.stops.length === 0) return { emit: text, stopped: false };
    const buffer = this.held + text;
    // The stop that completes first wins (smallest end; on a tie the longer one, which starts
    // earlier): what a reader fed one character at a time would see, so the result does not depend
    // on how the text was cut into tokens.
    let at = -1;
    let end = Infinity;
    for (const stop of this.stops) {
      const i = buffer.indexOf(stop);
      if (i < 0) continue;
      const e = i + stop.length;
      if (e < end || (e === end && i < at)) {
        at = i;
        end = e;
        this.matchedStop = stop;
      }
    }
    if (at >= 0) {
      this.held = '';
      return { emit: buffer.slice(0, at), stopped: true };
    }
    // Hold the longest suffix that some stop string starts with: any stop still to complete must
    // begin there, since every earlier start was ruled out above.
    const keep = this.heldSuffixLength(buffer);
    this.held = buffer.slice(buffer.length - keep);
    return { emit: buffer.slice(0, buffer.length - keep), stopped: false };
  }

  /** At the end of generation: the held-back text, which turned out not to be a stop. */
  flush(): string {
    if (this.stopped) return '';
    const rest = this.held;
    this.held = '';
    return rest;
  }

  private heldSuffixLength(buffer: string): number {
    for (let k = Math.min(this.longest - 1, buffer.length); k > 0; k--) {
      const suffix = buffer.slice(buffer.length - k);
      if (this.stops.some((s) => s.startsWith(suffix))) return k;
    }
    return 0;
  }
}

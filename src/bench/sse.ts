// Incremental parsing of an OpenAI-style Server-Sent Events stream: bytes in, complete `data:`
// payloads out, whatever the network's read boundaries (UTF-8 split across reads, JSON split across
// reads, \r\n line ends, comment pings).

/** One parsed event: its data payload (the text after `data:`), or a comment to skip. */
export type SseEvent = { kind: 'data'; data: string } | { kind: 'comment' };

export class SseParser {
  private readonly decoder = new TextDecoder('utf-8');
  private buffer = '';

  /** Feed one network read; returns the events completed by it. */
  push(bytes: Uint8Array): SseEvent[] {
    this.buffer += this.decoder.decode(bytes, { stream: true }).replace(/\r\n?/g, '\n');
    const events: SseEvent[] = [];
    let sep = this.buffer.indexOf('\n\n');
    while (sep >= 0) {
      const block = this.buffer.slice(0, sep);
      this.buffer = this.buffer.slice(sep + 2);
      const ev = parseBlock(block);
      if (ev) events.push(ev);
      sep = this.buffer.indexOf('\n\n');
    }
    // vLLM's reader also accepts a trailing message without its blank line when it is already
    // complete ([DONE] or whole JSON), so a server that omits the final separator still parses.
    const rest = this.buffer.trim();
    if (rest.startsWith('data:')) {
      const data = stripData(rest);
      if (data === '[DONE]' || isJson(data)) {
        events.push({ kind: 'data', data });
        this.buffer = '';
      }
    }
    return events;
  }

  /** The end of the stream: whatever complete event is left. */
  end(): SseEvent[] {
    this.buffer += this.decoder.decode();
    const rest = this.buffer.replace(/\r\n?/g, '\n').trim();
    this.buffer = '';
    const ev = rest ? parseBlock(rest) : undefined;
    return ev ? [ev] : [];
  }
}

function parseBlock(block: string): SseEvent | undefined {
  const text = block.trim();
  if (!text) return undefined;
  const data: string[] = [];
  let comment = false;
  for (const line of text.split('\n')) {
    if (line.startsWith(':')) comment = true;
    else if (line.startsWith('data:')) data.push(stripData(line));
    // event:, id:, retry: lines carry nothing the benchmark needs.
  }
  if (data.length > 0) return { kind: 'data', data: data.join('\n') };
  return comment ? { kind: 'comment' } : undefined;
}

function stripData(line: string): string {
  const v = line.slice('data:'.length);
  return (v.startsWith(' ') ? v.slice(1) : v).trim();
}

function isJson(text: string): boolean {
  if (!text) return false;
  try {
    JSON.parse(text);
    return true;
  } catch {
    return false;
  }
}

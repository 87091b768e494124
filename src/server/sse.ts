// Server-sent events as OpenAI-compatible servers write them: `data: <json>\n\n` per event and
// `data: [DONE]\n\n` at the end. Writes after the client has gone are dropped.

import type { ServerResponse } from 'node:http';

export class SseStream {
  constructor(private readonly res: ServerResponse) {
    res.writeHead(200, {
      'content-type': 'text/event-stream; charset=utf-8',
      'cache-control': 'no-cache',
      connection: 'keep-alive',
      'x-accel-buffering': 'no', // no proxy buffering: tokens must reach the client as they come
    });
    res.flushHeaders();
  }

  get closed(): boolean {
    return this.res.writableEnded || this.res.destroyed;
  }

  send(event: unknown): void {
    if (!this.closed) this.res.write(`data: ${JSON.stringify(event)}\n\n`);
  }

  /** `data: [DONE]` and the end of the response. */
  done(): void {
    if (this.closed) return;
    this.res.write('data: [DONE]\n\n');
    this.res.end();
  }
}

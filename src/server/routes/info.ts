// GET routes about the server itself: /v1/models, /health, /version, /metrics.

import { sendJson, type ApiCall, type ServerContext } from '../context.js';
import { PROMETHEUS_CONTENT_TYPE } from '../prometheus.js';

export function listModels(ctx: ServerContext, call: ApiCall): void {
  sendJson(call.res, 200, {
    object: 'list',
    data: [
      {
        id: ctx.modelName,
        object: 'model',
        created: ctx.startedAt,
        owned_by: 'tachyon',
        root: ctx.modelRoot,
        parent: null,
        max_model_len: ctx.llm.engine.options.maxModelLen,
        permission: [],
      },
    ],
  });
}

export function health(_ctx: ServerContext, call: ApiCall): void {
  call.res.writeHead(200, { 'content-length': 0 });
  call.res.end();
}

export function version(ctx: ServerContext, call: ApiCall): void {
  sendJson(call.res, 200, { version: ctx.version });
}

export function metrics(ctx: ServerContext, call: ApiCall): void {
  const text = ctx.metrics.render();
  call.res.writeHead(200, { 'content-type': PROMETHEUS_CONTENT_TYPE, 'content-length': Buffer.byteLength(text) });
  call.res.end(text);
}

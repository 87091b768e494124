// Typed errors whose messages a user can act on. The CLI prints the message alone; the server
// (later) maps `kind` to an HTTP status and an OpenAI-shaped error body.

export type ErrorKind =
  | 'model_load' // a checkpoint, config or tokenizer file is missing, malformed or unsupported
  | 'invalid_request' // a parameter or prompt the caller sent is not acceptable
  | 'capacity' // the request does not fit (context length, KV cache)
  | 'internal';

export class TachyonError extends Error {
  constructor(
    readonly kind: ErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'TachyonError';
  }
}

/** A file of a model directory is missing, corrupt or describes something we do not support. */
export class ModelLoadError extends TachyonError {
  constructor(message: string) {
    super('model_load', message);
    this.name = 'ModelLoadError';
  }
}

/** The caller asked for something invalid (bad parameter, empty prompt, ...). */
export class InvalidRequestError extends TachyonError {
  constructor(message: string) {
    super('invalid_request', message);
    this.name = 'InvalidRequestError';
  }
}

/** The request is valid but does not fit: prompt over the context length, KV cache exhausted. */
export class CapacityError extends TachyonError {
  constructor(message: string) {
    super('capacity', message);
    this.name = 'CapacityError';
  }
}

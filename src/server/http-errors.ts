// Errors as the OpenAI API (and vLLM) return them: {error: {message, type, param, code}} with an
// HTTP status. The library's typed errors map onto statuses here, so no bad input becomes a 500.

import { TachyonError } from '../errors.js';

export class ApiError extends Error {
  constructor(
    readonly status: number,
    message: string,
    /** The request field at fault, as OpenAI's `param`. */
    readonly param: string | null = null,
  ) {
    super(message);
    this.name = 'ApiError';
  }
}

export const badRequest = (message: string, param: string | null = null) => new ApiError(400, message, param);

// vLLM's `type` names (the class of the HTTP error) and `code` = the status.
const TYPES: Record<number, string> = {
  400: 'BadRequestError',
  401: 'AuthenticationError',
  404: 'NotFoundError',
  405: 'MethodNotAllowedError',
  413: 'BadRequestError',
  500: 'InternalServerError',
  503: 'ServiceUnavailableError',
};

export interface ErrorBody {
  error: { message: string; type: string; param: string | null; code: number };
}

export function errorBody(status: number, message: string, param: string | null = null): ErrorBody {
  return { error: { message, type: TYPES[status] ?? 'Error', param, code: status } };
}

/**
 * Any thrown value as a status and body. The library's invalid-request and capacity errors are the
 * caller's to fix (400); a sampling-parameter message starts with the parameter's snake_case name
 * (sampling-params.ts and the chat template's checks name them that way), which becomes `param`.
 */
export function toApiError(err: unknown): ApiError {
  if (err instanceof ApiError) return err;
  if (err instanceof TachyonError && (err.kind === 'invalid_request' || err.kind === 'capacity')) {
    const param = /^([a-z_]+)[ [.]/.exec(err.message)?.[1];
    return new ApiError(400, err.message, param && KNOWN_PARAMS.has(param) ? param : null);
  }
  return new ApiError(500, `internal error: ${(err as Error)?.message ?? String(err)}`);
}

const KNOWN_PARAMS = new Set([
  'temperature',
  'top_k',
  'top_p',
  'min_p',
  'presence_penalty',
  'frequency_penalty',
  'repetition_penalty',
  'max_tokens',
  'seed',
  'stop',
  'stop_token_ids',
  'logprobs',
  'prompt',
  'messages',
]);

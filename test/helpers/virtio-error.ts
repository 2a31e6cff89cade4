/** An assert.throws matcher: a VirtioError with exactly this code and message. */
import assert from 'node:assert/strict';
import { VirtioError, type VirtioErrorCode } from '../../src/virtio/errors.js';

export const virtioError = (code: VirtioErrorCode, message: string) => (e: unknown) => {
  assert.ok(e instanceof VirtioError, `a VirtioError, got ${String(e)}`);
  assert.equal(e.code, code);
  assert.equal(e.message, message);
  return true;
};

/**
 * A BlockStorage in memory: for tests, and for embedders that want a RAM disk. Every operation
 * completes at once (its promise is already settled when returned) and checks its range, so a
 * test that passes a wrong range hears about it (a RangeError rejection).
 */
import { SECTOR_SIZE, vectorLength, type BlockStorage } from './storage.js';

export interface MemoryStorageOptions {
  readOnly?: boolean;
  blockSize?: number;
  description?: string;
}

export class MemoryStorage implements BlockStorage {
  /** The disk's bytes (tests read and write them directly). */
  readonly bytes: Uint8Array;
  readonly readOnly: boolean;
  readonly blockSize: number;
  readonly canUnmap = false;
  readonly description: string;
  /** Operations served, by kind (tests check what the model asked for). */
  readonly counts = { read: 0, write: 0, flush: 0, discard: 0, writeZeroes: 0 };

  /** A disk of `size` bytes (zeroed), or over `bytes` as given (not copied). */
  constructor(sizeOrBytes: number | Uint8Array, options: MemoryStorageOptions = {}) {
    this.bytes = typeof sizeOrBytes === 'number' ? new Uint8Array(sizeOrBytes) : sizeOrBytes;
    this.readOnly = options.readOnly ?? false;
    this.blockSize = options.blockSize ?? SECTOR_SIZE;
    this.description = options.description ?? `memory (${this.bytes.length} bytes)`;
  }

  get size(): number {
    return this.bytes.length;
  }

  read(offset: number, into: readonly Uint8Array[]): Promise<void> {
    try {
      this.check(offset, vectorLength(into), 'read');
      this.counts.read++;
      let at = offset;
      for (const b of into) {
        b.set(this.bytes.subarray(at, at + b.length));
        at += b.length;
      }
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  write(offset: number, from: readonly Uint8Array[]): Promise<void> {
    try {
      this.check(offset, vectorLength(from), 'write');
      this.checkWritable('write');
      this.counts.write++;
      let at = offset;
      for (const b of from) {
        this.bytes.set(b, at);
        at += b.length;
      }
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  flush(): Promise<void> {
    this.counts.flush++;
    return Promise.resolve();
  }

  /** Discard zeroes the range (a RAM disk has nothing to deallocate; zeroes leak nothing). */
  discard(offset: number, length: number): Promise<void> {
    return this.zero(offset, length, 'discard');
  }

  writeZeroes(offset: number, length: number, _unmap: boolean): Promise<void> {
    return this.zero(offset, length, 'writeZeroes');
  }

  private zero(offset: number, length: number, what: 'discard' | 'writeZeroes'): Promise<void> {
    try {
      this.check(offset, length, what);
      this.checkWritable(what);
      this.counts[what]++;
      this.bytes.fill(0, offset, offset + length);
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  private check(offset: number, length: number, what: string): void {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.bytes.length) {
      throw new RangeError(`memory storage: ${what} of ${length} bytes at ${offset} is outside the ${this.bytes.length}-byte disk`);
    }
  }

  private checkWritable(what: string): void {
    if (this.readOnly) throw new Error(`memory storage: ${what} on a read-only disk`);
  }
}

/**
 * What a guest driver needs from the guest kernel it runs in: printk, DMA-able memory, and
 * character devices. The embedded machine's guest kernel implements it (src/machine/guest-kernel.ts);
 * drivers depend only on this interface.
 */
import type { GuestMemory } from '../virtio/memory.js';

/** A POSIX-style error a file operation returns (EINVAL, EIO, ...). */
export class Errno extends Error {
  override readonly name = 'Errno';
  constructor(
    readonly code:
      | 'EINVAL'
      | 'EIO'
      | 'ENODEV'
      | 'ENOENT'
      | 'ENOMEM'
      | 'EAGAIN'
      | 'EBADF'
      | 'EFAULT'
      | 'EBUSY'
      | 'EPERM'
      | 'ENOSPC'
      | 'EOPNOTSUPP'
      | 'ENOTTY',
    message?: string,
  ) {
    super(message ? `${code}: ${message}` : code);
  }
}

/** An open file of a character device; drivers hang their per-open state on `private`. */
export interface OpenFile {
  readonly path: string;
  private?: unknown;
}

/** File operations of a misc character device (Linux's struct file_operations, the parts we need). */
export interface FileOperations {
  open?(file: OpenFile): void | Promise<void>;
  /** Returns the number of bytes consumed, or throws an Errno. */
  write?(file: OpenFile, data: Uint8Array): Promise<number>;
  /** Returns up to `count` bytes, or throws an Errno. */
  read?(file: OpenFile, count: number): Promise<Uint8Array>;
  /** Positional read (pread): up to `count` bytes at byte `position`; the file position does not move. */
  pread?(file: OpenFile, count: number, position: number): Promise<Uint8Array>;
  /** Positional write (pwrite): returns the bytes written at byte `position`. */
  pwrite?(file: OpenFile, data: Uint8Array, position: number): Promise<number>;
  /** Makes written data stable (fsync; a block device sends a cache flush). */
  fsync?(file: OpenFile): Promise<void>;
  /**
   * A device-specific request (ioctl): `arg` is the argument buffer, read and/or written in
   * place as the request defines (Linux's user pointer). Returns the result (0), or throws an
   * Errno (ENOTTY for a request the device does not know).
   */
  ioctl?(file: OpenFile, request: number, arg: Uint8Array): Promise<number>;
  release?(file: OpenFile): void;
}

export interface GuestKernel {
  readonly memory: GuestMemory;
  /** Prints a kernel log line with a `[    7.627890] ` timestamp, like printk at KERN_INFO. */
  printk(line: string): void;
  /** Allocates `bytes` of guest memory aligned to `align` (a power of two ≤ 4096); null when out of memory. */
  dmaAlloc(bytes: number, align?: number): number | null;
  dmaFree(addr: number): void;
  /**
   * Registers /dev/<name>, or /dev/<name>N with the lowest free N ≥ 1 when <name> is taken
   * (like a driver using an IDA for its minor names). Returns the name used.
   */
  registerMisc(name: string, fops: FileOperations): string;
  deregisterMisc(name: string): void;
}

/** The system calls a user program can make. */
export interface Syscalls {
  open(path: string): number;
  write(fd: number, data: Uint8Array): Promise<number>;
  read(fd: number, count: number): Promise<Uint8Array>;
  /** Optional system calls (a kernel may lack them): positional I/O, fsync and ioctl, as in FileOperations. */
  pread?(fd: number, count: number, position: number): Promise<Uint8Array>;
  pwrite?(fd: number, data: Uint8Array, position: number): Promise<number>;
  fsync?(fd: number): Promise<void>;
  ioctl?(fd: number, request: number, arg: Uint8Array): Promise<number>;
  close(fd: number): void;
  /** printf to the program's stdout. */
  print(text: string): void;
  /** Reports how far a long run is (the host may show it on a terminal). */
  progress?(done: number, total: number): void;
  /** Hands the host a machine-readable summary of the run (virtio --json). */
  report?(fields: Readonly<Record<string, number | string>>): void;
}

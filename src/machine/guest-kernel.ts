/**
 * The embedded machine's guest kernel: just enough of one for the seed's scenario. printk
 * with boot-relative timestamps, a DMA allocator over guest RAM, misc character devices
 * under /dev, and the system calls user programs use (open, read, write, pread, pwrite, fsync,
 * ioctl, close).
 */
import { Errno, type FileOperations, type GuestKernel, type OpenFile, type Syscalls } from '../drivers/kernel.js';
import type { GuestMemory } from '../virtio/memory.js';
import { kernelTimestamp, nowMs } from './console.js';
import { DmaAllocator } from './dma-allocator.js';

export type LogLevel = 'info' | 'debug';

export interface KernelConsole {
  /** A console line (already formatted). */
  write(text: string, stream?: 'stdout' | 'stderr'): void;
}

export interface EmbeddedKernelOptions {
  /** Print KERN_DEBUG lines (boot messages). */
  verbose?: boolean;
  /** Print no kernel lines at all (Linux's `quiet`, loglevel 0): programs' own output only. */
  quiet?: boolean;
  /** Where a program's progress goes (Syscalls.progress). */
  progress?(done: number, total: number): void;
  /** Where a program's summary goes (Syscalls.report). */
  report?(fields: Readonly<Record<string, number | string>>): void;
}

export class EmbeddedKernel implements GuestKernel, Syscalls {
  private readonly dma: DmaAllocator;
  private readonly misc = new Map<string, FileOperations>();
  private readonly files = new Map<number, { fops: FileOperations; file: OpenFile }>();
  private nextFd = 3;

  constructor(
    readonly memory: GuestMemory,
    ram: { base: number; size: number },
    private readonly bootMs: number,
    private readonly console: KernelConsole,
    private readonly options: EmbeddedKernelOptions = {},
  ) {
    this.dma = new DmaAllocator(ram.base, ram.size);
  }

  printk(line: string, level: LogLevel = 'info'): void {
    if (this.options.quiet || (level === 'debug' && !this.options.verbose)) return;
    this.console.write(`${kernelTimestamp(nowMs() - this.bootMs)} ${line}`);
  }

  dmaAlloc(bytes: number, align = 16): number | null {
    return this.dma.alloc(bytes, align);
  }

  dmaFree(addr: number): void {
    this.dma.free(addr);
  }

  get dmaFreeBytes(): number {
    return this.dma.freeBytes;
  }

  registerMisc(name: string, fops: FileOperations): string {
    let chosen = name;
    for (let n = 1; this.misc.has(chosen); n++) chosen = `${name}${n}`;
    this.misc.set(chosen, fops);
    this.printk(`misc ${chosen}: registered as /dev/${chosen}`, 'debug');
    return chosen;
  }

  deregisterMisc(name: string): void {
    this.misc.delete(name);
  }

  // --- system calls ---

  open(path: string): number {
    const m = /^\/dev\/([A-Za-z0-9_]+)$/.exec(path);
    const fops = m ? this.misc.get(m[1]!) : undefined;
    if (!fops) throw new Errno('ENOENT', `${path}: no such device`);
    const file: OpenFile = { path };
    const result = fops.open?.(file);
    if (result instanceof Promise) throw new Error('async open is not supported');
    const fd = this.nextFd++;
    this.files.set(fd, { fops, file });
    return fd;
  }

  async write(fd: number, data: Uint8Array): Promise<number> {
    const f = this.file(fd);
    if (!f.fops.write) throw new Errno('EINVAL', 'device does not support write');
    return f.fops.write(f.file, data);
  }

  async read(fd: number, count: number): Promise<Uint8Array> {
    const f = this.file(fd);
    if (!f.fops.read) throw new Errno('EINVAL', 'device does not support read');
    return f.fops.read(f.file, count);
  }

  async pread(fd: number, count: number, position: number): Promise<Uint8Array> {
    const f = this.file(fd);
    if (!f.fops.pread) throw new Errno('EINVAL', 'device does not support pread');
    return f.fops.pread(f.file, count, position);
  }

  async pwrite(fd: number, data: Uint8Array, position: number): Promise<number> {
    const f = this.file(fd);
    if (!f.fops.pwrite) throw new Errno('EINVAL', 'device does not support pwrite');
    return f.fops.pwrite(f.file, data, position);
  }

  async fsync(fd: number): Promise<void> {
    const f = this.file(fd);
    if (!f.fops.fsync) throw new Errno('EINVAL', 'device does not support fsync');
    return f.fops.fsync(f.file);
  }

  async ioctl(fd: number, request: number, arg: Uint8Array): Promise<number> {
    const f = this.file(fd);
    if (!f.fops.ioctl) throw new Errno('ENOTTY', `device has no ioctl 0x${request.toString(16)}`);
    return f.fops.ioctl(f.file, request, arg);
  }

  close(fd: number): void {
    const f = this.file(fd);
    this.files.delete(fd);
    f.fops.release?.(f.file);
  }

  progress(done: number, total: number): void {
    this.options.progress?.(done, total);
  }

  report(fields: Readonly<Record<string, number | string>>): void {
    this.options.report?.(fields);
  }

  print(text: string): void {
    for (const line of text.replace(/\r?\n$/, '').split(/\r?\n/)) this.console.write(line);
  }

  private file(fd: number): { fops: FileOperations; file: OpenFile } {
    const f = this.files.get(fd);
    if (!f) throw new Errno('EBADF', `fd ${fd}`);
    return f;
  }
}

/**
 * virtio-ts/machine: the embedded machine (guest and device threads over shared memory, any
 * registered device) and the real-Linux guests (User-Mode Linux, QEMU 7.2).
 *
 *   import { runMachine } from 'virtio-ts/machine';
 *   await runMachine({ device: 'rng', argv: ['hwrng-read', '64'] });
 */
export { runMachine, type MachineOptions, type MachineResult } from './machine.js';
export { EmbeddedKernel, type EmbeddedKernelOptions, type KernelConsole, type LogLevel } from './guest-kernel.js';
export type { Stream } from './console.js';
export { DmaAllocator } from './dma-allocator.js';
export { findUmlGuest, buildUmlGuest, runUml, type UmlGuest, type UmlRunOptions, type UmlRunResult } from './uml.js';

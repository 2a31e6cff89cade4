/**
 * Tracing: QEMU-named trace events on both halves of a virtqueue, selected with QEMU's
 * patterns, written as text lines or as a Chrome trace-event JSON file. See events.ts for the
 * catalog and the cost model (one property load per emit site when an event is off).
 */
export * from './events.js';
export * from './sink.js';
export * from './select.js';
export * from './format.js';
export * from './chrome.js';
export * from './ring.js';

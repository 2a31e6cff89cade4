#!/usr/bin/env node
/**
 * `virtio-test-backend --socket PATH`: `virtio-backend --device virtio-test` under its former
 * name, for the scripts, tests and docs that use it. Same options (those of the daemon and of
 * the virtio-test device: --device-id, --queue-size), same output, including the listening
 * line `virtio-test-backend: listening on PATH (device 45, queue ≤ 256)` that tests and
 * benchmarks wait for. See src/cli/virtio-backend.ts.
 */
import { runBackendCommand } from './virtio-backend.js';

runBackendCommand(['--device', 'virtio-test', ...process.argv.slice(2)], { program: 'virtio-test-backend', fixedDevice: true });

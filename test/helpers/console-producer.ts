/** A worker that writes `count` numbered lines `<name> <i>` to a console ring (test/machine/console.test.ts). */
import { workerData } from 'node:worker_threads';
import { ConsoleWriter } from '../../src/machine/console.js';

const { sab, name, count, stream } = workerData as { sab: SharedArrayBuffer; name: string; count: number; stream: 'stdout' | 'stderr' };
const writer = new ConsoleWriter(sab);
for (let i = 0; i < count; i++) writer.write(`${name} ${i}`, stream);

/**
 * A slow virtio-test back-end daemon, run as a child process by slow-kill.test.ts (so it can be
 * SIGKILLed): serveDevice with the virtio-test model behind SlowDevice (seeded random delays and
 * stalls), recording every request it serves.
 *
 *   node slow-backend-child.js SOCKET RECORD_FILE SLOWNESS_JSON
 *
 * The record file gets one byte per request served (the request's type, the byte the guest
 * wrote), written synchronously when the model handles the chain, i.e. before its answer can
 * reach the guest: after a SIGKILL the file still holds every request whose answer the guest
 * may have seen. stdout: `listening`, connection events, `stall N ms` when a stall begins, and
 * every second (and at SIGTERM) a `slow: {...}` line with SlowDevice's counts. SIGTERM: close
 * the server, exit 0.
 */
import { openSync, writeSync } from 'node:fs';
import type { DeviceContext } from '../../src/device/device.js';
import { SlowDevice, type SlowDeviceOptions } from '../../src/device/slow-device.js';
import { VirtioTestDevice } from '../../src/devices/virtio-test/device.js';
import { serveDevice } from '../../src/vhost-user/backend-server.js';
import type { DescriptorChain } from '../../src/virtio/chain.js';

const [socketPath, recordPath, slownessJson] = process.argv.slice(2);
if (!socketPath || !recordPath || !slownessJson) {
  process.stderr.write('usage: slow-backend-child SOCKET RECORD_FILE SLOWNESS_JSON\n');
  process.exit(2);
}
const slowness = JSON.parse(slownessJson) as SlowDeviceOptions;
const record = openSync(recordPath, 'a');

class RecordingTestDevice extends VirtioTestDevice {
  private readonly type = new Uint8Array(4);
  private readonly one = new Uint8Array(1);
  override handleChain(queue: number, chain: DescriptorChain, ctx: DeviceContext): number {
    const used = super.handleChain(queue, chain, ctx);
    chain.read(this.type);
    // little-endian u32; our drivers send 0..255, anything else is recorded as 0xff and shows as a miscount
    this.one[0] = this.type[1] || this.type[2] || this.type[3] ? 0xff : this.type[0]!;
    writeSync(record, this.one);
    return used;
  }
}

const devices: SlowDevice[] = [];
const totals = () => {
  const t = { requests: 0, randomDelays: 0, stalls: 0, stalled: 0, maxHeld: 0 };
  for (const d of devices) {
    const s = d.stats();
    t.requests += s.requests;
    t.randomDelays += s.randomDelays;
    t.stalls += s.stalls;
    t.stalled += s.stalled;
    t.maxHeld = Math.max(t.maxHeld, s.maxHeld);
  }
  return t;
};
const say = (line: string) => writeSync(1, `${line}\n`);

const server = serveDevice({
  socketPath,
  createDevice: () => {
    const d = new SlowDevice(new RecordingTestDevice({ print: false }), {
      ...slowness,
      seed: (slowness.seed ?? 1) + devices.length,
      onStall: (ms) => say(`stall ${Math.round(ms)} ms`),
    });
    devices.push(d);
    return d;
  },
  warn: (l) => process.stderr.write(`${l}\n`),
  info: (l) => say(l),
  maxQueueSize: 256,
});
say('listening');
const report = setInterval(() => say(`slow: ${JSON.stringify(totals())}`), 1000);
process.on('SIGTERM', () => {
  clearInterval(report);
  say(`slow: ${JSON.stringify(totals())}`);
  void server.close().then(() => process.exit(0));
});

// Names of the device status bits (virtio 1.2 §2.1) as logs, errors and `virtio --stats` show them.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Status, statusNames } from '../../src/virtio/constants.js';

test('statusNames: 0 is RESET, set bits by name in bit order (§2.1)', () => {
  // §2.1: writing 0 to device status resets the device.
  assert.equal(statusNames(0), 'RESET');
  assert.equal(statusNames(Status.ACKNOWLEDGE), 'ACKNOWLEDGE');
  assert.equal(statusNames(0x0f), 'ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK');
  assert.equal(statusNames(Status.NEEDS_RESET | Status.FAILED), 'NEEDS_RESET|FAILED');
  assert.equal(statusNames(0xcf), 'ACKNOWLEDGE|DRIVER|DRIVER_OK|FEATURES_OK|NEEDS_RESET|FAILED');
});

test('statusNames: bits the specification does not define are shown as one hex value after the named ones', () => {
  // Bit 5 (0x20) is reserved in §2.1; bits above 7 cannot be in the status byte but are not hidden either.
  assert.equal(statusNames(0x20), '0x20');
  assert.equal(statusNames(0x23), 'ACKNOWLEDGE|DRIVER|0x20');
  assert.equal(statusNames(0x1_10 | Status.FAILED), 'FAILED|0x110');
});

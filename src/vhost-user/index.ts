/**
 * vhost-user: serve any VirtioDevice to a real front-end (QEMU, User-Mode Linux's
 * virtio_uml), and a TypeScript front-end for tests and tools. See docs/vhost-user.md.
 */
export { serveDevice, type BackendServer, type ServeDeviceOptions } from './backend-server.js';
export { BackendSession, OFFERED_PROTOCOL_FEATURES, type BackendSessionOptions } from './backend-session.js';
export { serveControl, MAX_CONTROL_LINE, type ControlServer, type ControlServerOptions } from './control-server.js';
export { answer as answerControl, answerLine as answerControlLine, CONTROL_COMMANDS, type ControlAnswer, type ControlTarget } from './control-commands.js';
export { VhostUserFrontend, VhostUserError, type FrontendEvents } from './frontend.js';
export { FrontendMemory, type RamRegionSpec } from './frontend-memory.js';
export { ProtocolFeature, Request, BackendRequest, VHOST_USER_F_PROTOCOL_FEATURES } from './protocol.js';
// The types the public classes above expose (the session's state, the front-end's memory, messages).
export { InflightTrackingDevice, type TrackedQueue } from './inflight-tracker.js';
export { MappedMemory, type MappedRegion } from './mapped-memory.js';
export { Vring, type VringAddresses } from './vring.js';
export type { RamRegion } from './frontend-memory.js';
export type { InflightDescription, MemoryRegionDescription } from './payloads.js';
export type { RawMessage } from './codec.js';
export type { InflightQueue } from './inflight.js';

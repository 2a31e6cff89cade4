/**
 * The virtio-test wire format, shared by the device model and the drivers (the C driver in
 * guest/linux/ mirrors it in include/uapi/linux/virtio_test.h). All fields little-endian.
 *
 *   request  (driver → device, 48 bytes):  le32 type, le32 arg1, le32 arg2, le32 arg3, char arg4[32]
 *   response (device → driver, 12 bytes):  le32 ret, le32 arg1, le32 arg2
 *   config space (12 bytes):               le32 num_pages, le32 actual, le32 event
 *
 * The seed's QEMU and kernel headers disagree on the config size (12 vs 8 bytes) and QEMU
 * never initialises num_pages (it leaks stack bytes); here every byte is defined: the
 * 12-byte layout of the QEMU header, all zero at reset.
 */

/** Device ID 45 as in the seed. virtio 1.4 assigns 45 to virtio-spi; the CLI warns about it. */
export const VIRTIO_ID_TEST = 45;
/** Feature bit 0: the device prints requests. The driver requires it. */
export const VIRTIO_TEST_F_CAN_PRINT = 0;
export const REQUEST_SIZE = 48;
export const RESPONSE_SIZE = 12;
export const ARG4_SIZE = 32;
export const CONFIG_SIZE = 12;
export const CONFIG_NUM_PAGES = 0;
export const CONFIG_ACTUAL = 4;
export const CONFIG_EVENT = 8;
/** The largest ring by default: 256, what virtio_uml (Linux 6.1) always sets up. */
export const DEFAULT_QUEUE_SIZE = 256;
/** Byte offsets of the fields in the request and in the response. */
export const REQUEST_TYPE = 0;
export const REQUEST_ARG1 = 4;
export const REQUEST_ARG2 = 8;
export const REQUEST_ARG3 = 12;
export const REQUEST_ARG4 = 16;
export const RESPONSE_RET = 0;
export const RESPONSE_ARG1 = 4;
export const RESPONSE_ARG2 = 8;
/** The text the seed's driver sends in arg4. */
export const GREETING = 'hello back end!';

export interface TestRequest {
  type: number;
  arg1: number;
  arg2: number;
  arg3: number;
  /** Up to 32 bytes; encoded NUL-padded. */
  arg4: Uint8Array;
}

export interface TestResponse {
  ret: number;
  arg1: number;
  arg2: number;
}

/** The request the driver builds for a written byte n: {n, n+1, n+2, n+3, "hello back end!"}. */
export function requestFor(n: number): TestRequest {
  return { type: n >>> 0, arg1: (n + 1) >>> 0, arg2: (n + 2) >>> 0, arg3: (n + 3) >>> 0, arg4: new TextEncoder().encode(GREETING) };
}

/** What the device adds to each of arg1..arg3. */
export const ANSWER_OFFSET = 100;

/** The device's answer: each of arg1..arg3 plus 100, wrapping at 2^32. */
export function answer(req: TestRequest): TestResponse {
  return {
    ret: (req.arg1 + ANSWER_OFFSET) >>> 0,
    arg1: (req.arg2 + ANSWER_OFFSET) >>> 0,
    arg2: (req.arg3 + ANSWER_OFFSET) >>> 0,
  };
}

export function encodeRequest(req: TestRequest, into: Uint8Array = new Uint8Array(REQUEST_SIZE)): Uint8Array {
  const v = new DataView(into.buffer, into.byteOffset, REQUEST_SIZE);
  v.setUint32(REQUEST_TYPE, req.type, true);
  v.setUint32(REQUEST_ARG1, req.arg1, true);
  v.setUint32(REQUEST_ARG2, req.arg2, true);
  v.setUint32(REQUEST_ARG3, req.arg3, true);
  into.fill(0, REQUEST_ARG4, REQUEST_SIZE);
  into.set(req.arg4.subarray(0, ARG4_SIZE), REQUEST_ARG4);
  return into;
}

export function decodeRequest(bytes: Uint8Array): TestRequest {
  const v = new DataView(bytes.buffer, bytes.byteOffset, REQUEST_SIZE);
  return {
    type: v.getUint32(REQUEST_TYPE, true),
    arg1: v.getUint32(REQUEST_ARG1, true),
    arg2: v.getUint32(REQUEST_ARG2, true),
    arg3: v.getUint32(REQUEST_ARG3, true),
    arg4: bytes.slice(REQUEST_ARG4, REQUEST_ARG4 + ARG4_SIZE),
  };
}

export function encodeResponse(resp: TestResponse, into: Uint8Array = new Uint8Array(RESPONSE_SIZE)): Uint8Array {
  const v = new DataView(into.buffer, into.byteOffset, RESPONSE_SIZE);
  v.setUint32(RESPONSE_RET, resp.ret, true);
  v.setUint32(RESPONSE_ARG1, resp.arg1, true);
  v.setUint32(RESPONSE_ARG2, resp.arg2, true);
  return into;
}

export function decodeResponse(bytes: Uint8Array): TestResponse {
  const v = new DataView(bytes.buffer, bytes.byteOffset, RESPONSE_SIZE);
  return { ret: v.getUint32(RESPONSE_RET, true), arg1: v.getUint32(RESPONSE_ARG1, true), arg2: v.getUint32(RESPONSE_ARG2, true) };
}

/**
 * arg4 as the seed prints it (`%s`), but bounded by its 32 bytes (the seed reads past an
 * unterminated field) and with anything but printable ASCII shown as \xNN, so a guest
 * cannot write control sequences to the host's terminal.
 */
export function arg4Text(arg4: Uint8Array): string {
  let s = '';
  for (const b of arg4) {
    if (b === 0) break;
    s += b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  }
  return s;
}

/** The five lines the device logs for a request, worded exactly as the seed's QEMU device. */
export function requestLogLines(req: TestRequest): string[] {
  return [
    `QEMU_BACK_END: >>> get type [ ${req.type} ] form the front end <<<`,
    `QEMU_BACK_END: >>> get arg1 [ ${req.arg1} ] form the front end <<<`,
    `QEMU_BACK_END: >>> get arg2 [ ${req.arg2} ] form the front end <<<`,
    `QEMU_BACK_END: >>> get arg3 [ ${req.arg3} ] form the front end <<<`,
    // The seed labels arg4 "arg3" too; kept, since users compare against the seed's output.
    `QEMU_BACK_END: >>> get arg3 [ ${arg4Text(req.arg4)} ] form the front end <<<`,
  ];
}

/** The lines the driver's used-buffer callback prints for a response (seed wording). */
export function responseLogLines(resp: TestResponse): string[] {
  return [`virtio response ret is ${resp.ret}`, `virtio response arg1 is ${resp.arg1}`, `virtio response arg2 is ${resp.arg2}`];
}

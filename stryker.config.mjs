// Mutation testing (StrykerJS 9; 10 needs Node 22): `npm run mutate`, results in
// docs/reliability.md "Mutation testing". Not run in CI (too long on 2 cores).
//
// Stryker copies the project to .stryker-tmp/, mutates the TypeScript sources there (all
// mutants in one build, switched at run time), compiles with tsc, and runs the compiled
// node:test files one process per file with the tap runner. coverageAnalysis "perTest" is per
// test *file* with this runner: a mutant only runs the files whose tests executed it, and the
// first failing file stops it (bail).
//
// Two scopes (MUTATE_SCOPE; scripts/mutate.mjs runs both), each judged by its own unit tests:
//   core        src/virtio/ and src/device/  against test/virtio + test/device (+ two files below)
//   vhost-user  src/vhost-user/              against the fast files of test/vhost-user
// Left out of vhost-user: cli, control-socket, longevity (they start daemons as child processes,
// whose coverage Stryker cannot see, and take 5-10 s each), native (the addon's own tests; its
// TypeScript wrapper native/index.ts is not mutated) and fuzz (time-boxed random runs: a
// mutant's verdict must not depend on the clock).
//
// For development: `MUTATE_SCOPE=core npx stryker run --mutate src/device/runtime.ts`.
// In parts: `MUTATE_SCOPE=vhost-user MUTATE_PART=session npx stryker run --mutate src/vhost-user/backend-session.ts`.
const scope = process.env.MUTATE_SCOPE ?? 'core';
const scopes = {
  core: {
    mutate: ['src/virtio/**/*.ts', 'src/device/**/*.ts', '!src/**/index.ts'],
    testFiles: [
      'dist/test/virtio/*.test.js',
      'dist/test/device/*.test.js',
      // The unit tests of two src/device concerns that live beside their users: SlowDevice
      // (test/faults) and the runtime's trace emit sites (test/trace).
      'dist/test/faults/slow-device.test.js',
      'dist/test/trace/emit.test.js',
    ],
  },
  'vhost-user': {
    mutate: ['src/vhost-user/**/*.ts', '!src/vhost-user/index.ts', '!src/vhost-user/native/**'],
    // In this order a mutant runs the files that cover it, stopping at the first that fails:
    // broad and fast first (≈ 0.4-1 s each), the slow ones last (control 1.9 s, inflight 2.3 s,
    // control-plane 6.9 s). A surviving mutant of backend-session.ts runs them all (≈ 22 s).
    testFiles: [
      'vhost-user/backend',
      'vhost-user/hostile',
      'vhost-user/malformed',
      'vhost-user/codec',
      'vhost-user/packed',
      'vhost-user/lifecycle',
      'vhost-user/any-device',
      'trace/backend-session', // the session's trace emit sites (vhost_user_send, virtio_notify_irqfd)
      'vhost-user/backend-server',
      'vhost-user/inflight-region',
      'vhost-user/mapped-memory',
      'vhost-user/frontend-memory',
      'vhost-user/message-channel',
      'vhost-user/get-vring-base-drain',
      'vhost-user/ring-faults',
      'vhost-user/memory-shrink',
      'vhost-user/control',
      'vhost-user/inflight',
      'vhost-user/control-plane',
    ].map((n) => `dist/test/${n}.test.js`),
  },
};
const chosen = scopes[scope];
if (!chosen) throw new Error(`MUTATE_SCOPE must be one of ${Object.keys(scopes).join(', ')}`);
// MUTATE_PART names a run over part of a scope (with --mutate FILES), so that a scope too long for
// one sitting is measured in parts, each with its own reports: reports/mutation/<scope>-<part>.*
const part = process.env.MUTATE_PART;
if (part !== undefined && !/^[a-z0-9-]+$/.test(part)) throw new Error('MUTATE_PART must be lower-case letters, digits and dashes');
const name = part ? `${scope}-${part}` : scope;

export default {
  $schema: './node_modules/@stryker-mutator/core/schema/stryker-schema.json',
  packageManager: 'npm',
  testRunner: 'tap',
  tap: { testFiles: chosen.testFiles, forceBail: true },
  coverageAnalysis: 'perTest',
  // A static mutant (module-level code: constant tables, enums) runs every test file of the
  // scope; on 2 cores they alone took hours. They are left out (reported as Ignored).
  ignoreStatic: true,
  buildCommand: 'npx tsc -p tsconfig.json',
  mutate: chosen.mutate,
  // Never copied to the sandbox: build outputs (the UML guest is 1.6 GB), benchmarks, guest sources.
  // src/vhost-user/native/build/ (the compiled addon) is copied: the tests load it.
  ignorePatterns: ['/dist', '/build', '/bench', '/guest', '/docs', '/reports', '/.ci'],
  tempDirName: '.stryker-tmp',
  concurrency: 2,
  // A mutant that makes a test loop forever (the 65536-buffer wrap tests) is a Timeout, which
  // Stryker counts as detected; a short margin keeps each such mutant to a few seconds.
  timeoutMS: 3000,
  timeoutFactor: 1.5,
  incremental: true,
  incrementalFile: `reports/mutation/${name}-incremental.json`,
  // event-recorder: one JSON file per tested mutant as it finishes (survivors can be read during a long run).
  reporters: ['clear-text', 'progress', 'html', 'json', 'event-recorder'],
  eventReporter: { baseDir: `reports/mutation/${name}-events` },
  htmlReporter: { fileName: `reports/mutation/${name}.html` },
  jsonReporter: { fileName: `reports/mutation/${name}.json` },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  thresholds: { high: 90, low: 80, break: null },
  cleanTempDir: true,
};

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
    testFiles: [
      'any-device',
      'backend',
      'backend-server',
      'codec',
      'control',
      'control-plane',
      'get-vring-base-drain',
      'hostile',
      'inflight',
      'inflight-region',
      'lifecycle',
      'malformed',
      'mapped-memory',
      'memory-shrink',
      'message-channel',
      'packed',
      'ring-faults',
    ]
      .map((n) => `dist/test/vhost-user/${n}.test.js`)
      // The session's trace emit sites (vhost_user_send, virtio_notify_irqfd), in process.
      .concat(['dist/test/trace/backend-session.test.js']),
  },
};
const chosen = scopes[scope];
if (!chosen) throw new Error(`MUTATE_SCOPE must be one of ${Object.keys(scopes).join(', ')}`);

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
  incrementalFile: `reports/mutation/${scope}-incremental.json`,
  // event-recorder: one JSON file per tested mutant as it finishes (survivors can be read during a long run).
  reporters: ['clear-text', 'progress', 'html', 'json', 'event-recorder'],
  eventReporter: { baseDir: `reports/mutation/${scope}-events` },
  htmlReporter: { fileName: `reports/mutation/${scope}.html` },
  jsonReporter: { fileName: `reports/mutation/${scope}.json` },
  clearTextReporter: { allowColor: false, logTests: false, maxTestsToLog: 0 },
  thresholds: { high: 90, low: 80, break: null },
  cleanTempDir: true,
};

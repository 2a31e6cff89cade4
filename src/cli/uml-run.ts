/** `virtio --machine uml`: not wired yet (see issue 3). */
export async function runOnUml(_opts: { argv: string[]; deviceId: number; queueSize: number; verbose: boolean }): Promise<number> {
  process.stderr.write('virtio: --machine uml is not available yet\n');
  return 1;
}

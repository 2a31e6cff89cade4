/**
 * The guest kernel's allocator for memory the device may see (kmalloc/dma_alloc in Linux):
 * 64-byte blocks over a range of guest-physical addresses, first fit from a moving cursor,
 * with alignment up to a page.
 */
const BLOCK = 64;

export class DmaAllocator {
  private readonly used: Uint8Array;
  private readonly sizes = new Map<number, number>();
  private cursor = 0;
  private freeBlocks: number;

  constructor(
    private readonly base: number,
    size: number,
  ) {
    if (base % 4096 !== 0) throw new RangeError('allocator base must be page-aligned');
    this.used = new Uint8Array(Math.floor(size / BLOCK));
    this.freeBlocks = this.used.length;
  }

  get freeBytes(): number {
    return this.freeBlocks * BLOCK;
  }

  alloc(bytes: number, align = 16): number | null {
    if (!(bytes > 0) || align > 4096 || (align & (align - 1)) !== 0) throw new RangeError(`bad allocation ${bytes}/${align}`);
    const n = Math.ceil(bytes / BLOCK);
    const step = Math.max(1, align / BLOCK);
    const total = this.used.length;
    if (n > this.freeBlocks) return null;
    for (let pass = 0; pass < 2; pass++) {
      let i = Math.ceil((pass === 0 ? this.cursor : 0) / step) * step;
      const end = pass === 0 ? total : this.cursor + n;
      for (; i + n <= Math.min(total, end); i += step) {
        let j = 0;
        while (j < n && this.used[i + j] === 0) j++;
        if (j === n) {
          this.used.fill(1, i, i + n);
          this.freeBlocks -= n;
          this.cursor = i + n;
          const addr = this.base + i * BLOCK;
          this.sizes.set(addr, n);
          return addr;
        }
        // skip past the used block we hit, keeping alignment
        if (step === 1) i += j;
      }
    }
    return null;
  }

  free(addr: number): void {
    const n = this.sizes.get(addr);
    if (n === undefined) throw new Error(`dma free of 0x${addr.toString(16)}, which is not allocated`);
    this.sizes.delete(addr);
    const i = (addr - this.base) / BLOCK;
    this.used.fill(0, i, i + n);
    this.freeBlocks += n;
  }
}

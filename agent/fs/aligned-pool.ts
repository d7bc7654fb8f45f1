import { alignedBuffers } from './direct-io.js';

/**
 * Page-aligned buffers (direct-io.ts) kept for reuse by the operations of one process. An agent's
 * backups, promotions and log-archive bases each need the same sets: a pack placer's pack buffers
 * (9 MiB each), its readers' chunk buffers and its sealers' lanes (1 MiB each). Made per operation and
 * dropped, a set is freed only when V8 next collects its old generation, which a host whose own heap
 * is small does rarely: on the example node promoting every minute, the sets of two backups (about
 * 60 MiB each) were measured held at once. Given back here, the agent holds at most what the
 * operations running at once need, made once.
 *
 * Contract: `take` hands out buffers nobody else holds. A buffer is given back at most once, and only
 * when nothing (a read, a crypto thread, an upload) can touch it any more; one never given back is
 * only garbage, as before.
 */
export class AlignedPool {
  private readonly free = new Map<number, Buffer[]>();
  private handedOut = 0;
  /** A buffer taken and never given back stops counting as in use once V8 has collected it. */
  private readonly dropped = new FinalizationRegistry<number>((size) => {
    this.handedOut -= size;
  });

  /** `count` buffers of `size` bytes (a multiple of DIRECT_ALIGN): free ones first, the rest made. */
  take(count: number, size: number): Buffer[] {
    const free = this.free.get(size) ?? [];
    const reused = free.splice(Math.max(0, free.length - count));
    const out = reused.length === count ? reused : [...reused, ...alignedBuffers(count - reused.length, size)];
    for (const b of out) {
      this.handedOut += b.length;
      this.dropped.register(b, b.length, b);
    }
    return out;
  }

  /** Hands buffers back for the next `take` of their size. */
  give(buffers: readonly Buffer[]): void {
    for (const b of buffers) {
      const free = this.free.get(b.length) ?? [];
      // Given twice, a buffer would go to two users at once: once is all it can count for.
      if (free.includes(b)) continue;
      if (this.dropped.unregister(b)) this.handedOut -= b.length;
      free.push(b);
      this.free.set(b.length, free);
    }
  }

  /** Bytes handed out by `take` and not given back (nor, dropped, collected). */
  get inUseBytes(): number {
    return this.handedOut;
  }

  /** Bytes held for reuse, not handed out. */
  get freeBytes(): number {
    let n = 0;
    for (const [size, free] of this.free) n += size * free.length;
    return n;
  }
}

/** The process's pool: every backup of every agent in it draws from it. */
export const alignedPool = new AlignedPool();

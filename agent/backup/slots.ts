/**
 * A fixed number of slots (a counting semaphore): `take` resolves once one is free, waiters in the order
 * they came, and each `take` is matched by one `give`. No timeouts and no cancel: a holder gives its
 * slot back when its own work settles, so every waiter is served once the holders are done.
 */
export class Slots {
  private free: number;
  private readonly waiting: (() => void)[] = [];

  constructor(size: number) {
    this.free = Math.max(1, size);
  }

  async take(): Promise<void> {
    if (this.free > 0) {
      this.free--;
      return;
    }
    await new Promise<void>((resolve) => this.waiting.push(resolve));
  }

  give(): void {
    const next = this.waiting.shift();
    if (next) next();
    else this.free++;
  }

  /** `work` run while holding a slot; the slot is given back however it ends. */
  async with<T>(work: () => Promise<T>): Promise<T> {
    await this.take();
    try {
      return await work();
    } finally {
      this.give();
    }
  }
}

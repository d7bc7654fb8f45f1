import { createHash } from 'node:crypto';

/**
 * Write batches like those of a chain indexer or a validator, for the compression benchmark: per block,
 * one batch with the block's header, its transactions, the touched accounts (overwritten: counters and
 * balances), a secondary index by address, the block's signatures (random hex, incompressible) and a
 * few counters. JSON values with hex hashes and decimal numbers, as such nodes store them; nothing in
 * it repeats except what really repeats in that data (field names, addresses from a bounded set,
 * heights). Deterministic for a given seed, so two runs measure the same bytes.
 */

export type IndexerOp = { type: 'put'; key: string; value: Buffer } | { type: 'del'; key: string };

const ACCOUNTS = 20_000;
const VALIDATORS = 100;

export class IndexerRecords {
  private height: number;
  private txCounter = 0;
  private parent: string;
  private state: bigint;

  constructor(seed = 1, firstHeight = 18_000_000) {
    this.height = firstHeight;
    this.state = BigInt(seed) * 0x9e3779b97f4a7c15n + 1n;
    this.parent = hex(32, `parent-${seed}`);
  }

  /** The next block's batch: ~4 entries per transaction, 10–90 transactions. */
  nextBlock(): IndexerOp[] {
    const h = this.height++;
    const hash = hex(32, `block-${h}`);
    const txs = 10 + this.rand(81);
    const ops: IndexerOp[] = [];
    const time = 1_700_000_000 + h * 12;
    let gasUsed = 0;
    const touched = new Map<string, { balance: bigint; nonce: number }>();
    for (let i = 0; i < txs; i++) {
      const txHash = hex(32, `tx-${this.txCounter++}`);
      const from = this.account();
      const to = this.account();
      const gas = this.rand(4) === 0 ? 21_000 : 21_000 + this.rand(400_000);
      gasUsed += gas;
      const value = BigInt(this.rand(1_000_000)) * 10n ** BigInt(9 + this.rand(9));
      const nonce = this.rand(5_000);
      const tx = {
        block: h,
        index: i,
        hash: txHash,
        from,
        to,
        value: value.toString(),
        nonce,
        gas,
        gasPrice: String(1_000_000_000 + this.rand(50_000_000_000)),
        status: this.rand(50) === 0 ? 0 : 1,
        input: this.rand(3) === 0 ? '0x' : `0xa9059cbb${'0'.repeat(24)}${to.slice(2)}${hex(32, `amount-${txHash}`)}`,
      };
      ops.push({ type: 'put', key: `tx/${txHash}`, value: json(tx) });
      ops.push({ type: 'put', key: `idx/addr/${from}/${pad(h, 12)}/${pad(i, 4)}`, value: Buffer.from(txHash) });
      ops.push({ type: 'put', key: `idx/addr/${to}/${pad(h, 12)}/${pad(i, 4)}`, value: Buffer.from(txHash) });
      touched.set(from, { balance: BigInt(this.rand(1_000_000_000)) * 10n ** 9n, nonce: nonce + 1 });
      touched.set(to, { balance: BigInt(this.rand(1_000_000_000)) * 10n ** 9n, nonce: this.rand(5_000) });
    }
    for (const [address, a] of touched) {
      ops.push({ type: 'put', key: `acct/${address}`, value: json({ address, balance: a.balance.toString(), nonce: a.nonce, updatedAt: h }) });
    }
    const block = {
      height: h,
      hash,
      parentHash: this.parent,
      stateRoot: hex(32, `state-${h}`),
      receiptsRoot: hex(32, `receipts-${h}`),
      timestamp: time,
      proposer: validator(this.rand(VALIDATORS)),
      transactions: txs,
      gasUsed,
      gasLimit: 30_000_000,
      baseFeePerGas: String(7_000_000_000 + this.rand(3_000_000_000)),
    };
    ops.push({ type: 'put', key: `block/${pad(h, 12)}`, value: json(block) });
    ops.push({ type: 'put', key: `hash/${hash}`, value: Buffer.from(String(h)) });
    // A validator's attestations: BLS-sized signatures, random bytes in hex.
    const signers = 4 + this.rand(4);
    const signatures = Array.from({ length: signers }, (_, i) => ({ validator: validator((h + i) % VALIDATORS), signature: hex(96, `sig-${h}-${i}`) }));
    ops.push({ type: 'put', key: `sig/${pad(h, 12)}`, value: json({ height: h, signatures }) });
    ops.push({ type: 'put', key: 'meta/height', value: Buffer.from(String(h)) });
    ops.push({ type: 'put', key: 'meta/txcount', value: Buffer.from(String(this.txCounter)) });
    // Pruning: an old block's signatures go.
    if (h % 4 === 0) ops.push({ type: 'del', key: `sig/${pad(h - 10_000, 12)}` });
    this.parent = hash;
    return ops;
  }

  private account(): string {
    // A few hot accounts and a long tail, as on a real chain.
    const r = this.rand(100);
    return address(r < 30 ? this.rand(50) : this.rand(ACCOUNTS));
  }

  /** xorshift64*: fast, deterministic, good enough to pick fields. */
  private rand(n: number): number {
    let x = this.state;
    x ^= x >> 12n;
    x ^= (x << 25n) & 0xffffffffffffffffn;
    x ^= x >> 27n;
    this.state = x;
    return Number(((x * 0x2545f4914f6cdd1dn) & 0xffffffffffffffffn) >> 11n) % n;
  }
}

function json(v: unknown): Buffer {
  return Buffer.from(JSON.stringify(v));
}

function hex(bytes: number, label: string): string {
  let out = '';
  for (let i = 0; out.length < bytes * 2; i++) out += createHash('sha256').update(`${label}/${i}`).digest('hex');
  return `0x${out.slice(0, bytes * 2)}`;
}

const addresses = new Map<string, string>();
function named(label: string): string {
  let a = addresses.get(label);
  if (a === undefined) addresses.set(label, (a = hex(20, label)));
  return a;
}
const address = (i: number) => named(`account-${i}`);
const validator = (i: number) => named(`validator-${i}`);
const pad = (n: number, width: number) => String(n).padStart(width, '0');

import type { Readable } from 'node:stream';
import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { SEAL_MAGIC, parseKeyFile } from './crypto/index.js';
import { KEYS_PREFIX } from './repository-keys.js';
import { SEALED_PACK_MAGIC } from './sealed-codec.js';
import type { ObjectInfo, ObjectWriter, Storage } from '../storage/storage.js';
import type { PackEntry } from './pack.js';

/**
 * The one place that keeps plaintext out of an encrypted repository: every Repository of one wraps its
 * storage in this, so whatever a bug upstream hands over, nothing unsealed is stored. An object must be
 * an envelope (it starts with "NASEAL03"); a pack must end with a sealed header ("NAPACK03") and every
 * piece written into it must be an envelope; a key object must be a key file (only wrapped keys in it).
 * Anything else is refused (INTERNAL: it is a bug, not the store's fault) before a byte is stored.
 * Reads pass through.
 */
export class SealedOnlyStorage implements Storage {
  readonly description: string;
  readonly getRange: Storage['getRange'];
  readonly streamRange: Storage['streamRange'];
  readonly openWriter: Storage['openWriter'];

  /** `packBlobs`: the blobs a whole pack's sealed header lists (SealedCodec.readPackTail), to check each. */
  constructor(
    private readonly inner: Storage,
    private readonly packBlobs: (id: string, pack: Buffer) => PackEntry[],
  ) {
    this.description = inner.description;
    this.getRange = inner.getRange.bind(inner);
    this.streamRange = inner.streamRange?.bind(inner);
    this.openWriter = inner.openWriter ? () => new SealedOnlyWriter(inner.openWriter!(), inner.description) : undefined;
  }

  async put(name: string, data: Buffer): Promise<void> {
    checkSealed(this.description, name, data);
    if (name.startsWith('data/')) {
      const id = name.slice(name.lastIndexOf('/') + 1);
      let blobs: PackEntry[];
      try {
        blobs = this.packBlobs(id, data);
      } catch (err) {
        throw refused(this.description, name, `its header does not open: ${(err as Error).message}`);
      }
      for (const [blob, offset] of blobs) if (!startsSealed(data.subarray(offset))) throw refused(this.description, name, `blob ${blob} is not sealed`);
    }
    await this.inner.put(name, data);
  }

  putStream(name: string, _open: () => Readable, _size: number): Promise<void> {
    // Nothing of a repository is stored by stream; one whose bytes cannot be looked at is not stored.
    return Promise.reject(refused(this.description, name, 'a stream cannot be checked for plaintext'));
  }

  get(name: string): Promise<Buffer> {
    return this.inner.get(name);
  }

  stat(name: string): Promise<ObjectInfo | null> {
    return this.inner.stat(name);
  }

  list(prefix: string): AsyncIterable<ObjectInfo> {
    return this.inner.list(prefix);
  }

  delete(name: string): Promise<void> {
    return this.inner.delete(name);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}

/** A pack written in pieces: every piece an envelope (a sealed blob) but the last, the tail, which ends with the pack magic. */
class SealedOnlyWriter implements ObjectWriter {
  private tailSeen = false;

  constructor(
    private readonly inner: ObjectWriter,
    private readonly description: string,
  ) {}

  write(data: Buffer, position: number): Promise<void> {
    const isTail = data.length >= SEALED_PACK_MAGIC.length && data.subarray(data.length - SEALED_PACK_MAGIC.length).equals(SEALED_PACK_MAGIC);
    if (!isTail && !startsSealed(data)) return Promise.reject(refused(this.description, `a pack at ${position}`, 'a piece that is not a sealed blob'));
    if (isTail) this.tailSeen = true;
    return this.inner.write(data, position);
  }

  commit(name: string, size: number): Promise<void> {
    if (!name.startsWith('data/') || !this.tailSeen) return Promise.reject(refused(this.description, name, 'not a pack with a sealed header'));
    return this.inner.commit(name, size);
  }

  abort(): Promise<void> {
    return this.inner.abort();
  }
}

function checkSealed(description: string, name: string, data: Buffer): void {
  if (name.startsWith(KEYS_PREFIX)) {
    try {
      parseKeyFile(data);
      return;
    } catch {
      throw refused(description, name, 'not a key file');
    }
  }
  if (name.startsWith('data/')) {
    if (data.length < SEALED_PACK_MAGIC.length || !data.subarray(data.length - SEALED_PACK_MAGIC.length).equals(SEALED_PACK_MAGIC)) {
      throw refused(description, name, 'not a pack with a sealed header');
    }
    return; // and every blob its header lists (put)
  }
  if (!startsSealed(data)) throw refused(description, name, 'not sealed');
}

function startsSealed(data: Buffer): boolean {
  return data.length >= SEAL_MAGIC.length && data.subarray(0, SEAL_MAGIC.length).equals(SEAL_MAGIC);
}

function refused(description: string, name: string, why: string): AdminError {
  return new AdminError(ErrorCodes.INTERNAL, `${description}: refused to store ${name} in an encrypted repository: ${why}`);
}

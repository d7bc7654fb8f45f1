import { AdminError, ErrorCodes } from '../../shared/errors.js';
import { isBlobId, sha256 } from './format.js';
import { plainPackTail, readPackHeader, type PackEntry } from './pack.js';
import type { BlobType, CompressionPolicy, RepoCodec } from './repo-codec.js';

/**
 * The plain format (format 2, and format 3 made with `--insecure-no-encryption`): a blob is stored as its
 * bytes and named by their SHA-256, every other object is stored as given. It protects against damage
 * (every blob is checked against its hash), not against whoever can write the store.
 */
export class PlainCodec implements RepoCodec {
  readonly encrypted = false;

  blobId(_type: BlobType, data: Buffer): Promise<string> {
    return Promise.resolve(sha256(data));
  }

  sealBlob(_type: BlobType, _id: string, data: Buffer, _policy: CompressionPolicy): Promise<Buffer> {
    return Promise.resolve(data);
  }

  openBlob(_type: BlobType, id: string, stored: Buffer, maxLength: number): Promise<Buffer> {
    if (stored.length > maxLength) return Promise.reject(new AdminError(ErrorCodes.CORRUPT, `blob ${id} is ${stored.length} bytes, more than ${maxLength}`));
    if (sha256(stored) !== id) return Promise.reject(new AdminError(ErrorCodes.CORRUPT, `blob ${id} does not match its hash`));
    return Promise.resolve(stored);
  }

  async checkBlob(type: BlobType, id: string, stored: Buffer, maxLength: number): Promise<void> {
    await this.openBlob(type, id, stored, maxLength);
  }

  storedLength(n: number): number {
    return n;
  }

  sealObject(_name: string, plaintext: Buffer): Promise<Buffer> {
    return Promise.resolve(plaintext);
  }

  openObject(_name: string, stored: Buffer): Promise<Buffer> {
    return Promise.resolve(stored);
  }

  packTail(blobs: PackEntry[]): { id: string; tail: Buffer } {
    return plainPackTail(blobs);
  }

  readPackTail(id: string, end: Buffer): PackEntry[] {
    let header;
    try {
      header = readPackHeader(end);
    } catch (err) {
      throw new AdminError(ErrorCodes.CORRUPT, (err as Error).message);
    }
    if (sha256(header.headerBytes) !== id) throw new AdminError(ErrorCodes.CORRUPT, 'its header does not match its name');
    for (const [blob, offset, length] of header.blobs) {
      if (!isBlobId(blob) || !Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
        throw new AdminError(ErrorCodes.CORRUPT, 'its header lists a malformed blob');
      }
    }
    return header.blobs;
  }

  tailLength(last12: Buffer): number {
    return last12.length >= 12 ? last12.readUInt32LE(last12.length - 12) + 12 : 0;
  }

  warmUp(): void {}

  close(): Promise<void> {
    return Promise.resolve();
  }
}

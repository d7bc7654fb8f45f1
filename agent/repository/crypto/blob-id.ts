import crypto from 'node:crypto';
import { AdminError, ErrorCodes } from '../../../shared/errors.js';
import { checkKey } from './envelope-format.js';

/** The two kinds of blob. Their type byte enters the id, so equal bytes stored as both get two ids. */
export type BlobType = 'data' | 'tree';

const TYPE_BYTE: Record<BlobType, number> = { data: 0x64, tree: 0x74 };

/**
 * A blob's content id: HMAC-SHA256(idKey, typeByte || data), 64 lowercase hex digits, where typeByte
 * is 'd' (0x64) for data and 't' (0x74) for tree, and data is the concatenation of `pieces`. Keyed, so
 * equal content dedups inside one repository while whoever holds the store cannot test a guess.
 */
export function blobId(idKey: Buffer, type: BlobType, pieces: readonly Uint8Array[]): string {
  checkKey(idKey, 'the blob id key');
  const typeByte = TYPE_BYTE[type];
  if (typeByte === undefined) throw new AdminError(ErrorCodes.INTERNAL, `unknown blob type ${String(type)}`);
  const mac = crypto.createHmac('sha256', idKey);
  mac.update(Buffer.of(typeByte));
  for (const p of pieces) mac.update(p);
  return mac.digest('hex');
}

export function isBlobType(value: unknown): value is BlobType {
  return value === 'data' || value === 'tree';
}

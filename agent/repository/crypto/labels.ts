import { isBlobType, type BlobType } from './blob-id.js';
import { SealError } from './seal-error.js';

/**
 * The one spelling of every envelope label, the text each envelope's associated data binds:
 *   blob:   "node-admin v3 blob <type> <id>"
 *   object: "node-admin v3 object <name>"
 *   key:    "node-admin v3 key keys/<key id> <canonical kdf params>"  (key-file.ts)
 * The kind word after "node-admin v3 " differs between kinds and what follows it is restricted (hex
 * ids, object names without spaces), so two different things never get the same label.
 * A malformed id or name is refused as SealError 'format': ids and names may come from a hostile store.
 */

const BLOB_ID = /^[0-9a-f]{64}$/;
/** Object names: `/`-separated segments of lowercase [a-z0-9._-] (the repository's naming rule). */
const OBJECT_NAME = /^[a-z0-9._-]+(?:\/[a-z0-9._-]+)*$/;
const MAX_NAME = 1024;

export function blobLabel(type: BlobType, id: string): string {
  if (!isBlobType(type)) throw new SealError('format', `unknown blob type ${JSON.stringify(String(type)).slice(0, 40)}`);
  if (typeof id !== 'string' || !BLOB_ID.test(id)) throw new SealError('format', `malformed blob id ${JSON.stringify(String(id)).slice(0, 80)}`);
  return `node-admin v3 blob ${type} ${id}`;
}

export function objectLabel(name: string): string {
  if (!isObjectName(name)) throw new SealError('format', `malformed object name ${JSON.stringify(String(name)).slice(0, 80)}`);
  return `node-admin v3 object ${name}`;
}

export function isObjectName(name: unknown): name is string {
  return typeof name === 'string' && name.length <= MAX_NAME && OBJECT_NAME.test(name);
}

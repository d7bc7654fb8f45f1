import type { ChunkRead } from '../fs/direct-io.js';
import type { CompressionPolicy, RepoCodec } from '../repository/repo-codec.js';

/**
 * Names and seals a backup's data chunks, one reader's lane at a time (chunk-reader.ts), each lane
 * sealing into a buffer of its own (`buffers[lane]`, page-aligned; null: a plain codec, which stores
 * the chunk as it is).
 *
 * Where the codec names and seals in one round trip (RepoCodec.identifyAndSealBlob), a lane does so
 * while its last chunk was new to the repository: a chunk is then sent to a crypto thread once, not
 * twice. After a chunk that was already stored, the lane names its next chunk alone and seals only if
 * it is new: a run of stored chunks (a file whose hash cache entry was lost) costs no seals.
 *
 * Contract: per lane, `identify` then (unless the id turned out stored) `sealed` for the same chunk,
 * before that lane's next `identify`; `sealed` gives the stored bytes, a view of the lane's buffer
 * (or the chunk itself), valid until the lane's next `identify`.
 */
export class LaneSealer {
  private readonly pending: (Buffer | null)[];
  private readonly lastWasNew: boolean[];

  constructor(
    private readonly codec: RepoCodec,
    private readonly buffers: Buffer[] | null,
    lanes: number,
  ) {
    this.pending = Array.from({ length: lanes }, () => null);
    this.lastWasNew = Array.from({ length: lanes }, () => true);
  }

  /** The chunk's blob id; `isStored` says whether the repository holds it already (then it is not sealed). */
  async identify(chunk: Buffer, policy: CompressionPolicy, lane: number, isStored: (id: string) => boolean): Promise<string> {
    this.pending[lane] = null;
    const out = this.buffers?.[lane];
    if (out && this.codec.identifyAndSealBlob && this.lastWasNew[lane]) {
      const { id, sealed } = await this.codec.identifyAndSealBlob('data', chunk, policy, out);
      this.lastWasNew[lane] = !isStored(id);
      this.pending[lane] = sealed;
      return id;
    }
    const id = await this.codec.blobId('data', chunk);
    this.lastWasNew[lane] = !isStored(id);
    return id;
  }

  /**
   * `identify`, with the chunk read into `into` by the codec's own thread (RepoCodec.readAndIdentifyBlob)
   * rather than by the caller: its id; null where the codec cannot or direct I/O was refused (nothing
   * named: the caller reads the chunk and calls `identify`). Throws `shrank()` where the file ended
   * before the chunk did.
   */
  async identifyRead(read: ChunkRead, into: Buffer, policy: CompressionPolicy, lane: number, isStored: (id: string) => boolean, shrank: () => Error): Promise<string | null> {
    if (!this.codec.readAndIdentifyBlob) return null;
    this.pending[lane] = null;
    const out = (this.lastWasNew[lane] && this.buffers?.[lane]) || null;
    const r = await this.codec.readAndIdentifyBlob('data', read, into, policy, out);
    if (r === null || 'refused' in r) return null;
    if ('got' in r) throw shrank();
    this.lastWasNew[lane] = !isStored(r.id);
    this.pending[lane] = r.sealed;
    return r.id;
  }

  /** The stored bytes of the chunk `identify` named `id` in this lane. */
  async sealed(id: string, chunk: Buffer, policy: CompressionPolicy, lane: number): Promise<Buffer> {
    const ready = this.pending[lane];
    this.pending[lane] = null;
    return ready ?? this.codec.sealBlob('data', id, chunk, policy, this.buffers?.[lane]);
  }
}

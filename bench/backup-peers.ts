import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { runQuiet, runTimed, type TimedProcess } from './backup-timed.js';

/**
 * The peers of the backup benchmark, driven through their command lines with defaults (what a person
 * would type), each with a repository and a cache of its own under the benchmark's work directory so
 * that nothing of the user's (~/.cache/restic, ~/.config/borg) is read or written.
 *
 *   restic: repository format of its `init` default ("stable": v2 in 0.14), compression auto (zstd),
 *           always encrypted (AES-256-CTR + Poly1305); RESTIC_PASSWORD=bench.
 *   borg:   `init --encryption=none`, compression lz4 (its default), files cache ctime,size,inode.
 */

export type PeerName = 'restic' | 'borg';

export const INSTALL_HINT: Record<PeerName | 'time', string> = {
  restic: 'apt-get install -y --no-install-recommends restic   (or https://restic.net)',
  borg: 'apt-get install -y --no-install-recommends borgbackup   (or https://www.borgbackup.org)',
  time: 'apt-get install -y --no-install-recommends time   (GNU time, /usr/bin/time)',
};

/** The peer's version line, or null when it cannot be run. */
export function peerVersion(name: PeerName): string | null {
  const r = spawnSync(name, name === 'restic' ? ['version'] : ['--version'], { encoding: 'utf8' });
  if (r.error || r.status !== 0) return null;
  return r.stdout.trim().split('\n')[0] ?? name;
}

export interface PeerBackup {
  timed: TimedProcess;
  /** Bytes the tool says it added to its repository (restic data_added, borg deduplicated_size). */
  bytesAdded: number | null;
  /** Everything else it reported, for results.json. */
  summary: unknown;
}

export class Restic {
  constructor(
    readonly repo: string,
    readonly cacheDir: string,
    private readonly gnuTime: boolean,
  ) {}

  env(): NodeJS.ProcessEnv {
    return { ...process.env, RESTIC_REPOSITORY: this.repo, RESTIC_PASSWORD: 'bench', RESTIC_CACHE_DIR: this.cacheDir };
  }

  init(): void {
    runQuiet('restic', ['init'], { env: this.env() });
  }

  /** `restic backup <dir>`: the parent snapshot is the latest one of the same host and path. */
  backup(dir: string, extra: readonly string[] = []): PeerBackup {
    const timed = runTimed('restic', ['backup', '--json', ...extra, dir], { env: this.env(), gnuTime: this.gnuTime });
    let summary: Record<string, unknown> | null = null;
    for (const line of timed.stdout.split('\n')) {
      if (!line.startsWith('{')) continue;
      try {
        const m = JSON.parse(line) as Record<string, unknown>;
        if (m.message_type === 'summary') summary = m;
      } catch {
        // a status line cut short: not the summary
      }
    }
    timed.stdout = ''; // status lines: not worth keeping
    return { timed, bytesAdded: typeof summary?.data_added === 'number' ? summary.data_added : null, summary };
  }

  restore(target: string): TimedProcess {
    return runTimed('restic', ['restore', 'latest', '--target', target], { env: this.env(), gnuTime: this.gnuTime });
  }

  /** Back to a new, empty repository and cache. */
  reset(): void {
    fs.rmSync(this.repo, { recursive: true, force: true });
    fs.rmSync(this.cacheDir, { recursive: true, force: true });
    this.init();
  }

  /** Makes this repository and cache what `from`'s are (a cloneTo copy), replacing what is here. */
  resetTo(from: Restic): void {
    fs.rmSync(this.repo, { recursive: true, force: true });
    fs.rmSync(this.cacheDir, { recursive: true, force: true });
    runQuiet('cp', ['-al', from.repo, this.repo]);
    if (fs.existsSync(from.cacheDir)) runQuiet('cp', ['-a', from.cacheDir, this.cacheDir]);
  }

  /** An independent copy of the repository as it is now (restic never rewrites a file: links suffice). */
  cloneTo(suffix: string): Restic {
    const repo = `${this.repo}-${suffix}`;
    const cacheDir = `${this.cacheDir}-${suffix}`;
    fs.rmSync(repo, { recursive: true, force: true });
    fs.rmSync(cacheDir, { recursive: true, force: true });
    runQuiet('cp', ['-al', this.repo, repo]);
    if (fs.existsSync(this.cacheDir)) runQuiet('cp', ['-a', this.cacheDir, cacheDir]);
    return new Restic(repo, cacheDir, this.gnuTime);
  }
}

export class Borg {
  constructor(
    readonly repo: string,
    /** BORG_BASE_DIR: its cache (chunks, files cache), config and security directories. */
    readonly home: string,
    private readonly gnuTime: boolean,
  ) {}

  env(): NodeJS.ProcessEnv {
    return {
      ...process.env,
      BORG_REPO: this.repo,
      BORG_BASE_DIR: this.home,
      BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK: 'yes',
      BORG_RELOCATED_REPO_ACCESS_IS_OK: 'yes',
    };
  }

  init(): void {
    fs.mkdirSync(this.home, { recursive: true });
    runQuiet('borg', ['init', '--encryption=none'], { env: this.env() });
  }

  /** Back to a new, empty repository (and cache). */
  reset(): void {
    fs.rmSync(this.repo, { recursive: true, force: true });
    fs.rmSync(this.home, { recursive: true, force: true });
    this.init();
  }

  /** `borg create ::<archive> <name>`, run in `cwd` so that the archive holds the relative path `name`. */
  backup(archive: string, cwd: string, name: string, extra: readonly string[] = []): PeerBackup {
    // Exit code 1 is borg's "warning" (e.g. a file changed while read): the archive exists.
    const timed = runTimed('borg', ['create', '--json', ...extra, `::${archive}`, name], { env: this.env(), cwd, gnuTime: this.gnuTime, okCodes: [1] });
    type Summary = { archive?: { stats?: { deduplicated_size?: number } } };
    let summary: Summary | null;
    try {
      summary = JSON.parse(timed.stdout) as Summary;
    } catch {
      summary = null; // no JSON: leave it out
    }
    const added = summary?.archive?.stats?.deduplicated_size;
    return { timed, bytesAdded: typeof added === 'number' ? added : null, summary };
  }

  /** `borg extract ::<archive>` into `target` (created). */
  restore(archive: string, target: string): TimedProcess {
    fs.mkdirSync(target, { recursive: true });
    return runTimed('borg', ['extract', `::${archive}`], { env: this.env(), cwd: target, gnuTime: this.gnuTime, okCodes: [1] });
  }

}

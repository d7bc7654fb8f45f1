#!/usr/bin/python3
"""A power-cut filesystem for the tests: FUSE, passing every operation through to a backing directory,
and keeping beside it what a power cut would leave.

    /usr/bin/python3 powercut_fs.py BASE MOUNTPOINT [--cut-after N] [--op-log FILE]

BASE/data is the backing tree (what processes on the mount see and change); BASE/store holds the
durable contents of files changed since their last fsync, and the files and directories a process
removed while the durable state still names them. What is in BASE/data when it mounts counts as durable.

The model is strict POSIX, the worst case a filesystem is allowed to be:
  - a file's contents (per inode: hard links share them) are durable as of its last fsync or fdatasync,
    or as written through a descriptor opened O_SYNC/O_DSYNC (the model makes that write's bytes durable;
    Linux's FUSE follows each such write with an fsync of the file, so in practice the whole file is);
    a file created after the mount has no durable contents until then (it comes back empty);
  - a directory's entries (names to inodes: creates, renames, links, unlinks, mkdirs, rmdirs) are
    durable as of its last fsync; a directory made after the mount has no durable entries until then,
    and is itself durable only once its parent is fsynced.
Nothing else is promised: not a rename made with the file's fsync, not a new file's entry with its data.

The power is cut by SIGUSR1, or by itself right after the N-th counted operation (--cut-after N; the
N-th completes). From then on every operation fails with EIO. When the mount goes (umount), if the
power was cut, BASE/data is replaced by the durable state: the next mount shows only that.

Counted operations, each a possible cut point: write, truncate, fsync, fdatasync, fsyncdir, create,
mknod, mkdir, symlink, link, rename, unlink, rmdir. With --op-log, each is appended to FILE as
"<n> <kind> <path>"; events go to stdout as JSON lines: ready, cut, exit (with the counts by kind).
"""
import errno
import json
import os
import shutil
import signal
import stat
import sys
import threading

import fusepy

EIO = fusepy.FuseOSError(errno.EIO)
SYNC_FLAGS = os.O_SYNC | os.O_DSYNC
# Flags that must not reach the backing file: durability is modelled here, never asked of the disk;
# alignment is the kernel's business on the mount side, not ours on the backing side.
STRIP_FLAGS = SYNC_FLAGS | os.O_APPEND | getattr(os, 'O_DIRECT', 0)
COUNTED = ('write', 'truncate', 'fsync', 'fdatasync', 'fsyncdir', 'create', 'mknod', 'mkdir', 'symlink',
           'link', 'rename', 'unlink', 'rmdir')


def emit(event, **fields):
    sys.stdout.write(json.dumps({'event': event, **fields}) + '\n')
    sys.stdout.flush()


class PowerCutFs:
    # Operations on a file unlinked while open arrive without a path (with the hard_remove option).
    flag_nullpath_ok = 1
    use_ns = True

    def __init__(self, base, cut_after, op_log):
        self.base = os.path.abspath(base)
        self.data = os.path.join(self.base, 'data')
        self.store = os.path.join(self.base, 'store')
        self.cut_after = cut_after
        self.op_log = open(op_log, 'a', buffering=1) if op_log else None
        self.mutex = threading.RLock()
        self.cut = False
        self.ops = 0
        self.counts = {k: 0 for k in COUNTED}
        # inode -> 'd' | 'f' | 'l' | 'o' (fifo, socket, device)
        self.kind = {}
        # directory inode -> {name: inode}: its entries as of its last fsync (or the mount)
        self.durable = {}
        # inode -> how many durable entries name it
        self.refs = {}
        # file inodes whose durable contents differ from the backing file: kept in store/c-<inode>
        self.dirty = set()
        # inodes kept alive in store/g-<inode> because a durable entry still names them
        self.graveyard = set()
        # open descriptor -> [inode, writes are synchronous]
        self.handles = {}
        self.internal_errors = 0
        shutil.rmtree(self.store, ignore_errors=True)
        os.makedirs(self.store)
        os.makedirs(self.data, exist_ok=True)
        self.root = os.lstat(self.data).st_ino
        self._scan(self.data)

    # ---- the model ----

    def _scan(self, d):
        ino = os.lstat(d).st_ino
        self.kind[ino] = 'd'
        entries = {}
        with os.scandir(d) as it:
            for e in it:
                st = e.stat(follow_symlinks=False)
                entries[e.name] = st.st_ino
                if stat.S_ISDIR(st.st_mode):
                    self._scan(e.path)
                else:
                    self.kind[st.st_ino] = kind_of(st.st_mode)
        self._set_durable(ino, entries)

    def _set_durable(self, dino, entries):
        for child in self.durable.get(dino, {}).values():
            self.refs[child] -= 1
        self.durable[dino] = entries
        for child in entries.values():
            self.refs[child] = self.refs.get(child, 0) + 1

    def _copy(self, ino):
        return os.path.join(self.store, 'c-%d' % ino)

    def _grave(self, ino):
        return os.path.join(self.store, 'g-%d' % ino)

    def _born(self, ino, kind):
        """A new inode: whatever was known of an inode of that number before is gone."""
        self._forget(ino)
        self.kind[ino] = kind
        if kind == 'd':
            self.durable[ino] = {}
        elif kind == 'f':
            # Never synced: its durable contents are none.
            open(self._copy(ino), 'wb').close()
            self.dirty.add(ino)

    def _forget(self, ino):
        if ino in self.dirty:
            self.dirty.discard(ino)
            os.unlink(self._copy(ino))
        if ino in self.durable:
            self._set_durable(ino, {})
            del self.durable[ino]
        self.kind.pop(ino, None)

    def _before_change(self, ino, path=None):
        """Copy-on-first-write: keep the durable contents before the backing file changes."""
        if ino in self.dirty or self.kind.get(ino) != 'f':
            return
        src = path if path is not None else self._path_of_clean(ino)
        shutil.copyfile(src, self._copy(ino))
        self.dirty.add(ino)

    def _path_of_clean(self, ino):
        for fd, (h_ino, _) in self.handles.items():
            if h_ino == ino:
                return '/proc/self/fd/%d' % fd
        if ino in self.graveyard:
            return self._grave(ino)
        found = self._find(ino)
        if found is None:
            raise RuntimeError('inode %d has no name and no open descriptor' % ino)
        return found

    def _find(self, ino):
        for d, dirs, files in os.walk(self.data):
            for n in dirs + files:
                p = os.path.join(d, n)
                if os.lstat(p).st_ino == ino:
                    return p
        return None

    def _synced(self, ino):
        if ino in self.dirty:
            self.dirty.discard(ino)
            os.unlink(self._copy(ino))

    def _removing(self, p):
        """`p` (a backing path) is about to lose its name. Returns (moved, gone): `moved` if it was moved
        into the graveyard (a directory a durable entry still names: nothing left to remove), `gone` the
        inode to forget once the name is removed (its last name, nothing keeps it)."""
        st = os.lstat(p)
        ino = st.st_ino
        is_dir = stat.S_ISDIR(st.st_mode)
        if self.refs.get(ino, 0) > 0 and ino not in self.graveyard:
            self.graveyard.add(ino)
            if is_dir:
                os.rename(p, self._grave(ino))
                return True, None
            os.link(p, self._grave(ino), follow_symlinks=False)
            return False, None
        last = is_dir or st.st_nlink == 1
        if last and ino not in self.graveyard and not any(h[0] == ino for h in self.handles.values()):
            return False, ino
        return False, None

    def _collect(self):
        """After a directory fsync: inodes kept only for durable entries that no longer name them."""
        for ino in [i for i in self.graveyard if self.refs.get(i, 0) == 0]:
            g = self._grave(ino)
            self.graveyard.discard(ino)
            if os.path.isdir(g) and not os.path.islink(g):
                self._set_durable(ino, {})
                shutil.rmtree(g)
                self._forget(ino)
            else:
                nlink = os.lstat(g).st_nlink
                os.unlink(g)
                if nlink == 1 and not any(h[0] == ino for h in self.handles.values()):
                    self._forget(ino)

    def _count(self, kind, path):
        self.ops += 1
        self.counts[kind] += 1
        if self.op_log:
            self.op_log.write('%d %s %s\n' % (self.ops, kind, path))
        if self.cut_after is not None and self.ops >= self.cut_after:
            self.power_off('after op %d (%s %s)' % (self.ops, kind, path))

    def power_off(self, why):
        with self.mutex:
            if self.cut:
                return
            self.cut = True
            emit('cut', op=self.ops, why=why)

    # ---- materialising the durable state ----

    def materialise(self):
        """Replaces BASE/data by the durable state (after a cut, once unmounted)."""
        paths = {}
        for top in (self.data, self.store):
            for d, dirs, files in os.walk(top):
                for n in dirs + files:
                    p = os.path.join(d, n)
                    paths.setdefault(os.lstat(p).st_ino, p)
        for fd, (ino, _) in self.handles.items():
            paths.setdefault(ino, '/proc/self/fd/%d' % fd)
        out = self.data + '.durable'
        shutil.rmtree(out, ignore_errors=True)
        os.mkdir(out)
        made = {}

        def build(dino, target):
            for name, ino in sorted(self.durable.get(dino, {}).items()):
                dst = os.path.join(target, name)
                kind = self.kind.get(ino)
                if kind == 'd':
                    os.mkdir(dst)
                    build(ino, dst)
                elif ino in made:
                    os.link(made[ino], dst, follow_symlinks=False)
                elif kind == 'f' and ino in self.dirty:
                    os.link(self._copy(ino), dst)
                    made[ino] = dst
                else:
                    src = paths.get(ino)
                    if src is None:
                        raise RuntimeError('durable entry %s names inode %d, which is gone' % (dst, ino))
                    if src.startswith('/proc/self/fd/'):
                        shutil.copyfile(src, dst)
                    else:
                        os.link(src, dst, follow_symlinks=False)
                    made[ino] = dst

        build(self.root, out)
        lost = self.data + '.lost'
        os.rename(self.data, lost)
        os.rename(out, self.data)
        shutil.rmtree(lost)
        shutil.rmtree(self.store)

    # ---- FUSE operations ----

    def __call__(self, op, *args):
        with self.mutex:
            if self.cut and op not in ('destroy', 'release', 'releasedir', 'flush'):
                raise EIO
            try:
                return getattr(self, op)(*args)
            except OSError:
                raise
            except Exception as e:
                # A bug of the model, never the caller's error: say so loudly, and fail the exit.
                self.internal_errors += 1
                emit('internal-error', op=op, error=repr(e))
                raise

    def _p(self, path):
        return self.data + path

    def init(self, path):
        emit('ready')

    def destroy(self, path):
        pass

    def getattr(self, path, fh=None):
        st = os.fstat(fh) if path is None else os.lstat(self._p(path))
        return {k: getattr(st, k) for k in ('st_mode', 'st_ino', 'st_nlink', 'st_uid', 'st_gid', 'st_size',
                                            'st_blocks', 'st_blksize', 'st_rdev')} | {
            'st_atime': st.st_atime_ns, 'st_mtime': st.st_mtime_ns, 'st_ctime': st.st_ctime_ns}

    def access(self, path, mode):
        if not os.access(self._p(path), mode, follow_symlinks=False):
            raise fusepy.FuseOSError(errno.EACCES)

    def readlink(self, path):
        return os.readlink(self._p(path))

    def statfs(self, path):
        sv = os.statvfs(self.data)
        return {k: getattr(sv, k) for k in ('f_bsize', 'f_frsize', 'f_blocks', 'f_bfree', 'f_bavail',
                                            'f_files', 'f_ffree', 'f_favail', 'f_flag', 'f_namemax')}

    def opendir(self, path):
        return 0

    def readdir(self, path, fh):
        return ['.', '..'] + os.listdir(self._p(path))

    def releasedir(self, path, fh):
        return 0

    def chmod(self, path, mode):
        os.chmod(self._p(path), mode)

    def chown(self, path, uid, gid):
        os.chown(self._p(path), uid, gid, follow_symlinks=False)

    def utimens(self, path, times=None):
        if times:
            os.utime(self._p(path), ns=times, follow_symlinks=False)
        else:
            os.utime(self._p(path), follow_symlinks=False)

    def open(self, path, flags):
        p = self._p(path)
        ino = os.lstat(p).st_ino
        if flags & os.O_TRUNC:
            self._before_change(ino, p)
        fd = os.open(p, flags & ~STRIP_FLAGS)
        self.handles[fd] = [ino, bool(flags & SYNC_FLAGS)]
        if flags & os.O_TRUNC:
            self._count('truncate', path)
        return fd

    def create(self, path, mode, fi=None):
        p = self._p(path)
        # Only called when the name does not exist (O_CREAT on an existing file is an open).
        fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_RDWR, mode)
        ino = os.fstat(fd).st_ino
        self._born(ino, 'f')
        self.handles[fd] = [ino, False]
        self._count('create', path)
        return fd

    def read(self, path, size, offset, fh):
        return os.pread(fh, size, offset)

    def write(self, path, data, offset, fh):
        ino, sync = self.handles[fh]
        self._before_change(ino)
        n = os.pwrite(fh, data, offset)
        if sync and ino in self.dirty:
            # O_SYNC/O_DSYNC: this write's bytes are durable (not the file's other unsynced changes).
            cfd = os.open(self._copy(ino), os.O_WRONLY)
            try:
                os.pwrite(cfd, data[:n], offset)
            finally:
                os.close(cfd)
        self._count('write', path if path is not None else '<unlinked>')
        return n

    def truncate(self, path, length, fh=None):
        if fh is not None:
            self._before_change(self.handles[fh][0])
            os.ftruncate(fh, length)
        else:
            self._before_change(os.lstat(self._p(path)).st_ino, self._p(path))
            os.truncate(self._p(path), length)
        self._count('truncate', path if path is not None else '<unlinked>')

    def flush(self, path, fh):
        return 0

    def release(self, path, fh):
        ino = self.handles.pop(fh)[0]
        nlink = os.fstat(fh).st_nlink
        os.close(fh)
        if nlink == 0 and ino not in self.graveyard and not any(h[0] == ino for h in self.handles.values()):
            self._forget(ino)  # the last of an inode unlinked while open
        return 0

    def fsync(self, path, datasync, fh):
        self._synced(self.handles[fh][0])
        self._count('fdatasync' if datasync else 'fsync', path if path is not None else '<unlinked>')
        return 0

    def fsyncdir(self, path, datasync, fh):
        p = self._p(path) if path is not None else None
        if p is None:
            raise fusepy.FuseOSError(errno.EIO)
        dino = os.lstat(p).st_ino
        entries = {}
        with os.scandir(p) as it:
            for e in it:
                entries[e.name] = e.inode()
        self._set_durable(dino, entries)
        self._collect()
        self._count('fsyncdir', path)
        return 0

    def mknod(self, path, mode, dev):
        os.mknod(self._p(path), mode, dev)
        self._born(os.lstat(self._p(path)).st_ino, kind_of(mode))
        self._count('mknod', path)

    def mkdir(self, path, mode):
        os.mkdir(self._p(path), mode)
        self._born(os.lstat(self._p(path)).st_ino, 'd')
        self._count('mkdir', path)

    def symlink(self, target, source):
        # fusepy passes (link name, what it points to)
        os.symlink(source, self._p(target))
        self._born(os.lstat(self._p(target)).st_ino, 'l')
        self._count('symlink', target)

    def link(self, target, source):
        # fusepy passes (new name, existing name)
        os.link(self._p(source), self._p(target), follow_symlinks=False)
        self._count('link', target)

    def unlink(self, path):
        p = self._p(path)
        _, gone = self._removing(p)
        os.unlink(p)
        if gone is not None:
            self._forget(gone)
        self._count('unlink', path)

    def rmdir(self, path):
        p = self._p(path)
        if os.listdir(p):
            raise fusepy.FuseOSError(errno.ENOTEMPTY)
        moved, gone = self._removing(p)
        if not moved:
            os.rmdir(p)
        if gone is not None:
            self._forget(gone)
        self._count('rmdir', path)

    def rename(self, old, new):
        src, dst = self._p(old), self._p(new)
        gone = None
        try:
            victim = os.lstat(dst)
        except FileNotFoundError:
            victim = None
        if victim is not None and victim.st_ino != os.lstat(src).st_ino:
            if stat.S_ISDIR(victim.st_mode) and os.listdir(dst):
                raise fusepy.FuseOSError(errno.ENOTEMPTY)
            if stat.S_ISDIR(victim.st_mode) != stat.S_ISDIR(os.lstat(src).st_mode):
                raise fusepy.FuseOSError(errno.EISDIR if stat.S_ISDIR(victim.st_mode) else errno.ENOTDIR)
            moved, gone = self._removing(dst)
            if not moved and stat.S_ISDIR(victim.st_mode):
                os.rmdir(dst)
        os.rename(src, dst)
        if gone is not None:
            self._forget(gone)
        self._count('rename', '%s -> %s' % (old, new))


def kind_of(mode):
    if stat.S_ISDIR(mode):
        return 'd'
    if stat.S_ISREG(mode):
        return 'f'
    if stat.S_ISLNK(mode):
        return 'l'
    return 'o'


def main():
    args = sys.argv[1:]
    cut_after = None
    op_log = None
    pos = []
    while args:
        a = args.pop(0)
        if a == '--cut-after':
            cut_after = int(args.pop(0))
        elif a == '--op-log':
            op_log = args.pop(0)
        else:
            pos.append(a)
    if len(pos) != 2:
        sys.stderr.write('usage: powercut_fs.py BASE MOUNTPOINT [--cut-after N] [--op-log FILE]\n')
        sys.exit(2)
    base, mountpoint = pos
    fs = PowerCutFs(base, cut_after, op_log)

    # SIGUSR1 cuts the power. libfuse's threads would never run a Python handler: block the signal in
    # every thread and wait for it in one of ours.
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])

    def wait_for_cut():
        while True:
            signal.sigwait([signal.SIGUSR1])
            fs.power_off('SIGUSR1')

    threading.Thread(target=wait_for_cut, daemon=True).start()
    # Single-threaded (the model is one lock anyway); hard_remove so that an unlinked open file is
    # unlinked, not renamed to .fuse_hidden*; use_ino so that hard links show one inode, as the code
    # under test checks; big_writes so that writes come in 128 KiB pieces rather than 4 KiB.
    fusepy.FUSE(fs, mountpoint, foreground=True, nothreads=True, hard_remove=True, use_ino=True,
                big_writes=True, max_write=131072, fsname='powercut',
                subtype='powercut')
    if fs.cut:
        fs.materialise()
    emit('exit', ops=fs.ops, counts=fs.counts, cut=fs.cut, internalErrors=fs.internal_errors)
    sys.exit(1 if fs.internal_errors else 0)


if __name__ == '__main__':
    main()

# Copyright: tradeops contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Host-side file system work that another user cannot redirect. Standard library only.

Root works in directories that the application's own user can write (``shared/``, its data and cache
directories): between a check and an action that user can swap a file or a directory for a symbolic
link. Everything here works on file descriptors instead of paths:

- ``Dir.open(path)`` opens a directory component by component from ``/`` with ``O_NOFOLLOW``; a symbolic
  link on the way is followed only where it sits in a directory that only root can write (owned by root,
  no group or other write bit): root's own (``/var/run -> /run``), never one another user planted;
- the methods of a ``Dir`` act on names inside it (the ``*at`` system calls): a name that is, or becomes,
  a symbolic link is never followed;
- ``Dir.walk()`` walks a tree bottom-up on directory descriptors (``os.fwalk``): a directory swapped for a
  link mid-walk is not entered;
- ``unpack_tar`` reads a tar stream with the checks a restore makes and, given a fresh ``Dir``, writes it
  there; ``merge`` then moves that finished tree into the target, rename by rename; ``pack_tree`` writes
  one (a backup) reading every file from a descriptor opened without following a link.

Shipped to hosts as ``ansible.module_utils`` and as ``tradeops_agent/safefs.py`` in the ops agent wheel
(``scripts/build_agent.py``). On Windows (no ``O_NOFOLLOW``, no ``dir_fd``: the ops agent's backup and
cleanup run there too) the same calls work on paths checked with ``lstat``, as before.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import shutil
import stat
import tarfile
from collections.abc import Callable, Iterator
from typing import IO

try:
    import grp
    import pwd
except ImportError:  # Windows
    grp = pwd = None  # type: ignore[assignment]

FD_SAFE = hasattr(os, "O_NOFOLLOW") and os.open in os.supports_dir_fd and hasattr(os, "fwalk")
NOFOLLOW = getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0) | getattr(os, "O_BINARY", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | NOFOLLOW
MAX_LINKS = 40  # symbolic links followed in one path, as the kernel's limit
CHUNK = 1 << 20
DIR, FILE, SYMLINK = "directory", "file", "symbolic link"


class UnsafePath(OSError):
    """A path that would make root follow a link another user controls, or leave its target: nothing done."""


class UnsafeMember(UnsafePath):
    """An archive member that a restore refuses (``member``: its name, ``why``: the reason)."""

    def __init__(self, member: str, why: str) -> None:
        super().__init__(f"unsafe member {member!r} ({why})")
        self.member, self.why = member, why


def _single(name: str) -> str:
    if not name or name in (".", "..") or "/" in name or "\0" in name:
        raise UnsafePath(f"{name!r} is not a plain file name")
    return name


class Dir:
    """An open directory; names given to its methods are single components inside it."""

    def __init__(self, path: str, fd: int | None, owned: bool = True) -> None:
        self.path, self.fd, self.owned = path, fd, owned

    @classmethod
    def open(cls, path: str, create: int | None = None) -> Dir:
        """Open the directory ``path`` (made with mode ``create``, parents too, when given and missing)."""
        path = os.path.abspath(path)
        if not FD_SAFE:
            if create is not None:
                os.makedirs(path, mode=create, exist_ok=True)
            if not stat.S_ISDIR(os.lstat(path).st_mode):
                raise UnsafePath(f"{path} is not a directory (or is a link)")
            return cls(path, None)
        todo = [p for p in path.split("/") if p]
        done: list[str] = []
        fd = os.open("/", _DIR_FLAGS)
        links = 0
        try:
            while todo:
                name = todo.pop(0)
                try:
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except FileNotFoundError:
                    if create is None:
                        raise
                    with contextlib.suppress(FileExistsError):
                        os.mkdir(name, create, dir_fd=fd)
                    nfd = os.open(name, _DIR_FLAGS, dir_fd=fd)
                except OSError as exc:
                    if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                        raise
                    here = "/" + "/".join(done)
                    shown = os.path.join(here, name)
                    if not stat.S_ISLNK(os.stat(name, dir_fd=fd, follow_symlinks=False).st_mode):
                        raise UnsafePath(f"{path}: {shown} is not a directory") from None
                    holder = os.fstat(fd)
                    if holder.st_uid != 0 or holder.st_mode & 0o022:
                        raise UnsafePath(f"{path}: {shown} is a symbolic link in a directory that a user other than "
                                         "root can write; it is not followed (give the real path)") from None
                    links += 1
                    if links > MAX_LINKS:
                        raise UnsafePath(f"{path}: too many levels of symbolic links") from None
                    target = os.path.normpath(os.path.join(here, os.readlink(name, dir_fd=fd)))
                    todo = [p for p in target.split("/") if p] + todo
                    done = []
                    os.close(fd)
                    fd = -1
                    fd = os.open("/", _DIR_FLAGS)
                    continue
                os.close(fd)
                fd = nfd
                done.append(name)
        except BaseException:
            if fd >= 0:
                os.close(fd)
            raise
        return cls(path, fd)

    def close(self) -> None:
        if self.fd is not None and self.fd >= 0 and self.owned:
            os.close(self.fd)
            self.fd = -1  # any later use fails (EBADF) rather than falling back to paths

    def __enter__(self) -> Dir:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def at(self, name: str) -> str:
        """``name`` as the ``*at`` call wants it: relative to the descriptor, or a path (no descriptor)."""
        return _single(name) if self.fd is not None else os.path.join(self.path, _single(name))

    def lstat(self, name: str | None = None) -> os.stat_result:
        """The entry ``name`` itself (a link is not followed), or the directory (no name)."""
        if name is None:
            return os.fstat(self.fd) if self.fd is not None else os.lstat(self.path)
        return os.stat(self.at(name), dir_fd=self.fd, follow_symlinks=False)

    def listdir(self) -> list[str]:
        return os.listdir(self.fd if self.fd is not None else self.path)

    def sub(self, name: str, create: int | None = None) -> Dir:
        """The subdirectory ``name`` (made with mode ``create`` when given and missing); a link is refused."""
        full = os.path.join(self.path, _single(name))
        if self.fd is None:
            if create is not None and not os.path.lexists(full):
                os.mkdir(full, create)
            if not stat.S_ISDIR(os.lstat(full).st_mode):
                raise UnsafePath(f"{full} is a symbolic link or not a directory: not followed")
            return Dir(full, None)
        try:
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except FileNotFoundError:
            if create is None:
                raise
            os.mkdir(name, create, dir_fd=self.fd)
            fd = os.open(name, _DIR_FLAGS, dir_fd=self.fd)
        except OSError as exc:
            if exc.errno in (errno.ELOOP, errno.ENOTDIR):
                raise UnsafePath(f"{full} is a symbolic link or not a directory: not followed") from None
            raise
        return Dir(full, fd)

    def open_file(self, name: str, flags: int, mode: int = 0o600) -> int:
        """os.open of ``name`` with O_NOFOLLOW (a link there: ELOOP, never followed)."""
        return os.open(self.at(name), flags | NOFOLLOW, mode, dir_fd=self.fd)

    def mkdir(self, name: str, mode: int = 0o700) -> None:
        os.mkdir(self.at(name), mode, dir_fd=self.fd)

    def symlink(self, target: str, name: str) -> None:
        os.symlink(target, self.at(name), dir_fd=self.fd)

    def link(self, name: str, other: Dir, new: str) -> None:
        """A hard link ``other/new`` to ``name`` (itself, never what a link points to)."""
        os.link(self.at(name), other.at(new), src_dir_fd=self.fd, dst_dir_fd=other.fd, follow_symlinks=False)

    def rename(self, name: str, other: Dir, new: str) -> None:
        """rename(2): what ``other/new`` is (a link included) is replaced, never followed."""
        os.rename(self.at(name), other.at(new), src_dir_fd=self.fd, dst_dir_fd=other.fd)

    def unlink(self, name: str) -> None:
        os.unlink(self.at(name), dir_fd=self.fd)

    def rmdir(self, name: str) -> None:
        os.rmdir(self.at(name), dir_fd=self.fd)

    def rmtree(self, name: str) -> None:
        """Remove the tree ``name`` (shutil's descriptor-based removal: links inside are removed, not followed)."""
        if self.fd is None:
            shutil.rmtree(self.at(name), ignore_errors=True)
        else:
            shutil.rmtree(name, ignore_errors=True, dir_fd=self.fd)

    def chown(self, name: str, uid: int, gid: int) -> None:
        """Owner of ``name`` itself (a link's own owner)."""
        if hasattr(os, "chown"):
            os.chown(self.at(name), uid, gid, dir_fd=self.fd, follow_symlinks=False)

    def set_meta(self, uid: int | None, gid: int | None, mode: int | None, mtime: float | None = None) -> None:
        """Owner, mode and times of the directory itself, on its descriptor."""
        set_meta(self.fd, self.path, uid, gid, mode, mtime)

    @contextlib.contextmanager
    def fresh(self, prefix: str) -> Iterator[Dir]:
        """A new private directory (0700) in this one, removed with what is left in it afterwards."""
        name = f"{prefix}{secrets.token_hex(6)}"
        self.mkdir(name, 0o700)
        try:
            with self.sub(name) as made:
                st = made.lstat()
                if hasattr(os, "geteuid") and (st.st_uid != os.geteuid() or stat.S_IMODE(st.st_mode) & 0o077):
                    raise UnsafePath(f"{made.path} was replaced by another user's directory as it was made")
                yield made
        finally:
            self.rmtree(name)

    def walk(self, topdown: bool = False) -> Iterator[tuple[str, list[str], list[str], Dir]]:
        """``(path, dirs, nondirs, Dir)`` of every directory of the tree, deepest first (``topdown``: as
        os.walk, the dirs list may be pruned); a link to a directory is among the nondirs; a directory
        swapped for a link while walking is skipped."""
        if self.fd is None:
            for base, dirs, files in os.walk(self.path, topdown=topdown):
                yield base, dirs, files, Dir(base, None)
            return
        for base, dirs, files, fd in os.fwalk(".", topdown=topdown, follow_symlinks=False, dir_fd=self.fd):
            path = os.path.normpath(os.path.join(self.path, base))
            yield path, dirs, files, Dir(path, fd, owned=False)


def set_meta(fd: int | None, path: str, uid: int | None, gid: int | None, mode: int | None,
             mtime: float | None = None) -> None:
    """Owner (when given and running as root), mode and modification time of an open file or directory; by
    path only where there is no descriptor (Windows)."""
    if fd is not None and hasattr(os, "fchown"):
        if uid is not None and gid is not None and os.geteuid() == 0:
            os.fchown(fd, uid, gid)
        if mode is not None:
            os.fchmod(fd, mode)
        if mtime is not None:
            os.utime(fd, (mtime, mtime))
        return
    if mode is not None:
        os.chmod(path, mode)
    if mtime is not None:
        os.utime(path, (mtime, mtime))


# --------------------------------------------------------------------------- archives


def _owner(member: tarfile.TarInfo) -> tuple[int, int]:
    """uid and gid of a member: its user and group names where they exist on this host, else its ids (as
    tarfile does)."""
    uid, gid = member.uid, member.gid
    with contextlib.suppress(KeyError, AttributeError):
        uid = pwd.getpwnam(member.uname).pw_uid if member.uname else uid
    with contextlib.suppress(KeyError, AttributeError):
        gid = grp.getgrnam(member.gname).gr_gid if member.gname else gid
    return uid, gid


def _inside(start: list[str], target: str, links: dict[str, str]) -> bool:
    """Whether the link target ``target``, read from the directory ``start`` (components below the root),
    stays inside the root when every link of the archive on the way is followed, as the kernel would."""
    stack, todo, hops = list(start), target.split("/"), 0
    while todo:
        part = todo.pop(0)
        if part in ("", "."):
            continue
        if part == "..":
            if not stack:
                return False
            stack.pop()
            continue
        stack.append(part)
        inner = links.get("/".join(stack))
        if inner is not None:
            hops += 1
            if hops > MAX_LINKS or inner.startswith("/"):
                return False
            stack.pop()
            todo = inner.split("/") + todo
    return True


def _check_member(member: tarfile.TarInfo, kinds: dict[str, str], links: dict[str, str]) -> list[str]:
    """The member's path components below the root, or UnsafeMember: only files, directories and links;
    relative names without '..'; never below a file or a link of the archive; links that stay inside."""
    name = member.name
    if not (member.isfile() or member.isdir() or member.issym() or member.islnk()):
        raise UnsafeMember(name, "a device, FIFO or other special file")
    if "\0" in name or name.startswith("/") or (os.name == "nt" and name[1:2] == ":"):
        raise UnsafeMember(name, "an absolute name")
    parts = [p for p in name.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeMember(name, "'..' in its name")
    if not parts and not member.isdir():
        raise UnsafeMember(name, "no name")
    for depth in range(1, len(parts)):
        above = kinds.get("/".join(parts[:depth]))
        if above not in (None, DIR):
            raise UnsafeMember(name, f"it goes through {'/'.join(parts[:depth])!r}, a {above} of the archive")
    existing = kinds.get("/".join(parts))
    if parts and existing is not None and (existing == DIR) != member.isdir():
        raise UnsafeMember(name, f"it replaces a {existing} of the archive")
    if member.issym():
        target = member.linkname
        if not target or "\0" in target or target.startswith("/"):
            raise UnsafeMember(name, f"a link to the absolute or empty path {target!r}")
        if not _inside(parts[:-1], target, links):
            raise UnsafeMember(name, f"a link to {target!r}, outside the target")
    if member.islnk():
        source = [p for p in member.linkname.split("/") if p not in ("", ".")]
        if ".." in source or member.linkname.startswith("/") or kinds.get("/".join(source)) != FILE:
            raise UnsafeMember(name, f"a hard link to {member.linkname!r}, not a regular file of the archive")
    return parts


class _Cursor:
    """The open chain of directories from the root of an unpacking to the directory being written."""

    def __init__(self, root: Dir) -> None:
        self.root, self.names, self.chain = root, [], [root]

    def at(self, names: list[str], kinds: dict[str, str], prefix: str = "") -> Dir:
        keep = 0
        while keep < min(len(names), len(self.names)) and names[keep] == self.names[keep]:
            keep += 1
        for opened in self.chain[keep + 1:]:
            opened.close()
        self.chain, self.names = self.chain[:keep + 1], self.names[:keep]
        for name in names[keep:]:
            self.chain.append(self.chain[-1].sub(name, create=0o777))
            self.names.append(name)
            kinds.setdefault("/".join(self.names), DIR)
        return self.chain[-1]

    def close(self) -> None:
        for opened in self.chain[1:]:
            opened.close()
        self.chain, self.names = [self.root], []


def unpack_tar(stream: IO[bytes], into: Dir | None = None) -> int:
    """Read a tar.gz stream member by member with the checks a restore makes (``_check_member``, then every
    link of the archive once more at the end: a chain of links that leaves the root is refused) and, with
    ``into`` (a fresh, private directory), write it there: names opened without following links, set-user and
    set-group bits dropped, owners by name as tarfile does (when root), directory modes set last. Returns the
    number of members; UnsafeMember for the first member refused (what was written into ``into`` is then the
    caller's to discard)."""
    kinds: dict[str, str] = {"": DIR}
    links: dict[str, str] = {}
    dirs: list[tuple[list[str], tarfile.TarInfo]] = []
    cursor = _Cursor(into) if into is not None else None
    count = 0
    try:
        with tarfile.open(fileobj=stream, mode="r|gz") as tar:  # type: ignore[call-overload]
            for member in tar:
                count += 1
                parts = _check_member(member, kinds, links)
                rel = "/".join(parts)
                if cursor is not None and parts:
                    _write_member(tar, member, parts, cursor, kinds)
                for depth in range(1, len(parts)):
                    kinds.setdefault("/".join(parts[:depth]), DIR)
                links.pop(rel, None)
                if member.isdir():
                    kinds[rel] = DIR
                    dirs.append((parts, member))
                elif member.issym():
                    kinds[rel] = SYMLINK
                    links[rel] = member.linkname
                else:
                    kinds[rel] = FILE
        for rel, target in links.items():
            if not _inside(rel.split("/")[:-1], target, links):
                raise UnsafeMember(rel, f"a link to {target!r}: with the archive's other links it leaves the target")
        if cursor is not None:  # deepest first: a directory's time is set after its entries are made
            for parts, member in sorted(dirs, key=lambda d: -len(d[0])):
                if parts:
                    uid, gid = _owner(member)
                    cursor.at(parts, kinds).set_meta(uid, gid, member.mode & 0o7777 & ~0o6000, member.mtime)
    finally:
        if cursor is not None:
            cursor.close()
    return count


def _write_member(tar: tarfile.TarFile, member: tarfile.TarInfo, parts: list[str], cursor: _Cursor,
                  kinds: dict[str, str]) -> None:
    parent = cursor.at(parts[:-1], kinds)
    name = parts[-1]
    existing = kinds.get("/".join(parts))
    if member.isdir():
        if existing is None:
            parent.mkdir(name, 0o700)
        return
    if existing is not None:  # a later member of the same name replaces an earlier file or link
        parent.unlink(name)
    uid, gid = _owner(member)
    if member.issym():
        parent.symlink(member.linkname, name)
        if os.name != "nt" and os.geteuid() == 0:
            parent.chown(name, uid, gid)
        return
    if member.islnk():  # its source is a regular file of the archive (_check_member)
        source = [p for p in member.linkname.split("/") if p not in ("", ".")]
        src = _Cursor(cursor.root)
        try:
            src.at(source[:-1], {}).link(source[-1], parent, name)
        finally:
            src.close()
        return
    fd = parent.open_file(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        data = tar.extractfile(member)
        if data is not None:
            shutil.copyfileobj(data, out, CHUNK)
        out.flush()
        set_meta(out.fileno(), os.path.join(parent.path, name), uid, gid, member.mode & 0o7777 & ~0o6000,
                 member.mtime)


def _tarinfo(st: os.stat_result, rel: str, inodes: dict[tuple[int, int], str], linkname: str = ""
             ) -> tarfile.TarInfo:
    """The member for ``rel`` from a stat result taken on what is archived (as tarfile.gettarinfo: owner
    names, a second name of a regular file as a hard link)."""
    info = tarfile.TarInfo(rel)
    info.mode, info.uid, info.gid, info.mtime = stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid, st.st_mtime
    with contextlib.suppress(KeyError, AttributeError):
        info.uname = pwd.getpwuid(st.st_uid).pw_name
    with contextlib.suppress(KeyError, AttributeError):
        info.gname = grp.getgrgid(st.st_gid).gr_name
    if stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
    elif stat.S_ISLNK(st.st_mode):
        info.type, info.linkname = tarfile.SYMTYPE, linkname
    elif st.st_nlink > 1 and (st.st_dev, st.st_ino) in inodes:
        info.type, info.linkname = tarfile.LNKTYPE, inodes[(st.st_dev, st.st_ino)]
    else:
        inodes[(st.st_dev, st.st_ino)] = rel
        info.size = st.st_size
    return info


def _pack_entry(tar: tarfile.TarFile, here: Dir, name: str, rel: str, inodes: dict[tuple[int, int], str]) -> bool:
    """Add ``name`` of ``here`` as ``rel``: a regular file read from a descriptor opened with O_NOFOLLOW and
    described by fstat of that descriptor, a link as a link, a directory as one. False when it is skipped:
    gone, swapped for something else since it was listed, or a special file (FIFO, socket, device)."""
    try:
        st = here.lstat(name)
        if stat.S_ISREG(st.st_mode):
            fd = here.open_file(name, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))  # a FIFO swapped in: no wait
            with os.fdopen(fd, "rb") as handle:
                st = os.fstat(fd)
                if not stat.S_ISREG(st.st_mode):
                    return False
                info = _tarinfo(st, rel, inodes)
                tar.addfile(info, handle if info.type == tarfile.REGTYPE else None)
            return True
        if stat.S_ISLNK(st.st_mode):
            tar.addfile(_tarinfo(st, rel, inodes, os.readlink(here.at(name), dir_fd=here.fd)))
            return True
        if stat.S_ISDIR(st.st_mode):
            tar.addfile(_tarinfo(st, rel, inodes))
            return True
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ELOOP, errno.ENXIO, errno.ENOTDIR):
            raise
    return False


def pack_tree(tar: tarfile.TarFile, path: str, excluded: Callable[[str, str], bool]) -> int:
    """Add the directory (or the one file) ``path`` to ``tar`` without following a link: the tree is walked
    top-down on directory descriptors and every entry is opened or read relative to its directory, so a file
    or a directory that another user swaps for a link while it is archived is skipped, never read through.
    ``excluded(rel, full)`` prunes entries (and whole directories). Returns the number of members."""
    path = os.path.abspath(path)
    inodes: dict[tuple[int, int], str] = {}
    name = os.path.basename(path)
    with Dir.open(os.path.dirname(path)) as parent:
        mode = parent.lstat(name).st_mode
        if not stat.S_ISDIR(mode) and not (stat.S_ISLNK(mode) and os.path.isdir(path)):  # a file, or a link: itself
            return int(_pack_entry(tar, parent, name, name, inodes))
    members = 0
    with Dir.open(path) as root:  # a directory, or a link to one that only root can have made (Dir.open)
        for base, dirs, files, here in root.walk(topdown=True):
            above = os.path.relpath(base, path)
            dirs.sort()
            for entry in [*sorted(dirs), *sorted(files)]:
                rel, full = os.path.normpath(os.path.join(above, entry)), os.path.join(base, entry)
                if excluded(rel, full):
                    if entry in dirs:
                        dirs.remove(entry)
                    continue
                members += _pack_entry(tar, here, entry, rel, inodes)
    return members


def merge(src: Dir, dst: Dir, dry_run: bool = False) -> None:
    """Move every entry of ``src`` into ``dst`` with rename(2) between the two descriptors: a file or a link
    replaces what has its name in ``dst`` (a link there is replaced, never followed); a directory is moved in
    whole when ``dst`` has no directory of its name (a file or link there is replaced), else merged into it
    (opened without following links) and given the archived directory's owner, mode and time. What ``dst``
    holds beyond ``src`` stays. ``dry_run``: only the checks (a directory of ``dst`` where ``src`` has a
    file is refused), so that a merge that would stop half-way is refused before it starts."""
    for name in sorted(src.listdir()):
        mine = src.lstat(name)
        try:
            theirs: os.stat_result | None = dst.lstat(name)
        except FileNotFoundError:
            theirs = None
        if theirs is not None and stat.S_ISDIR(theirs.st_mode):
            if not stat.S_ISDIR(mine.st_mode):
                raise UnsafePath(f"{os.path.join(dst.path, name)} is a directory where the backup has a file; "
                                 "move it away and restore again")
            with src.sub(name) as inner, dst.sub(name) as target:
                merge(inner, target, dry_run)
                if not dry_run:
                    target.set_meta(mine.st_uid, mine.st_gid, stat.S_IMODE(mine.st_mode), mine.st_mtime)
            continue
        if dry_run:
            continue
        if theirs is not None and stat.S_ISDIR(mine.st_mode):
            dst.unlink(name)
        src.rename(name, dst, name)

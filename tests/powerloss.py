"""What a power loss leaves of a real process's writes: an strace replayed under POSIX's weakest
promise (red team 29).

A kill -9 never shows a missing fsync: the kernel's page cache outlives the process. A power
loss does not: only what an ``fsync`` made durable is there afterwards. In the spirit of ALICE
(Pillai et al., OSDI 2014) and Jepsen's LazyFS, a child runs real operations under
``strace -f -y -xx`` and this module replays the system calls it made on a model of the
filesystem that keeps two states of every inode:

* what the process saw (every ``write``, ``mkdir``, ``rename``, ``unlink``...), and
* what a power loss leaves: a file's bytes as of its last ``fsync``, a directory's entries as
  of *its* last ``fsync`` (a new name is durable only once its directory is synced, a new
  directory's entry only once its parent is). A rename stays atomic: once either directory
  it touched is synced, it is whole on both sides, and until then it is not there at all.

:meth:`Model.durable_states` gives the durable tree after every ``fsync`` (between two syncs
nothing more becomes durable: "everything unsynced lost" at each system call is one of these),
each with the acknowledgements made before it; :func:`materialise` writes one out as a
directory tree for the app to open. :meth:`Model.writeback_states` adds, bounded, the
states where the kernel wrote back some of the unsynced changes and not others (ALICE's
reordering within an fsync epoch): at each of those moments, each unsynced change written
back alone, and all of them but one (a file's data, a new or removed name, a rename).
Only not using an existing tool: LazyFS needs a FUSE
mount (and ``fusermount``), dm-flakey needs device-mapper; neither is on these machines, and
both lose *all* unsynced data at once, which this model gives too, at every fsync.
"""

from __future__ import annotations

import dataclasses
import os
import re
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Final

__all__ = [
    "ACK_PREFIX",
    "EXIT",
    "TRACED",
    "Call",
    "Model",
    "State",
    "Unit",
    "materialise",
    "parse",
    "snapshot",
]

#: What the child writes to /dev/null (a write strace records) the moment an operation has
#: returned: the acknowledgement, with the operation's label after it.
ACK_PREFIX: Final = b"ACK "

#: A call of no system's, put between two processes' traces: the first one's descriptors end.
EXIT: Final = "(exit)"

#: The name of the pseudo-call that marks where a sync that another thread's call
#: interrupted in the log began (``<unfinished ...>``).
BEGIN: Final = "(begin) "
_SYNCS: Final = frozenset({"fsync", "fdatasync", "syncfs"})

#: The system calls the model needs, for ``strace -e trace=``.
TRACED: Final = (
    "open,openat,creat,mkdir,mkdirat,rename,renameat,renameat2,unlink,unlinkat,rmdir,"
    "link,linkat,symlink,symlinkat,write,pwrite64,writev,pwritev,pwritev2,ftruncate,truncate,"
    "fsync,fdatasync,sync,syncfs,sync_file_range,close,dup,dup2,dup3,fcntl,lseek,"
    "copy_file_range,sendfile,fallocate"
)

_HEX = re.compile(rb"\\x([0-9a-f]{2})")
_CALL = re.compile(r"^(\d+)\s+(\w+)\((.*)\)\s+=\s+(.*)$")
_UNFINISHED = re.compile(r"^(\d+)\s+(\w+)\((.*) <unfinished \.\.\.>$")
_RESUMED = re.compile(r"^(\d+)\s+<\.\.\. (\w+) resumed>(.*)\)\s+=\s+(.*)$")
_FD = re.compile(r"^(-?\d+|AT_FDCWD)<(.*?)>(?:\(deleted\))?$")


def _unhex(text: str) -> bytes:
    return _HEX.sub(lambda m: bytes([int(m.group(1), 16)]), text.encode())


@dataclasses.dataclass(frozen=True)
class Arg:
    """One argument as strace showed it: a string, a descriptor with its path, or a word."""

    raw: str

    @property
    def string(self) -> bytes:
        assert self.raw.startswith('"') and self.raw.endswith('"'), self.raw
        return _unhex(self.raw[1:-1])

    @property
    def fd(self) -> tuple[int | None, bytes]:
        found = _FD.match(self.raw)
        assert found is not None, self.raw
        number = None if found.group(1) == "AT_FDCWD" else int(found.group(1))
        return number, _unhex(found.group(2))


@dataclasses.dataclass(frozen=True)
class Call:
    """A system call that succeeded: its name, its arguments and what it returned."""

    pid: int
    name: str
    args: tuple[Arg, ...]
    result: str
    cut: bool = False  # a string strace cut short (-s)


def parse(log: str) -> list[Call]:
    """The successful calls of an ``strace -f -qq -y -xx`` log, in the order they completed."""
    calls: list[Call] = []
    pending: dict[int, tuple[str, str]] = {}
    for line in log.splitlines():
        if (found := _UNFINISHED.match(line)) is not None:
            pid, name, text = int(found.group(1)), found.group(2), found.group(3)
            pending[pid] = (name, text)
            if name == "close":
                # The descriptor is free from the call's start (the kernel takes it out of
                # the table first): another thread's open may get its number before this
                # close is logged as done, and the close must not end that one.
                calls.append(Call(pid, name, (Arg(text),), "0"))
                pending[pid] = (f"{BEGIN}{name}", text)
            if name in _SYNCS:
                # What an fsync makes durable is what was there when it began: a change
                # another thread makes while it runs may miss it (a group commit's bug).
                calls.append(Call(pid, f"{BEGIN}{name}", (Arg(text.split(", ")[0]),), "0"))
            continue
        if (found := _RESUMED.match(line)) is not None:
            pid = int(found.group(1))
            name, head = pending.pop(pid)
            if name == f"{BEGIN}close":
                continue  # replayed where it began
            assert name == found.group(2), line
            text, result = head + found.group(3), found.group(4)
        elif (found := _CALL.match(line)) is not None:
            pid, name, text, result = (int(found.group(1)), *found.group(2, 3, 4))
        else:
            continue  # a signal, an exit
        if result.startswith("-1 ") or result.startswith("?"):
            continue  # failed: nothing changed
        cut = '"...' in text  # strace's -s: checked where the bytes matter (Model._write)
        args = tuple(Arg(part.removesuffix("...")) for part in text.split(", ")) if text else ()
        calls.append(Call(pid, name, args, result, cut))
    return calls


class Inode:
    """A file or a directory: what the process saw, and what a power loss leaves."""

    def __init__(self, directory: bool, data: bytes = b"", *, durable: bool = False) -> None:
        self.directory = directory
        self.data = bytearray(data)
        self.entries: dict[bytes, Inode] = {}
        self.synced_data = bytes(data) if durable else b""
        self.synced_entries: dict[bytes, Inode] = {}
        # The moment (`Model.seq`) each durable state is as of: a sync that began earlier and
        # ends later makes nothing newer durable, and never takes back what another made so.
        self.synced_data_at = -1
        self.synced_at: dict[bytes, int] = {}


@dataclasses.dataclass(frozen=True)
class State:
    """The durable tree at one moment: after the ``syncs``-th fsync or an acknowledgement,
    with the acknowledgements made by then (``acked``), and the call just made (``call``)."""

    syncs: int
    acked: tuple[str, ...]
    tree: dict[str, bytes | None]  # relative path -> bytes, or None for a directory
    call: str


@dataclasses.dataclass(eq=False)
class _Rename:
    source: Inode
    old: bytes
    target: Inode
    new: bytes
    inode: Inode
    seq: int = 0  # its place among the directory changes (`Model.unsynced`)


@dataclasses.dataclass(eq=False)
class _Entry:
    """A name added to (``inode``) or removed from (``None``) a directory, not synced yet."""

    directory: Inode
    name: bytes
    inode: Inode | None
    seq: int


@dataclasses.dataclass
class _Image:
    nodes: dict[Inode, tuple[bytes, dict[bytes, Inode]]]
    renames: list[_Rename]
    entries: list[_Entry]
    seq: int  # the moment it was taken (`Model.seq`)


@dataclasses.dataclass(eq=False)
class Unit:
    """One unsynced change the kernel may write back on its own (`Model.unsynced`)."""

    kind: str  # "data", "entry" (a name added or removed) or "rename"
    node: Inode  # the file; the directory; the inode renamed
    entry: _Entry | None = None
    rename: _Rename | None = None

    def describe(self) -> str:
        if self.rename is not None:
            return f"the rename to {os.fsdecode(self.rename.new)}"
        if self.entry is not None:
            added = "removed" if self.entry.inode is None else "added"
            return f"the name {os.fsdecode(self.entry.name)} {added}"
        return "a file's data"


def snapshot(base: Path) -> Inode:
    """The tree under ``base`` as it is on disk, taken as durable (it predates the trace)."""
    inodes: dict[int, Inode] = {}

    def load(path: Path) -> Inode:
        info = path.lstat()
        if info.st_ino in inodes:
            return inodes[info.st_ino]
        if stat.S_ISDIR(info.st_mode):
            node = Inode(True, durable=True)
            inodes[info.st_ino] = node
            for child in sorted(os.listdir(path)):
                node.entries[os.fsencode(child)] = load(path / child)
            node.synced_entries = dict(node.entries)
        else:
            node = Inode(False, path.read_bytes(), durable=True)
            inodes[info.st_ino] = node
        return node

    return load(base)


class Model:
    """The calls of one trace replayed on the tree under ``base`` (see the module's text)."""

    def __init__(self, base: Path, tree: Inode) -> None:
        self.base = os.fsencode(base)
        self.root = tree
        self.fds: dict[int, tuple[Inode, int, bool]] = {}  # fd -> inode, offset, O_APPEND
        self.renames: list[_Rename] = []
        self.entries: list[_Entry] = []  # names added or removed since their directory's sync
        self.seq = 0
        self.begun: dict[int, _Image] = {}  # thread -> what its sync in progress covers
        self.syncs = 0
        self.acked: list[str] = []

    # -- paths ----------------------------------------------------------------------------

    def _inside(self, path: bytes) -> bool:
        return path == self.base or path.startswith(self.base + b"/")

    def _parts(self, path: bytes) -> list[bytes]:
        rest = path[len(self.base) :].strip(b"/")
        return [p for p in rest.split(b"/") if p] if rest else []

    def lookup(self, path: bytes) -> Inode | None:
        node: Inode | None = self.root
        for part in self._parts(path):
            if node is None or not node.directory:
                return None
            node = node.entries.get(part)
        return node

    def _parent(self, path: bytes) -> tuple[Inode, bytes]:
        parts = self._parts(path)
        parent = self.lookup(self.base + b"/" + b"/".join(parts[:-1]))
        assert parent is not None and parent.directory, path
        return parent, parts[-1]

    @staticmethod
    def _path(directory: Arg, name: Arg) -> bytes:
        relative = name.string
        if relative.startswith(b"/"):
            return os.path.normpath(relative)
        _, where = directory.fd
        return os.path.normpath(where + b"/" + relative)

    # -- the calls --------------------------------------------------------------------------

    def apply(self, call: Call) -> None:  # one branch per system call
        name, args = call.name, call.args
        if name in {"open", "creat"}:
            self._open(Arg("AT_FDCWD<>"), args[0], args[1].raw if len(args) > 1 else "", call)
        elif name == "openat":
            self._open(args[0], args[1], args[2].raw, call)
        elif name in {"mkdir", "mkdirat"}:
            path = (
                self._path(args[0], args[1])
                if name == "mkdirat"
                else self._path(Arg("AT_FDCWD<>"), args[0])
            )
            if self._inside(path):
                parent, leaf = self._parent(path)
                parent.entries[leaf] = Inode(True)
                self._entry(parent, leaf)
        elif name in {"rename", "renameat", "renameat2"}:
            if name == "rename":
                old = self._path(Arg("AT_FDCWD<>"), args[0])
                new = self._path(Arg("AT_FDCWD<>"), args[1])
            else:
                old, new = self._path(args[0], args[1]), self._path(args[2], args[3])
            assert "RENAME_EXCHANGE" not in call.args[-1].raw, call
            if self._inside(old) or self._inside(new):
                assert self._inside(old) and self._inside(new), call
                source, old_leaf = self._parent(old)
                target, new_leaf = self._parent(new)
                node = source.entries.pop(old_leaf)
                target.entries[new_leaf] = node
                self.seq += 1
                self.renames.append(_Rename(source, old_leaf, target, new_leaf, node, self.seq))
        elif name in {"unlink", "unlinkat", "rmdir"}:
            if name == "unlinkat":
                path = self._path(args[0], args[1])
            else:
                path = self._path(Arg("AT_FDCWD<>"), args[0])
            if self._inside(path):
                parent, leaf = self._parent(path)
                del parent.entries[leaf]
                self._entry(parent, leaf)
        elif name in {
            "link",
            "linkat",
            "symlink",
            "symlinkat",
            "copy_file_range",
            "sendfile",
            "fallocate",
            "writev",
            "pwritev",
            "pwritev2",
            "truncate",
            "sync_file_range",
        }:
            self._refuse_unmodelled(call)
        elif name in {"write", "pwrite64"}:
            self._write(call)
        elif name == "ftruncate":
            fd, _ = args[0].fd
            if fd in self.fds:
                node = self.fds[fd][0]
                self.seq += 1
                size = int(args[1].raw)
                node.data = node.data[:size] + bytes(max(0, size - len(node.data)))
        elif name == "lseek":
            fd, _ = args[0].fd
            if fd in self.fds:
                node, _, append = self.fds[fd]
                self.fds[fd] = (node, int(call.result), append)
        elif name.startswith(BEGIN):
            fd, where = args[0].fd
            if fd in self.fds or self._inside(where):
                self.begun[call.pid] = self._image()
        elif name in {"fsync", "fdatasync"}:
            fd, _ = args[0].fd
            if fd in self.fds:
                self._sync(self.fds[fd][0], self.begun.pop(call.pid, None))
                self.syncs += 1
        elif name == "syncfs":
            fd, where = args[0].fd
            if fd in self.fds or self._inside(where):
                image = self.begun.pop(call.pid, None) or self._image()
                for node, (data, entries) in image.nodes.items():
                    self._settle(node, data, entries, image.seq)
                self.renames = [r for r in self.renames if r not in image.renames]
                self.entries = [e for e in self.entries if e not in image.entries]
                self.syncs += 1
        elif name == EXIT:
            self.fds.clear()  # the process ended; the next trace is another's
        elif name == "sync":
            self._refuse_unmodelled(call)  # the app never calls it
        elif name == "close":
            closed = args[0].fd[0]
            if closed is not None:
                self.fds.pop(closed, None)
        elif name in {"dup", "dup2", "dup3"} or (name == "fcntl" and "F_DUPFD" in args[1].raw):
            copied = args[0].fd[0]
            copy = Arg(call.result).fd[0] if "<" in call.result else int(call.result)
            if copied is not None and copied in self.fds and copy is not None:
                self.fds[copy] = self.fds[copied]

    def _entry(self, directory: Inode, name: bytes) -> None:
        self.seq += 1
        self.entries.append(_Entry(directory, name, directory.entries.get(name), self.seq))

    def _refuse_unmodelled(self, call: Call) -> None:
        paths = [a.fd[1] if "<" in a.raw else b"" for a in call.args]
        paths += [a.string for a in call.args if a.raw.startswith('"')]
        if any(self._inside(p) for p in paths):
            msg = f"a call the model does not replay touched the root: {call}"
            raise AssertionError(msg)

    def _open(self, directory: Arg, name: Arg, flags: str, call: Call) -> None:
        fd, _ = Arg(call.result).fd
        assert fd is not None
        self.fds.pop(fd, None)
        path = self._path(directory, name)
        if not self._inside(path):
            return
        node = self.lookup(path)
        if node is None:
            assert "O_CREAT" in flags, call
            parent, leaf = self._parent(path)
            node = parent.entries[leaf] = Inode(False)
            self._entry(parent, leaf)
        if "O_TRUNC" in flags:
            node.data = bytearray()
        self.fds[fd] = (node, 0, "O_APPEND" in flags)

    def _write(self, call: Call) -> None:
        number, where = call.args[0].fd
        data = call.args[1].string
        written = int(call.result)
        if where == b"/dev/null" and data.startswith(ACK_PREFIX):
            self.acked.append(data[len(ACK_PREFIX) :].decode())
            return
        if number is None or number not in self.fds:
            return
        assert not call.cut, f"strace cut a write short (raise its -s): {call}"
        node, offset, append = self.fds[number]
        self.seq += 1
        data = data[:written]
        if call.name == "pwrite64":
            at = int(call.args[3].raw)
        else:
            at = len(node.data) if append else offset
            self.fds[number] = (node, at + written, append)
        if len(node.data) < at:
            node.data.extend(bytes(at - len(node.data)))
        node.data[at : at + written] = data

    def _sync(self, node: Inode, image: _Image | None) -> None:
        data, entries = bytes(node.data), dict(node.entries)
        renames, seq = list(self.renames), self.seq
        if image is not None:  # as of the moment it began
            data, entries = image.nodes.get(node, (data, entries))
            renames, seq = [r for r in renames if r in image.renames], image.seq
        self._settle(node, data, entries, seq)
        if not node.directory:
            return
        covered = self.entries if image is None else image.entries
        self.entries = [e for e in self.entries if not (e.directory is node and e in covered)]
        # A rename is atomic: once one side is durable, so is the other.
        for rename in renames:
            if rename.target is node:
                if rename.source.synced_entries.get(rename.old) is rename.inode:
                    del rename.source.synced_entries[rename.old]
                rename.source.synced_at[rename.old] = rename.seq
            elif rename.source is node:
                rename.target.synced_entries[rename.new] = rename.inode
                rename.target.synced_at[rename.new] = rename.seq
            else:
                continue
            self.renames.remove(rename)
            # A name made and then renamed away: that name's durable state is the rename's
            # now, never the earlier change's (a temporary file seen again after the rename).
            self.entries = [
                e
                for e in self.entries
                if e.seq > rename.seq
                or (e.directory, e.name)
                not in {(rename.source, rename.old), (rename.target, rename.new)}
            ]

    @staticmethod
    def _settle(node: Inode, data: bytes, entries: dict[bytes, Inode], seq: int) -> None:
        """A sync that covers the changes up to ``seq`` ended: ``data`` and ``entries`` (as of
        ``seq``) are durable, but for what a sync covering a later moment already made so
        (two threads' syncs of one directory, the earlier begun ending last)."""
        if not node.directory:
            if node.synced_data_at <= seq:
                node.synced_data, node.synced_data_at = data, seq
            return
        for name in {*entries, *node.synced_entries}:
            if node.synced_at.get(name, -1) > seq:
                continue
            if name in entries:
                node.synced_entries[name] = entries[name]
            else:
                node.synced_entries.pop(name, None)
            node.synced_at[name] = seq

    def _image(self) -> _Image:
        """What every inode under ``base`` holds now, and the renames made so far."""
        nodes: dict[Inode, tuple[bytes, dict[bytes, Inode]]] = {}
        stack = [self.root]
        while stack:
            node = stack.pop()
            if node in nodes:
                continue
            nodes[node] = (bytes(node.data), dict(node.entries))
            stack.extend(node.entries.values())
        # Open descriptors too: an fsync may come through one whose name is gone.
        for node, _, _ in self.fds.values():
            nodes.setdefault(node, (bytes(node.data), dict(node.entries)))
        return _Image(nodes, list(self.renames), list(self.entries), self.seq)

    # -- partial write-back ---------------------------------------------------------------------

    def unsynced(self) -> list[Unit]:
        """Every change the kernel may have written back on its own since the fsync that
        would make it durable: a file's data, and each name added to or removed from a
        directory and each rename (both sides at once: ALICE's atomic rename), in order."""
        units: list[Unit] = []
        seen: set[int] = set()
        stack = [self.root, *(node for node, _, _ in self.fds.values())]
        while stack:
            node = stack.pop()
            if id(node) in seen:
                continue
            seen.add(id(node))
            if not node.directory:
                if bytes(node.data) != node.synced_data:
                    units.append(Unit("data", node))
                continue
            stack.extend(node.entries.values())
            stack.extend(node.synced_entries.values())
        changes = sorted([*self.entries, *self.renames], key=lambda change: change.seq)
        for change in changes:
            if isinstance(change, _Rename):
                units.append(Unit("rename", change.inode, rename=change))
            else:
                units.append(Unit("entry", change.directory, entry=change))
        return units

    def _with(self, units: list[Unit]) -> dict[str, bytes | None]:
        """The durable tree had the kernel written back ``units`` as well (in their order)."""
        saved = {}
        for unit in units:
            sides = (unit.rename.source, unit.rename.target) if unit.rename else ()
            for node in (unit.node, *sides):
                saved.setdefault(id(node), (node, node.synced_data, dict(node.synced_entries)))
        try:
            for unit in units:
                node = unit.node
                if unit.kind == "data":
                    node.synced_data = bytes(node.data)
                elif unit.entry is not None:
                    if unit.entry.inode is None:
                        node.synced_entries.pop(unit.entry.name, None)
                    else:
                        node.synced_entries[unit.entry.name] = unit.entry.inode
                else:
                    rename = unit.rename
                    assert rename is not None
                    if rename.source.synced_entries.get(rename.old) is rename.inode:
                        del rename.source.synced_entries[rename.old]
                    rename.target.synced_entries[rename.new] = rename.inode
            return self.tree(durable=True)
        finally:
            for node, data, entries in saved.values():
                node.synced_data, node.synced_entries = data, entries

    def writeback_states(self, calls: list[Call]) -> Iterator[State]:
        """:meth:`durable_states`, and at each of those moments and just before each sync
        (where the most is unsynced) the states where the kernel wrote back some unsynced
        changes and not others: each alone, and all but one (2n states for n unsynced
        changes; every subset would be 2^n)."""
        return self.durable_states(calls, partial=True)

    def _partial(self, state: State) -> Iterator[State]:
        units = self.unsynced()
        picks = [[u] for u in units]
        if len(units) > 2:
            picks += [[u for u in units if u is not left] for left in units]
        for pick in picks:
            what = ", ".join(u.describe() for u in pick)
            yield dataclasses.replace(
                state, tree=self._with(pick), call=f"{state.call}, {what} written back"
            )

    # -- the trees ----------------------------------------------------------------------------

    def tree(self, *, durable: bool) -> dict[str, bytes | None]:
        """Every path under ``base`` (relative) with its bytes, as seen or as a power loss
        leaves it."""
        found: dict[str, bytes | None] = {}

        def walk(node: Inode, prefix: str, seen: frozenset[int]) -> None:
            entries = node.synced_entries if durable else node.entries
            for leaf, child in sorted(entries.items()):
                path = f"{prefix}{os.fsdecode(leaf)}"
                if child.directory:
                    found[path] = None
                    if id(child) not in seen:  # a directory durable under two names
                        walk(child, f"{path}/", seen | {id(child)})
                else:
                    found[path] = child.synced_data if durable else bytes(child.data)

        walk(self.root, "", frozenset({id(self.root)}))
        return found

    def durable_states(self, calls: list[Call], *, partial: bool = False) -> Iterator[State]:
        """Replay ``calls``; the durable tree before the first, after every fsync and at every
        acknowledgement (between two, nothing more becomes durable). ``partial``: see
        :meth:`writeback_states`."""
        yield State(0, (), self.tree(durable=True), "(before the trace)")
        for call in calls:
            if partial and (call.name in _SYNCS or call.name.startswith(BEGIN)):
                where = os.fsdecode(call.args[0].fd[1].removeprefix(self.base + b"/"))
                before = f"just before {call.name.removeprefix(BEGIN)} of {where}"
                yield from self._partial(State(self.syncs, tuple(self.acked), {}, before))
            syncs, acked = self.syncs, len(self.acked)
            self.apply(call)
            if self.syncs != syncs:
                where = os.fsdecode(call.args[0].fd[1].removeprefix(self.base + b"/"))
                what = f"{call.name} of {where}"
            elif len(self.acked) != acked:
                what = f"the acknowledgement of {self.acked[-1]!r}"
            else:
                continue
            state = State(self.syncs, tuple(self.acked), self.tree(durable=True), what)
            yield state
            if partial:
                yield from self._partial(state)

    def seen_states(self, calls: list[Call]) -> Iterator[tuple[str, dict[str, bytes | None]]]:
        """Replay ``calls``; the tree the process saw at each acknowledgement."""
        for call in calls:
            acked = len(self.acked)
            self.apply(call)
            if len(self.acked) != acked:
                yield self.acked[-1], self.tree(durable=False)


def materialise(tree: dict[str, bytes | None], where: Path) -> None:
    """Write ``tree`` out under ``where`` (directories 0700, files 0600, as the app makes them)."""
    where.mkdir(mode=0o700)
    for path, data in tree.items():
        target = where / path
        if data is None:
            target.mkdir(mode=0o700, exist_ok=True)
        else:
            target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as file:
                file.write(data)

"""Red team 72 on the live holder's lock (layer 4): a holder's record whose pid was given again.

Real parts: a data root opened by the app, a lock file as a server killed with SIGKILL leaves
it (its JSON), and util-linux's ``flock(1)`` taking the lock since, as an operator keeps
servers off a root around a backup, at the very pid that record names: the pid was given
again (after a wrap of the pid numbers, a reboot, or in a container's next PID namespace,
where the first processes have the same small numbers each time). ``app status``'s
look (`app.dataroot.describe`, what ``app status`` prints) and a writer's refusal are taken
in this process, the refusal with no retries, as in tests/test_redteam_s70_lock.py.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from test_redteam_s70_lock import _flock, _refusal

from app import config as appconfig
from app.cli import _serving_url
from app.dataroot import describe, open_root
from app.lock import LOCK_FILE, describe_holder, holder_info, probe
from app.remote.errors import ReplicasLiveError
from app.storage import serving_url


def _laid_out(app_config: appconfig.Config) -> tuple[Path, Path]:
    """The test's data root, opened once and closed (laid out, its lock file there, free),
    and its lock file."""
    with open_root(app_config):
        pass
    return app_config.data_root, app_config.data_root / LOCK_FILE


def _killed_servers_record(root: Path, pid: int) -> Path:
    """Write into `root`'s lock file, in place, the record a server of this test's process
    published (its start time is this process's) under the pid `pid`, port 1: what a server
    killed at `pid` left, before the pid was given to another process."""
    lock = root / LOCK_FILE
    record = {**holder_info("server", "testing", port=1, root=root), "pid": pid}
    lock.write_text(json.dumps({**record, "address": "127.0.0.1"}) + "\n")
    return lock


def test_a_killed_servers_record_at_a_pid_given_to_flock_since_is_not_said_to_serve(
    app_config: appconfig.Config,
) -> None:
    # Before: the record's pid was the one the kernel lists for the lock, so the record was
    # taken as the holder's own: `app status` said "pid N, kind server, ... port 1, since
    # <the killed server's start>" and "serving: http://127.0.0.1:1", and the refusal named
    # it as a server that stops within lock_check_seconds, and `empty-trash`'s hint a URL.
    root, lock = _laid_out(app_config)
    with _flock(lock) as pid:
        _killed_servers_record(root, pid)
        status = describe(root)  # what `app status` prints
        refused = _refusal(app_config)
    holder = (
        f"pid {pid} (flock {lock} -c 'echo locked; exec sleep 600'; the lock file names pid "
        f"{pid} as a process that started at another time than this one, so the details "
        "after this are not this process's: the pid was given again since the process that "
        "wrote them (a holder that was killed) ended, and the lock taken by a program that "
        "writes nothing in it, such as `flock`; a server names itself again within "
        "lock_check_seconds, another program never does)"
    )
    assert (status.held_by or "").startswith(f"{holder}, kind server, "), status.held_by
    assert serving_url(status.probe.holder or {}, app_config.host) is None  # "serving:"
    assert f"held by {holder}" in refused.message, refused.message
    assert f"stop it (kill {pid})" in refused.message, refused.message
    assert serving_url(refused.holder or {}, app_config.host) is None  # empty-trash's hint


@contextmanager
def _flock_in_a_pid_namespace(lock: Path) -> Iterator[int]:
    """`flock(1)` holding `lock`, as pid 1 of a PID namespace of its own (a container's first
    process): its pid here."""
    flock = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "flock", str(lock), "-c",
         "echo locked; exec sleep 600"],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )  # fmt: skip
    try:
        assert flock.stdout is not None
        assert flock.stdout.readline() == "locked\n"
        yield int(Path(f"/proc/{flock.pid}/task/{flock.pid}/children").read_text().split()[0])
    finally:
        os.killpg(flock.pid, signal.SIGKILL)
        flock.wait()


@pytest.mark.skipif(os.geteuid() != 0, reason="a PID namespace of its own needs root here")
def test_a_killed_containers_record_at_pid_1_of_the_next_container_is_not_said_to_serve(
    app_config: appconfig.Config,
) -> None:
    # A server as pid 1 of a container, killed (the OOM killer), leaves "pid": 1; the next
    # container's pid 1 is `flock <lock> <backup>`. Before: "pid N (pid 1 in a PID namespace
    # of its own), kind server, ... port 1" and `app status` said "serving: ...:1".
    root, lock = _laid_out(app_config)
    with _flock_in_a_pid_namespace(lock) as pid:
        _killed_servers_record(root, 1)
        seen = probe(root)
    assert seen.held, seen
    holder = seen.holder or {}
    assert holder.get("pid") == pid, holder
    assert serving_url(holder, app_config.host) is None
    assert describe_holder(holder).startswith(
        f"pid {pid} (pid 1 in a PID namespace of its own; the lock file names pid 1 as a "
        "process that started at another time than this one, so the details after this are "
        "not this process's: the pid was given again since the process that wrote them (a "
        "holder that was killed) ended, and the lock taken by a program that writes nothing "
        "in it, such as `flock`), kind server, profile testing, "
    ), describe_holder(holder)


def test_a_killed_servers_record_at_a_pid_given_to_flock_s_since_is_said_not_its_own(
    app_config: appconfig.Config,
) -> None:
    # The same, `flock -s` (red team 70's shared holder) given the killed server's pid.
    # Before: "pid N (flock -s ...), which holds a shared lock ...; the lock file names pid N,
    # which does not hold the lock (a holder that was killed left it so)": it does hold it.
    root, lock = _laid_out(app_config)
    with _flock(lock, "-s") as pid:
        _killed_servers_record(root, pid)
        held_by = describe(root).held_by
    assert held_by == (
        f"pid {pid} (flock -s {lock} -c 'echo locked; exec sleep 600'), which holds a shared "
        "lock on the lock file, as `flock -s` takes one: not a holder of the app, it keeps "
        f"every writer off the root until it lets go; the lock file names pid {pid}, which "
        "did not write it (a holder of the app never holds the lock shared): a holder that "
        "was killed left it, and its pid was given again since"
    ), held_by


#: A probe from a PID namespace of its own (`unshare --pid --mount-proc`), which sees no
#: process of this one, as a machine that shares the filesystem sees none of another's: for
#: each line it is given, it takes the host name the line holds, if any (in a UTS namespace
#: of its own, as a container has its own name), and prints what it sees of the root.
_HIDDEN_PROBE = """
import socket
import sys
from pathlib import Path
from app.lock import describe_holder, local_url, probe
for line in sys.stdin:
    if line.strip():
        socket.sethostname(line.strip())
    seen = probe(Path(sys.argv[1]))
    url = local_url(seen.holder, "127.0.0.1")
    print(seen.held, describe_holder(seen.holder), "url:", url, flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="a PID namespace of its own needs root here")
def test_a_holder_on_another_host_is_not_said_to_be_in_a_pid_namespace_of_this_one(
    app_config: appconfig.Config,
) -> None:
    # A root on a share that two machines mount (NFS, whose locks hold across them): the
    # kernel here lists no process for the other machine's lock. Before: "pid N in a PID
    # namespace this process cannot see (another container's, or the host's: stop it
    # there)", where the lock file said which machine it was.
    root, lock = _laid_out(app_config)
    hidden = subprocess.Popen(
        ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", "--uts",
         sys.executable, "-c", _HIDDEN_PROBE, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    assert hidden.stdin is not None
    assert hidden.stdout is not None
    try:
        with _flock(lock) as pid:
            ours = holder_info("server", "production", port=8000, root=root)
            # Another machine: another host name, and another boot's id (each kernel its own).
            other = {"host": "web-2", "boot_id": "0f1e2d3c-4b5a-4697-8879-a1b2c3d4e5f6"}
            on_loopback = {"address": "127.0.0.1", "url": "http://127.0.0.1:8000"}
            lock.write_text(json.dumps({**ours, **other, **on_loopback, "pid": 77}) + "\n")
            hidden.stdin.write("\n")
            hidden.stdin.flush()
            elsewhere = hidden.stdout.readline()
            # Docs review 72: its loopback is that machine's; the URL was built from it here,
            # and `app status` said "serving: http://127.0.0.1:8000", this machine's port.
            # Listening on every interface, it is reached by the URL it published.
            everywhere = {"address": "0.0.0.0", "url": "http://web-2:8000"}
            lock.write_text(json.dumps({**ours, **other, **everywhere, "pid": 77}) + "\n")
            hidden.stdin.write("\n")
            hidden.stdin.flush()
            published = hidden.stdout.readline()
            # Red team 72 on regress, round b: this machine's server (here `flock`, under
            # the record a server of this machine writes), seen from a container of the same
            # machine with a PID namespace and a host name of its own (Docker's default), or
            # from this host after its name was changed under the server. Before: "pid N on
            # another host than this one, <this machine's name>, ... (a machine that shares
            # this filesystem, as over NFS, ...)", where the record's boot id, which every
            # namespace of one kernel reads alike, said it was this machine.
            lock.write_text(json.dumps({**ours, "pid": pid}) + "\n")
            hidden.stdin.write("ctr-1\n")
            hidden.stdin.flush()
            here = hidden.stdout.readline()
    finally:
        hidden.stdin.close()
        hidden.wait()
    assert elsewhere.startswith(
        "True pid 77 on another host than this one, web-2, as the lock file names it (a "
        "machine that shares this filesystem, as over NFS, or a container on such a machine, "
        "whose processes this one cannot see: stop it there), kind server, profile "
        "production, host web-2, port 8000, since "
    ), elsewhere
    assert elsewhere.rstrip().endswith(" url: None"), elsewhere
    assert published.rstrip().endswith(" url: http://web-2:8000"), published
    assert here.startswith(
        f"True pid {pid} in a PID namespace this process cannot see (another container's, or "
        f"the host's: stop it there), kind server, profile production, host {ours['host']}, "
        "port 8000, since "
    ), here
    assert hidden.returncode == 0


def test_a_records_url_or_address_that_is_no_host_name_is_never_printed_to_be_pasted(
    app_config: appconfig.Config,
) -> None:
    # Red team 72 on regress, round l: `empty-trash`'s refusal prints the URL in a `curl`
    # the operator pastes, inside double quotes, with the token's header. The URL a holder
    # of another host published, and the address any holder published, are the lock file's,
    # which whoever writes the data root writes: one with a quote, or a `$(...)`, ran a
    # command of its writer's in the operator's shell, as the operator.
    elsewhere = {"kind": "server", "port": 8000, "host": "web-2", "boot_id": "0f1e2d3c"}
    breaking = 'http://web-2:8000"; touch ~/owned; "'
    substituted = "http://$(touch ~/owned):8000"
    assert serving_url({**elsewhere, "address": "0.0.0.0", "url": breaking}, "::1") is None
    assert serving_url({**elsewhere, "address": "0.0.0.0", "url": substituted}, "::1") is None
    # The port is the record's; an earlier build's record (no address) is read alike.
    assert serving_url({**elsewhere, "address": "::", "url": "http://web-2:22"}, "::1") is None
    assert serving_url({**elsewhere, "pid": 9, "url": breaking}, "127.0.0.1") is None
    assert serving_url({**elsewhere, "address": '10.0.0.7";id;"'}, "127.0.0.1") is None
    assert serving_url({**elsewhere, "pid": 9, "address": "$(id)"}, "127.0.0.1") is None
    # What servers publish is still given: a host name, an IPv4 or IPv6 address, every
    # interface reached at this machine's loopback of the family.
    published = {**elsewhere, "address": "0.0.0.0", "url": "http://web-2.example.org:8000"}
    assert serving_url(published, "::1") == "http://web-2.example.org:8000"
    assert serving_url({**published, "url": "http://web_2:8000"}, "::1") == "http://web_2:8000"
    assert serving_url({**elsewhere, "address": "fd00::7"}, "::1") == "http://[fd00::7]:8000"
    assert serving_url({**elsewhere, "address": "10.0.0.7"}, "::1") == "http://10.0.0.7:8000"
    assert serving_url({**elsewhere, "pid": 9, "address": "::"}, "x") == "http://[::1]:8000"
    assert serving_url({**elsewhere, "pid": 9, "address": ""}, "x") == "http://127.0.0.1:8000"
    # A server of another host bound on an IPv6 socket to IPv4's loopback or any address
    # (`--host ::ffff:127.0.0.1`, which its record and URL name so): this machine's loopback,
    # not that host's, was given as its URL.
    mapped = {**elsewhere, "address": "::ffff:127.0.0.1", "url": "http://[::ffff:127.0.0.1]:8000"}
    assert serving_url(mapped, "::1") is None
    mapped_any = {**elsewhere, "address": "::ffff:0.0.0.0", "url": "http://[::ffff:0.0.0.0]:8000"}
    assert serving_url(mapped_any, "::1") is None
    assert serving_url({**mapped_any, "url": "http://web-2:8000"}, "::1") == "http://web-2:8000"
    # A replica's row on PostgreSQL, which any client of the database's role writes, is
    # pasted in the same `curl`.
    rows = [{"url": breaking}, {"url": "http://web-3:8000"}]
    live = ReplicasLiveError(wanted="empty the trash", where="database app", replicas=rows)
    assert _serving_url(app_config, live) == "http://web-3:8000"

"""One example of every error the app raises on purpose, for the error catalogue.

tests/test_docs_generated.py renders these into docs/generated/errors.md (the catalogue page
includes that file) and fails when an error class in app.errors has no example here, so a new
error cannot ship without its entry in the documentation.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from app import errors
from app.lock import describe_holder, hard_links_fix, hard_links_said
from app.remote import errors as remote
from app.store import check_file_name

ROOT = Path("/srv/app/data")
DATABASE = "postgresql://app@db.internal:5432/app_production"
OBJECTS = "s3://app-data/production at https://s3.example.com:443"
REPLICAS = [
    {
        "host": "review-1",
        "pid": 4242,
        "profile": "production",
        "since": "2025-12-04T09:12:03.512113+00:00",
        "url": "http://review-1:8080",
    },
    {
        "host": "review-2",
        "pid": 5151,
        "profile": "production",
        "since": "2025-12-04T09:13:40.077215+00:00",
        "url": "http://review-2:8080",
    },
]
HOLDER = {
    "pid": 4242,
    "kind": "server",
    "profile": "production",
    "host": "review-1",
    "port": 8080,
    "started_at": "2025-12-04T09:12:03+00:00",
}

#: A PUT whose If-Match names the version before the current one (old tag, current tag).
STALE_PUT = (
    "PUT",
    "3f2a9c",
    "report.pdf",
    '"9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"',
    '"60303ae22b998861bce3b28f33eec1be758a213c86c93c076dbe9f558c11c752"',
)


def _raised(call: Callable[[], object]) -> errors.AppError:
    """The error a real call raises, where one is cheap to provoke."""
    try:
        call()
    except errors.AppError as error:
        return error
    raise AssertionError(f"{call} raised nothing")


EXAMPLES: list[errors.AppError] = [
    errors.SettingsNotFoundError(Path("/opt/app"), "from APP_SETTINGS_DIR"),
    errors.SettingsDirEmptyError("APP_SETTINGS_DIR", Path("/opt/app/src")),
    errors.SettingsSyntaxError(Path("/opt/app/settings.toml"), 12, "Expected '=' after a key"),
    errors.SettingsUnreadableError(Path("/opt/app/settings.toml"), "nobody"),
    errors.SettingsNotAFileError(
        Path("/opt/app/.secrets.toml"),
        "a symbolic link to /run/secrets/app.toml, which does not exist",
        "Put the file at the link's target (mount the volume or restore the secrets file it "
        "names), or remove the link if nothing should be read there "
        "(`rm /opt/app/.secrets.toml`), then run `app doctor`",
    ),
    errors.SettingsAmbiguousError(
        Path("/opt/app/settings.toml"), ["production", "Production"], None
    ),
    errors.SettingsNameError(Path("/opt/app/settings.toml"), "pr\u043eduction", "production"),
    errors.SettingsFileMisnamedError(Path("/opt/app/secrets.toml"), ".secrets.toml"),
    errors.SettingsCastError(
        Path("/opt/app/settings.toml"),
        "production",
        "port",
        "@int 80OO",
        "Cannot convert '80OO' to integer: invalid literal for int() with base 10: '80OO'",
        "production",
    ),
    errors.UnknownProfileError(
        "prod", ["development", "production", "testing"], "ENV_FOR_DYNACONF"
    ),
    errors.SectionNotAProfileError(
        "prodution",
        ["development", "testing", "production"],
        "section [prodution] of /opt/app/.secrets.local.toml",
        "prodution",
        Path("/opt/app/.secrets.local.toml"),
        Path("/opt/app/settings.toml"),
    ),
    errors.DynaconfSwitchError(["FORCE_ENV_FOR_DYNACONF"]),
    errors.VariableMisspeltError(
        "ENV_FOR_DYNACOF",
        "production",
        "ENV_FOR_DYNACONF",
        "(or --profile) selects the profile",
        "the default profile 'development'",
        "export ENV_FOR_DYNACONF=production; unset ENV_FOR_DYNACOF",
    ),
    errors.InvalidSettingError(
        "production", "port", 80000, "must be between 1 and 65535", "environment APP_PORT"
    ),
    errors.DataRootOverlapError(
        "production",
        Path("/srv/app/data"),
        "environment APP_DATA_ROOT",
        "testing",
        Path("/srv/app/data/testing"),
        "settings.toml [testing]",
    ),
    errors.RemoteBackendError(
        "production",
        "open a data root as a maintenance process",
        "postgresql://app@db.internal:5432/app_production",
        "s3://app-data/production at https://s3.example.com:443",
    ),
    errors.ConfigProblems(
        [
            errors.InvalidSettingError(
                "testing",
                "data_rot",
                "x",
                "unknown key; did you mean 'data_root'?",
                "settings.toml [testing]",
            ),
            errors.UnknownProfileError(
                "prod", ["development", "production", "testing"], "--profile"
            ),
        ]
    ),
    errors.SandboxViolationError(
        "loading profile 'production'; tests run on the 'testing' profile",
        Path("/tmp/pytest-of-dev/pytest-7/app-sandbox"),
        "To test another profile, mark the test @pytest.mark.app_profile('production'); "
        "its data root is then mapped into the sandbox",
    ),
    # Below a Python process (not named as pytest) whose program this one may not read.
    errors.SandboxViolationError(
        "loading profile 'production' while a test run may be above this process (ancestor "
        "pid 4242: /usr/bin/python3 supervise.py; Python, its command line naming no pytest), "
        "whose entry in the registry of test runs this process (user 0) cannot look for: the "
        "registry does not show one, and its capabilities are not all this process's (it "
        "holds 40 capabilities that this process lacks, CAP_SYS_PTRACE among them), so "
        "/proc/4242/exe and the descriptors it keeps open, where a run keeps its entry, are "
        "closed to this process",
        None,
        "Start this process with the capabilities of pid 4242 in effect (not under `setpriv "
        "--bounding-set=-all`, `capsh --drop`, a unit's CapabilityBoundingSet= or a `capset` "
        "that clears the effective set below a process that holds them), or outside the test "
        "run; a test must leave the registry of test runs (/tmp/app-pytest-runs-0) and its "
        "entries alone. If pid 4242 runs no tests, this process still cannot tell it from a "
        "run whose entry a test removed: start this process with its capabilities in effect, "
        "or start pid 4242 without those this process lacks (a unit's "
        "CapabilityBoundingSet=, `setpriv --bounding-set`)",
        runner="a Python process that may run tests",
    ),
    # Below a pytest that a test made not dumpable, its entry removed.
    errors.SandboxViolationError(
        "loading profile 'production' while a test run may be above this process (ancestor "
        "pid 4242: /usr/bin/python3 -m pytest tests), whose entry in the registry of test "
        "runs this process (user 1000) cannot look for: the registry does not show one, and "
        "it is not dumpable to this process, as far as it can tell (its /proc/4242/status is "
        "root's while it runs as user 1000, as Linux shows a process that is not dumpable: "
        "`prctl(PR_SET_DUMPABLE, 0)`, ids changed without an exec, or a security module such "
        "as AppArmor or SELinux), so /proc/4242/exe and the descriptors it keeps open, where a "
        "run keeps its entry, are closed to this process",
        None,
        "Start this process where pid 4242 is dumpable (no test may call "
        "`prctl(PR_SET_DUMPABLE, 0)` in its run's process) and no security module confines "
        "this process apart from it, or with CAP_SYS_PTRACE, or outside the test run; a test "
        "must leave the registry of test runs (/tmp/app-pytest-runs-1000) and its entries alone",
    ),
    # Below a Python process whose /proc/<pid>/exe this one could not read (an injected fault).
    errors.SandboxViolationError(
        "loading profile 'production' while a test run may be above this process (ancestor "
        "pid 4242: /usr/bin/python3 -m pytest tests), whose entry in the registry of test "
        "runs this process (user 1000) cannot look for: the registry does not show one, and "
        "its read of /proc/4242/exe failed (EIO: Input/output error), so it cannot tell "
        "whether that process keeps a run's entry open",
        None,
        "Let this process read /proc/4242 (its exe, fd, status and comm) and its own status: a "
        "tracer that injects faults (`strace --inject`) must keep to the calls the test means "
        "(`-P <the file>`, never a run's /proc/<pid>), and a seccomp filter must not fail those "
        "reads; or start it outside the test run; a test must leave the registry of test runs "
        "(/tmp/app-pytest-runs-1000) and its entries alone",
    ),
    # Where /proc hides this process's parent, whose pid a registered run has.
    errors.SandboxViolationError(
        "loading profile 'production' while /proc does not show this process's parent, pid "
        "4242 (/proc is mounted here with hidepid=invisible, which hides a process this one "
        "may not read: another user's, or one that holds capabilities this process lacks), "
        "and the registry of test runs holds an entry for a run of that pid "
        "(/tmp/app-pytest-runs-0/4242-1234567.json), so this process cannot tell whether that "
        "run is above it",
        None,
        "Start this process where /proc shows its parent (/proc mounted without "
        "hidepid=invisible, or with gid= a group of this process, or with the capabilities of "
        "pid 4242 in effect), or outside the test run; a test must not hide its run from the "
        "processes it starts. If no test run of pid 4242 is running, remove "
        "/tmp/app-pytest-runs-0/4242-1234567.json",
    ),
    # Where /proc hides this process's parent and its look in the registry failed.
    errors.SandboxViolationError(
        "loading profile 'production' while /proc does not show this process's parent, pid "
        "4242 (/proc is mounted here with hidepid=invisible, which hides a process this one "
        "may not read: another user's, or one that holds capabilities this process lacks), "
        "and its look in the registry of test runs (/tmp/app-pytest-runs-0) for a run of that "
        "pid failed (EIO: Input/output error), so this process cannot tell whether a test run "
        "is above it",
        None,
        "Start this process where /proc shows its parent (/proc mounted without "
        "hidepid=invisible, or with gid= a group of this process, or with the capabilities of "
        "pid 4242 in effect), or outside the test run; a test must not hide its run from the "
        "processes it starts. Let this process list /tmp/app-pytest-runs-0: a tracer that "
        "injects faults (`strace --inject`) must keep to the calls the test means "
        "(`-P <the file>`)",
    ),
    # Where /proc hides this process's parent and its ask for a hidden ancestor's parent by
    # pidfd failed (an injected fault), with a running run's entry in the registry.
    errors.SandboxViolationError(
        "loading profile 'production' while /proc does not show this process's parent, pid "
        "4242 (/proc is mounted here with hidepid=invisible, which hides a process this one "
        "may not read: another user's, or one that holds capabilities this process lacks), "
        "and its ask of the kernel for the parent of pid 4242 through a pidfd (its "
        "PIDFD_GET_INFO ioctl) failed (EIO: Input/output error), so this process cannot tell "
        "whether the run of an entry in the registry of test runs "
        "(/tmp/app-pytest-runs-0/4000-1234500.json) is above it",
        None,
        "Start this process where /proc shows its parent (/proc mounted without "
        "hidepid=invisible, or with gid= a group of this process, or with the capabilities of "
        "pid 4242 in effect), or outside the test run; a test must not hide its run from the "
        "processes it starts. Let this process ask for a process's parent (pidfd_open and its "
        "PIDFD_GET_INFO ioctl): a tracer that injects faults (`strace --inject`) must keep to "
        "the calls the test means (`-P <the file>`), and a seccomp filter must not fail "
        "those. If the run of that entry is not running, remove "
        "/tmp/app-pytest-runs-0/4000-1234500.json",
    ),
    # Where this process's read of its own stat failed (an injected fault).
    errors.SandboxViolationError(
        "loading profile 'production' while this process's read of its own /proc/4243/stat "
        "failed (EIO: Input/output error; a tracer that injects faults, such as `strace "
        "--inject`, or a seccomp filter), so it cannot tell its parent, nor whether a test "
        "run is above it",
        None,
        "Let this process read /proc/4243/stat (inject faults only into the calls the test "
        "means, e.g. `strace -P <the file>`), or start it outside the test run",
    ),
    # Where /proc (hidepid=noaccess) denies this process an ancestor it shows.
    errors.SandboxViolationError(
        "loading profile 'production' while this process may not read /proc/4242 (an "
        "ancestor): /proc is mounted here with hidepid=noaccess, which denies a process this "
        "one may not read (one that holds capabilities this process lacks, or another user's), "
        "so it cannot tell whether a test run is above it",
        None,
        "Start this process where /proc lets it read its ancestors (/proc mounted without "
        "hidepid=noaccess, or with gid= a group of this process, or with the capabilities of "
        "pid 4242 in effect), or outside the test run",
    ),
    errors.DataRootInUseError(ROOT, HOLDER, "purge sessions", held_by=describe_holder(HOLDER)),
    errors.LockUnavailableError(ROOT / ".server.lock", "flock failed: No locks available"),
    errors.LockFileAliasedError(
        ROOT / ".server.lock",
        hard_links_said(ROOT / ".server.lock", 2),
        hard_links_fix(ROOT / ".server.lock"),
    ),
    errors.LockFileKindError(ROOT / ".server.lock", "a directory"),
    errors.LockLostError(ROOT / ".server.lock", "was replaced by another file"),
    errors.LockFileUnreadableError(
        ROOT / ".server.lock", "0000", 998, 998, 4242, "/usr/bin/python3 -m app serve"
    ),
    errors.DataRootOwnerError(
        ROOT,
        998,
        "app",
        0,
        "root",
        "restore session 0190a1b2c3d4 file 'plan.pdf'",
        "env ENV_FOR_DYNACONF=production /opt/app/.venv/bin/app sessions restore "
        "0190a1b2c3d4 --file plan.pdf",
    ),
    errors.LockUncheckedError(
        ROOT / ".server.lock", "could not be checked (Stale file handle; 4 looks in 2.6 s)"
    ),
    errors.LockUnwatchedError(
        ROOT / ".server.lock",
        "could not be watched: its watcher failed with OverflowError: timestamp too large to "
        "convert to C _PyTime_t",
    ),
    errors.DataRootChangedError(
        ROOT, f"sessions/ was replaced or moved since it was opened ({ROOT / 'sessions'})"
    ),
    errors.StampChangedError(
        ROOT / ".app-profile.json",
        "now names profile 'development', and this process writes for profile 'production'",
        stamped="development",
        profile="production",
        protected=True,
    ),
    errors.ProfileStampMismatchError(ROOT, "production", "development", protected=True),
    errors.DataRootTooNewError(ROOT, "0.2.0", "3", "0.1.0", 2),
    errors.DataRootStateError(
        ROOT,
        f"its profile stamp {ROOT / '.app-profile.json'} names no profile",
        "restore the file from a backup, or write "
        '{"profile": "<the profile this root belongs to>"} into it by hand',
    ),
    errors.ConfirmationRequiredError("purge sessions", "production", "--yes-i-mean-it"),
    errors.PortInUseError(
        "127.0.0.1",
        8080,
        "the address is already in use, by pid 4321 (/opt/app/.venv/bin/python "
        "/opt/app/.venv/bin/app serve)",
    ),
    errors.RequestCutShortError("POST", "/sessions", 30),
    errors.CommandInterruptedError("app data purge"),
    errors.CommandTerminatedError("app data purge"),
    errors.OutputClosedError("app data purge"),
    errors.ListenAddressError(
        "127.0.0.1:8000",
        0,
        "the host '127.0.0.1:8000' does not resolve to an address (Name or service not known)",
        "Set the host to an address of this machine (127.0.0.1, 0.0.0.0 for every interface) "
        "or a name that resolves to one, with --host or APP_HOST (`app config` shows where "
        "host is set); the port is set apart, with --port or APP_PORT",
    ),
    errors.ListenAddressUnresolvedError(
        "review.internal",
        8080,
        "the host 'review.internal' could not be looked up now (Temporary failure in name "
        "resolution)",
        "Retry once name resolution works (exit 75: a service manager restarts it), or give "
        "the host as an address, which needs no lookup, with --host or APP_HOST",
    ),
    errors.OutputFailedError("app data purge", "No space left on device, ENOSPC", changes=True),
    errors.SessionNotFoundError("3f2a9c"),
    errors.NotInTrashError("3f2a9c", "report.pdf"),
    errors.TrashCopyLostError(
        "3f2a9c", "report.pdf", "20261204T101500000000Z-3f2a9c-file-5967e864"
    ),
    errors.RestoreOverwriteError(
        "3f2a9c",
        "report.pdf",
        "/srv/app/data/.trash/20261204T101500000000Z-3f2a9c-file-5967e864/report.pdf",
        entry="20261204T101500000000Z-3f2a9c-file-5967e864",
    ),
    # The same restore run again after its output was lost: its first run brought it back.
    errors.RestoreOverwriteError(
        "3f2a9c",
        "report.pdf",
        "/srv/app/data/.trash/20261204T101500000000Z-3f2a9c-file-5967e864/report.pdf",
        entry="20261204T101500000000Z-3f2a9c-file-5967e864",
        restored="20261207T101500000000Z-3f2a9c-file-9dad0132",
    ),
    # A file's restore where the file is there and the trash holds no copy of it.
    errors.RestoreOverwriteError("3f2a9c", "notes.txt"),
    errors.TrashEntryLinkedError(
        "3f2a9c",
        "report.pdf",
        "20261204T101500000000Z-3f2a9c-file-5967e864",
        "/srv/app/data/.trash/20261204T101500000000Z-3f2a9c-file-5967e864",
        "if it leads to the directory, moved out of the data root, move that back in its "
        "place: `rm /srv/app/data/.trash/20261204T101500000000Z-3f2a9c-file-5967e864 && mv "
        "/mnt/spare/20261204T101500000000Z-3f2a9c-file-5967e864 "
        "/srv/app/data/.trash/20261204T101500000000Z-3f2a9c-file-5967e864`, with no server on "
        "the root; else remove the link and restore again to bring back the copy before it",
    ),
    errors.TrashManifestDamagedError(
        "3f2a9c",
        "report.pdf",
        "20261204T101500000000Z-3f2a9c-file-5967e864",
        "/srv/app/data/.trash/20261204T101500000000Z-3f2a9c-file-5967e864",
        ("report.pdf",),
        older="20261204T091500000000Z-3f2a9c-file-0a1b2c3d",
    ),
    errors.FileNotFoundInSessionError("3f2a9c", "report.pdf"),
    errors.FileNotFoundInSessionError(
        "3f2a9c", "report.pdf", deleted="20261207T101500000000Z-3f2a9c-file-9dad0132"
    ),
    errors.UnreadableSessionError("3f2a9c"),
    errors.RestoredUnreadableSessionError("3f2a9c", entry="20261204T101500000000Z-3f2a9c"),
    errors.SessionNotServedError("3f2a9c"),
    errors.DamagedFileError(
        "3f2a9c", "report.pdf", "are 4096 bytes long, where 81920 were acknowledged"
    ),
    errors.FileRecordUnreadableError("3f2a9c", "report.pdf", "store"),
    errors.FileNameFoldedError("3f2a9c", "Report.pdf", "report.pdf", "store"),
    _raised(lambda: check_file_name("../notes.txt")),
    errors.UploadTooLargeError(104857600, 104923136),
    errors.BodyTooLargeError("creating a session", 262144, 262145),
    errors.MetadataTooLargeError(70012, 65536),
    errors.BadRequestError("limit must be at least 1, not 0"),  # Store.list_sessions' words
    errors.FileExistsInSessionError("3f2a9c", "report.pdf"),
    errors.PreconditionFailedError(*STALE_PUT),
    # A PUT retried after its answer was lost, its Repr-Digest naming the current bytes.
    errors.PreconditionFailedError(*STALE_PUT, sent=STALE_PUT[-1].strip('"')),
    # A DELETE with If-Match sent again after its answer was lost: its first try deleted it.
    errors.PreconditionFailedError(
        "DELETE", *STALE_PUT[1:4], None, deleted="20261207T101500000000Z-3f2a9c-file-9dad0132"
    ),
    errors.DigestMismatchError(
        "PUT",
        "3f2a9c",
        "report.pdf",
        "Repr-Digest",
        "the body",
        "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
        "YDA64iuZiGG847KPM+7BvnWKITyGyTwHbb6fVYwRx1I=",
    ),
    # A POST /sessions whose JSON changed on the way (red team 65): no file, no session yet.
    errors.DigestMismatchError(
        "POST",
        "",
        "",
        "Repr-Digest",
        "the session's JSON",
        "n4bQgYhMfWWaL+qgxVrQFaO/TxsrC4Is0V1sFbDwCgg=",
        "YDA64iuZiGG847KPM+7BvnWKITyGyTwHbb6fVYwRx1I=",
    ),
    errors.DigestUnsupportedError("Repr-Digest", "md5", "sha-256"),
    errors.RequestTimeoutError("the client sent no byte of its body", 30, "request_idle_seconds"),
    errors.HeaderTooLargeError(32768),
    errors.BodyLineTooLargeError(32768, "PUT /sessions/3f2a9c/files/report.pdf"),
    errors.TooManyUploadsError(
        32, "31 from 192.0.2.7 and 1 from 127.0.0.1; the oldest began 412 s ago", 5
    ),
    errors.ThreadLimitError("POST /sessions", "can't start new thread"),
    errors.WorkerStartError(
        3,
        4,
        "http://0.0.0.0:8080",
        "Resource temporarily unavailable, EAGAIN",
        "The workers started before it (pid 4322, 4323) were stopped, before serving a request",
        errors.PIDS_LIMITS,
    ),
    errors.WorkerSettingsChangedError(
        4324, 4321, "production", "api_token, max_upload_bytes", "/etc/app"
    ),
    errors.TooManyFilesError("3f2a9c", 10000, 10000),
    errors.TooManyFilesError("3f2a9c", 2, 3),
    errors.StorageFullError("PUT /sessions/3f2a9c/files/report.pdf"),
    errors.StorageFullError("POST /sessions", directory="sessions", entries=21853),
    errors.ReadOnlyStorageError("DELETE /sessions/3f2a9c"),
    errors.TooManyOpenFilesError("PUT /sessions/3f2a9c/files/report.pdf"),
    errors.FileTooLargeForServerError("PUT /sessions/3f2a9c/files/report.pdf"),
    errors.AuditLogFullError("DELETE /sessions/3f2a9c/files/report.pdf", 1073741400, 1073741824),
    errors.PermissionDeniedStorageError("DELETE /sessions/3f2a9c/files/report.pdf"),
    errors.CrossDeviceStorageError("DELETE /sessions/3f2a9c"),
    errors.NotRegularFileStorageError(
        "DELETE /sessions/3f2a9c/files/report.pdf", "audit.jsonl", "a FIFO"
    ),
    errors.StorageIOError("PUT /sessions/3f2a9c/files/report.pdf"),
    errors.StorageSyncFailedError(
        "PUT /sessions/3f2a9c/files/report.pdf",
        "an fsync on the data root's filesystem failed (Input/output error)",
    ),
    errors.StorageSyncFailedError(
        "POST /sessions",
        "an fsync on the data root's filesystem failed at 2025-12-04T09:12:03.512113+00:00 "
        "(Input/output error), in an earlier change",
    ),
    errors.StorageInterruptedError("DELETE /sessions/3f2a9c/files/report.pdf"),
    errors.StorageFailedError(
        "PUT /sessions/3f2a9c/files/report.pdf",
        "ESTALE",
        "Stale file handle",
        ": a network filesystem (NFS) whose server restarted or whose export changed under "
        "the mount, so the file handles the kernel holds name nothing; remount it",
    ),
    errors.UploadChangedOnDiskError(
        "0193a5f0c2d97c41b7e25f0a9d3c6e18", "report.pdf", "holds 0 bytes where 4096 were received"
    ),
    errors.StoppedPartwayError(
        doing="purge",
        done=120,
        total=300,
        cause="[Errno 24] Too many open files: '/srv/app-data/.trash'",
        where="in the trash (/srv/app-data/.trash)",
        fix=f"{errors.PARTWAY_RESOLVE}, then run `app data purge` again to move the rest; "
        "`app sessions restore ID` brings one back",
    ),
    errors.RepairStoppedPartwayError(
        doing="`app data check --repair`",
        done=3,
        total=3,
        cause="EACCES: Permission denied: /srv/app-data/sessions",
        where="kept",
        fix=f"{errors.PARTWAY_RESOLVE}, then run `app data check --repair` again to check the rest",
    ),
    # The PostgreSQL + object storage backend (app.remote.errors).
    remote.ResourceOverlapError(
        "database",
        "production",
        DATABASE,
        "environment APP_DATABASE_URL",
        "staging",
        "postgresql://app@127.0.0.1:5432/app_production",
        ".secrets.toml [staging]",
    ),
    remote.RemoteStampMismatchError(
        f"database {DATABASE}", "its table app_stamp", "staging", "production", protected=True
    ),
    remote.UnstampedNotEmptyError(
        "production", "database_url", f"database {DATABASE}", ["public.orders", "public.users"]
    ),
    remote.InsideTestRunError(
        "production",
        "s3://app-data/testing/pytest_1_a3f9/replica at https://s3.internal",
        "s3://app-data/testing/pytest_1_a3f9 at https://s3.internal",
        "run _pytest_1_a3f9 of pid 1 on host ci-7, started 2026-12-06T20:00:00+00:00, whose "
        "scratch database is postgresql://app@db.internal:5432/app_testing_pytest_1_a3f9",
    ),
    remote.SchemaTooNewError(f"database {DATABASE}", 3, 2),
    remote.TablesOffSearchPathError(DATABASE, ["public"], "reporting"),
    remote.TablesOffSearchPathError(DATABASE, [], "nowhere"),
    remote.TablesShadowedError(DATABASE, ["app", "public"], '"$user", public'),
    remote.PrefixStampMissingError(
        "production",
        "s3://app-data/production at https://s3.internal",
        ["blobs/0b5e2c1f9a8d4e6b7c3a1f2e9d8c7b6a"],
        protected=True,
    ),
    remote.PrefixEmptiedError(
        "production",
        "s3://app-data/production at https://s3.internal",
        DATABASE,
        ["blobs/0b5e2c1f9a8d4e6b7c3a1f2e9d8c7b6a", "blobs/5d1c9e0a7b2f4c8d9e3a6b1f0c2d4e8a"],
        protected=True,
    ),
    remote.PrefixOfAnotherDatabaseError(
        "staging",
        "s3://app-data/production at https://s3.internal",
        "production",
        "2e557ba0-8e89-4270-8a6c-7198c90d8619",
        "postgresql://review@db.internal:5432/review_staging",
        "9a0f3c51-1d2e-4b7a-9c6d-5e4f3a2b1c0d",
    ),
    remote.PrefixStampDamagedError(
        "s3://app-data/production at https://s3.internal",
        "is not JSON (Expecting value: line 1 column 1 (char 0))",
    ),
    remote.DatabaseStampMissingError("production", DATABASE, 2),
    remote.DatabaseEncodingError(DATABASE, "LATIN1", "UTF8"),
    remote.DatabaseEncodingError(DATABASE, "UTF8", "LATIN1"),
    remote.TransactionPoolerError(
        DATABASE,
        "serving",
        "the server session this connection was given (backend pid 4711) already holds 1 "
        "of the app's advisory locks, taken by another client",
    ),
    remote.DatabaseUnavailableError(
        DATABASE, "connection refused: is the server running on that host and port?"
    ),
    remote.DatabasePasswordMissingError(
        DATABASE,
        'connection failed: connection to server at "db.internal", port 5432 failed: '
        "fe_sendauth: no password supplied",
        "",
        "The server's pg_hba.conf has it authenticate this host by password, and libpq found "
        "none where it looks, in this order: database_url's own (postgresql://user:password@"
        "host/database; `app config` says where database_url is set), none; the password= of "
        "a connection service's section (pg_service.conf), none named; PGPASSWORD, not set in "
        "this process's environment; the password file /home/app/.pgpass (PGPASSFILE, else "
        "~/.pgpass), which is not there (No such file or directory). Give the password in one "
        "of them (a line `db.internal:5432:app_production:app:<password>` in the password file, "
        "mode 600; database_url in .secrets.toml or APP_DATABASE_URL), then retry",
        "a connection (app status)",
    ),
    remote.DatabaseRefusedError(
        DATABASE,
        "cannot execute INSERT in a read-only transaction",
        "25006",
        "The database is read-only for the app: default_transaction_read_only is on for it or "
        "for the app's role (`ALTER DATABASE app_production RESET "
        "default_transaction_read_only`, and the same for the role, from a session that ran "
        "`SET default_transaction_read_only = off` first), or database_url names a standby: "
        "point it at the primary",
        "the creation of a session titled 'review of 4.2'",
    ),
    remote.DatabaseBusyError(
        DATABASE,
        "couldn't get a connection after 30.00 sec",
        30.0,
        8,
        "the upload of 'notes.txt' into session 0192b0f2c5a87b3e9c4d2a1f0e6b7c8d",
    ),
    remote.DatabaseTimeoutError(
        DATABASE,
        "no answer within 30 s (database_wait_seconds); the connection was closed",
        30.0,
        "the creation of a session titled 'notes'",
    ),
    remote.ObjectStoreUnavailableError(OBJECTS, "InvalidAccessKeyId: the access key is unknown"),
    remote.S3EndpointElsewhereError(
        "s3://app-data/production",
        "http://minio.internal:9000",
        "the process's environment gives it: AWS_ENDPOINT_URL=http://minio.internal:9000",
        "unset AWS_ENDPOINT_URL for the app's commands",
    ),
    remote.S3ClientSettingsError(
        OBJECTS,
        "Unsupported configuration value for request_checksum_calculation. Expected one of "
        "('when_supported', 'when_required') but got bogus",
    ),
    remote.StoreClockSkewError(
        OBJECTS,
        "RequestTimeTooSkewed, a difference of 120 min 3 s, this machine ahead of the store",
        here="2025-12-04T11:12:06+00:00",
        there="2025-12-04T09:12:03+00:00",
    ),
    remote.ObjectStoreCutShortError(
        "app data check --repair",
        OBJECTS,
        "the abort of the unfinished upload into blobs/0192b0f2c5a87b3e9c4d2a1f0e6b7c8d",
        "InternalError (HTTP 500): We encountered an internal error. Please try again.",
        "By then it had deleted 2 orphan objects",
        "1 unfinished upload as found, and every row of the database as it was",
        "The check-repair row of the audit log records which findings were repaired",
        "it finds and repairs what is left",
    ),
    remote.TrashEmptiedCutShortError(
        f"object store {OBJECTS} refused the deletion of 3 orphan objects (InternalError "
        "(HTTP 500): We encountered an internal error. Please try again.)",
        "2 trash entries",
        "",
        "3 orphan objects, which no row names,",
        "object store",
    ),
    remote.StatementConnectionLostError(
        DATABASE,
        "terminating connection due to administrator command",
        "the check's read of every file's row",
    ),
    remote.ObjectMissingError("s3://app-data/production/blobs/0192b0f2c5a87b3e9c4d2a1f0e6b7c8d"),
    remote.FileRowOfAnotherShapeError(
        "3f2a9c", "report.pdf", "its sha256 is 'see attachment', not 64 lower-case hex digits"
    ),
    remote.TrashedSessionRowOfAnotherShapeError(
        "3f2a9c",
        "has a null in 'metadata', which the app never writes",
        file="row in app_sessions",
        finding="row-of-another-shape",
    ),
    remote.ReplicasLiveError("empty the trash", DATABASE, REPLICAS),
    remote.MaintenanceRunningError(DATABASE, "backend pid 31337, app data purge"),
    remote.HolderLostError(DATABASE, "the server closed the connection unexpectedly"),
    remote.HolderUnwatchedError(
        DATABASE,
        "could not be watched: its watcher failed with OverflowError: timestamp too large to "
        "convert to C _PyTime_t",
    ),
    remote.CommitUnknownError(
        DATABASE,
        "server closed the connection unexpectedly; then: connection refused",
        "the upload of 'notes.txt' into session 0192b0f2c5a87b3e9c4d2a1f0e6b7c8d",
    ),
    remote.ConnectionLostError(
        DATABASE,
        "terminating connection due to administrator command",
        "the upload of 'notes.txt' into session 0192b0f2c5a87b3e9c4d2a1f0e6b7c8d",
    ),
    remote.StorageMismatchError(
        "database",
        DATABASE,
        OBJECTS,
        "6f1c0a52-3d5e-4b1a-9a63-0c1f2e7d8b94",
        database_id="0b7e2c41-93aa-4c0e-8f5d-2a6b1c9e3f70",
    ),
    remote.DatabaseCopiedError(
        "production",
        DATABASE,
        OBJECTS,
        "7311950212233419512/16384",
        "7311950212233419512/24577",
        protected=True,
    ),
    remote.SchemaNotWritableError("production", DATABASE, "public", "review", "app_production"),
    remote.UnloggedTablesError("production", DATABASE, ("app_sessions", "app_files")),
    remote.TablesHookedError(
        "production",
        DATABASE,
        ("CREATE TRIGGER s BEFORE INSERT ON public.app_files FOR EACH ROW EXECUTE FUNCTION s()",),
        ('DROP TRIGGER "s" ON "app_files"',),
    ),
    remote.TablesChangedError(
        "production",
        DATABASE,
        ("column app_sessions.metadata is jsonb, the app's is json",),
        ('ALTER TABLE "app_sessions" ALTER COLUMN "metadata" TYPE json USING "metadata"::json',),
    ),
    remote.WriteNotStoredError(
        DATABASE, "the upload of 'notes.txt' into session 0123456789abcdef", "app_files"
    ),
    remote.WriteNotStoredError(
        DATABASE, "the creation of a session titled 'Review'", "app_sessions", after=True
    ),
    remote.WriteNotStoredError(
        DATABASE,
        "the upload of 'notes.txt' into session 0123456789abcdef",
        "app_files",
        after=True,
    ),
    remote.WriteNotStoredError(
        DATABASE,
        "the restore of 'notes.txt' into session 0123456789abcdef",
        "app_files",
        "UPDATE of",
        after=True,
    ),
    remote.WriteNotStoredError(
        DATABASE,
        "the delete of session 0123456789abcdef",
        "app_sessions",
        "UPDATE of",
        after=True,
        files=(2, 0),
    ),
    remote.UnloggedWriteError(
        DATABASE, "the upload of 'notes.txt' into session 0123456789abcdef", ("app_files",)
    ),
    remote.DatabaseTimelineBehindError("production", DATABASE, OBJECTS, 1, 2),
    remote.RestampBoundElsewhereError(
        "staging",
        "production",
        "postgresql://review@db.internal:5432/app_staging",
        "s3://app-data/production",
        "s3://app-data/staging at https://s3.example.com:443",
    ),
    remote.MaintenanceLostError(
        "empty the trash", DATABASE, "terminating connection due to administrator command"
    ),
]

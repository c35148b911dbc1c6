"""Red team 67 on regress (branch rt-regress67a): see docs/explanation/attacks/layer-3-sandbox.md.

What broke:

- in a bucket that keeps versions, a run's end took the versions of an object the run had
  written and then deleted under a name of its own choosing (``put`` by a test, then
  ``delete``) for another program's: no listing shows the name any more, only its blob
  name could prove it, and the run's end failed, naming the run's own object as one it did
  not write, and left its versions in the bucket for ever. The other way round, every
  version of a name the run had written was deleted for good, another program's too (it
  overwrote the run's object; its version carries no mark). Each version is now judged by
  its own metadata (one ``HEAD`` with its version id, in a bucket that keeps versions
  alone), a delete marker by its name's versions.
- the run's mark was looked up under ``app-run`` alone, and botocore keeps the case a
  store names a header in: against MinIO (``X-Amz-Meta-App-Run``) every object the run
  wrote by a name, its stamp first, was taken for another program's, and every run's end
  failed. It is read in any case now.
- what a child of the run given an environment without ``PYTEST_APP_RUN_MARK`` writes
  carries no mark, and the run's end named another program or run alone as its writer
  (main's 451df6a7 names the child too, found in the same hour), and nowhere what gives
  the child the token. The message says it now.
- ``app doctor`` of a profile other than testing whose prefix lies inside a run's scratch
  prefix said "empty; the first open stamps it", exit 0, where its open is refused
  (``inside_test_run``); and its ``app data restamp --from testing`` wrote its stamp over
  the run's there, no open before it. Both ask what the open asks now.
- tests/engines.py made its throwaway PostgreSQL clusters in ``/dev/shm`` wherever that is
  a tmpfs, and a container's is one of 64 MB unless given more (Docker's default, so CI
  runners' too): the cluster's databases failed with "No space left on device" from its
  second test on (by hand: a 64 MB tmpfs mounted there in a namespace of its own,
  ``start_postgres`` and a few ``CREATE DATABASE``). ``/dev/shm`` is now taken only with
  1 GiB free.

All real: the suite's ``weed`` (behind a proxy that answers as MinIO does), a bucket that
keeps versions; a tmpfs mounted on
``/dev/shm`` in a mount namespace of the test's own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import forked_app
import own_mounts
import pytest
from engines import S3Engine, new_blob_url
from test_redteam_s51_remote import _Forward, _Refusing, proxy_to, serving
from test_remote_doctor import doctor  # noqa: F401 (a fixture, used by name)

from app.remote.objects import RUN_MARKER, STAMP_NAME, ObjectStore
from app.sandbox import RUN_MARK_ENV
from app.testing import fixtures


def _versioned_store(s3_engine: S3Engine, endpoint: str) -> ObjectStore:
    client, bucket = s3_engine.client(), f"rt67a-{os.getpid()}"
    client.create_bucket(Bucket=bucket)
    client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    blob_url = new_blob_url(s3_engine).replace(f"s3://{s3_engine.bucket}/", f"s3://{bucket}/")
    return s3_engine.objects(blob_url, endpoint_url=endpoint)


def _versions(store: ObjectStore) -> list[str]:
    base = store.location.key("")
    listed = store._client.list_object_versions(Bucket=store.location.bucket, Prefix=base)
    found = [*listed.get("Versions", ()), *listed.get("DeleteMarkers", ())]
    return sorted(item["Key"][len(base) :] for item in found)


def test_a_run_s_end_judges_each_version_by_its_mark_whatever_the_case_of_its_name(
    s3_engine: S3Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(RUN_MARK_ENV, "f" * 32)
    with _title_cased(s3_engine) as proxy:
        store = _versioned_store(s3_engine, proxy.url)
        assert store.create_once(RUN_MARKER, fixtures._own_mark("_pytest_1_abcd", "db"))
        store.open("testing")
        store.put("notes/gone.txt", b"the run's, deleted by its test")
        store.delete("notes/gone.txt")
        store.put("notes/kept.txt", b"the run's, by name")
        assert "App-Run" in (store.mark_of("notes/kept.txt") or {})  # as MinIO answers
        blob = store.new_blob_name()
        store.put(blob, b"the run's upload")
        # A child of the run given an environment of its own, without the run's token.
        with monkeypatch.context() as child:
            child.delenv(RUN_MARK_ENV)
            s3_engine.objects(store.where.partition(" at ")[0], endpoint_url=proxy.url).put(
                "child/out.txt", b"the run's child's"
            )
        # Another program writes over the run's upload (its own bytes, no mark of the run).
        base = store.location.key("")
        s3_engine.client().put_object(
            Bucket=store.location.bucket, Key=base + blob, Body=b"another's"
        )
        with pytest.raises(fixtures._Left) as left:
            fixtures._empty_owned(store, "_pytest_1_abcd")
        with store.get(blob) as stream:
            assert stream.read() == b"another's"
        assert _versions(store) == sorted([RUN_MARKER, blob, "child/out.txt"])
    # Before: the run's stamp and objects were taken for another program's wherever the
    # store names the metadata's header in another case (every run on MinIO failed at its
    # end, naming them); notes/gone.txt, the run's own, was named as another's, its versions
    # left for ever; and every version of the blob was deleted for good, the other
    # program's with the run's.
    assert left.value.what == "the objects it did not write"
    # Before, too: the message named the run's child as a writer (since 451df6a7), and
    # nowhere what gives a child the run's token.
    assert left.value.reason.startswith(
        f"left as they are: child/out.txt, {blob} carry no mark of this run"
    )
    assert (
        "a child of this run given an environment without PYTEST_APP_RUN_MARK, or a process of "
        "another run wrote them"
    ) in left.value.reason
    assert (
        "; a child given an environment of its own is given PYTEST_APP_RUN_MARK in it, and what "
        "it writes through the app is marked; "
    ) in left.value.reason


# Two tmpfs on /dev/shm, in a mount namespace of the child's own: a container's default,
# then one with room; where tests/engines.py makes its clusters on each. The temporary
# directory is named to the child beforehand (`TEMP`): where TMPDIR lies under /dev/shm
# (scripts/test's), the first tmpfs hides it, and Python would fall back to another.
_SHM = """
import os, subprocess, sys, tempfile
sys.path.insert(0, TESTS)
import engines
tempfile.tempdir = TEMP
for size in ("64m", "2g"):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=" + size, "tmpfs", "/dev/shm"], check=True)
    print(size, engines._clusters_dir())
    # A dead run's cluster left there (its owner's start time is no live process's).
    dead = "/dev/shm/" + engines._CLUSTER_PREFIX + "dead"
    os.mkdir(dead)
    with open(dead + "/" + engines._OWNER, "w") as owner:
        owner.write(os.readlink("/proc/self/ns/pid") + " " + str(os.getpid()) + " 0")
    engines._remove_clusters_of_dead_runs()
    print(size, "left" if os.path.exists(dead) else "removed")
    subprocess.run(["umount", "/dev/shm"], check=True)
"""


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("mount") is None, reason="mounts a tmpfs (root)"
)
def test_the_clusters_are_made_in_memory_only_where_it_has_room() -> None:
    code = _SHM.replace("TESTS", repr(str(Path(__file__).parent)))
    done = own_mounts.python_c(code.replace("TEMP", repr(tempfile.gettempdir())))
    # Before: "64m /dev/shm", where a cluster's second test's databases found no space;
    # and, with the floor alone, a dead run's cluster in a /dev/shm short of room "left".
    assert done.stdout.split("\n")[:4] == [
        f"64m {tempfile.gettempdir()}",
        "64m removed",
        "2g /dev/shm",
        "2g removed",
    ]


class _TitleCased(_Forward):
    """Forwards every request to ``weed`` and answers its metadata's headers with their
    names in Go's canonical case (``X-Amz-Meta-App-Run``), as MinIO sends them: botocore
    keeps a header's case in the metadata's keys (minio/minio#6471, boto/botocore#1963)."""

    def _answer(self, status: int, headers: list[tuple[str, str]], data: bytes) -> None:
        def canonical(key: str) -> str:
            meta = key.lower().startswith("x-amz-meta-")
            return "-".join(part.capitalize() for part in key.split("-")) if meta else key

        self.send_response(status)
        for key, value in headers:
            if key.lower() not in {"connection", "transfer-encoding", "content-length"}:
                self.send_header(canonical(key), value)
        # A HEAD's length is the object's, as the store said it (no body follows).
        length = dict((k.lower(), v) for k, v in headers).get("content-length", "0")
        self.send_header("Content-Length", length if self.command == "HEAD" else str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@contextlib.contextmanager
def _title_cased(s3_engine: S3Engine) -> Iterator[_Refusing]:
    with serving(proxy_to(s3_engine, _TitleCased)) as proxy:
        yield proxy


def test_doctor_and_restamp_do_as_the_open_does_inside_a_run_s_scratch_prefix(
    doctor: Any,  # noqa: F811 (the fixture imported above)
    s3_engine: S3Engine,
) -> None:
    base = f"rt67a-doctor-{os.getpid()}/pytest_1_abcd"
    client = s3_engine.client()
    client.put_object(Bucket=s3_engine.bucket, Key=f"{base}/{RUN_MARKER}", Body=b'{"run": "x"}')
    found = doctor(profile="production", prefix=f"{base}/replica")
    where = found.objects().where
    done = found.run()
    # Before: "prefix: ...: empty; the first open stamps it for 'production'", exit 0,
    # where every command of the profile was then refused, inside_test_run.
    assert done.returncode == 78, done.stdout + done.stderr
    assert f"  prefix: {where}: inside a test run's scratch prefix" in done.stdout
    refusal = (
        f"profile 'production': object prefix {where} lies inside a test run's scratch "
        f"prefix, s3://{s3_engine.bucket}/{base} at "
    )
    assert refusal in " ".join((done.stdout + done.stderr).split())
    # A stamp of the run's there (a test's open, which names no database), and another
    # profile's re-stamp from testing: before, it wrote its stamp over the run's, no open
    # before it, and said so, exit 0.
    stamp = found.objects().location.key(STAMP_NAME)
    ours = b'{"profile": "testing", "created": "2026-12-06T00:00:00+00:00"}'
    client.put_object(Bucket=s3_engine.bucket, Key=stamp, Body=ours)
    done = forked_app.run(
        found.environment(),
        ["--profile", "production", "data", "restamp", "--from", "testing", "--yes-i-mean-it"],
    )
    assert done.returncode == 78, done.stdout + done.stderr
    assert refusal in " ".join(done.stderr.split())
    assert client.get_object(Bucket=s3_engine.bucket, Key=stamp)["Body"].read() == ours
    client.delete_objects(
        Bucket=s3_engine.bucket,
        Delete={"Objects": [{"Key": f"{base}/{RUN_MARKER}"}, {"Key": stamp}]},
    )

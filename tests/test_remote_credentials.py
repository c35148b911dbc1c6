"""S3 credentials that expire: a remote profile that sets neither S3 key uses the S3 client's
own credential chain (AWS_* variables, ~/.aws, an instance or container role, SSO, a
``credential_process``), which renews them as they expire.

Before, both keys were required, so a service could only be given static keys (red team 42
left it open: instance roles and short-lived keys could not be used). One key without the
other is still refused (tests/test_config_remote.py). Here a real SeaweedFS and PostgreSQL,
and a ``credential_process`` that hands out keys expiring within the S3 client's refresh
window, so that the client asks for them again as it goes.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import forked_app
import pytest
import test_redteam_s37_remote
from engines import S3Engine
from replicas import Production

production = test_redteam_s37_remote.production  # the fixture, as red team 37 made it

#: A credential_process (AWS's format): keys that expire 30 s from now, each call counted. A
#: shell script: the client runs it again at every request near the keys' expiry.
PROCESS = """\
echo call >> "$1"
soon=$(date -u -d "+30 seconds" +%Y-%m-%dT%H:%M:%SZ)
printf '{{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s", "Expiration": "%s"}}\\n' \\
    {key} {secret} "$soon"
"""


def _chain_env(production: Production, tmp_path: Path, key: str, secret: str) -> dict[str, str]:
    """Production's environment without the S3 keys, with an AWS config whose profile's
    credentials come from `PROCESS` (no other source: no variables, no instance role)."""
    script, config = tmp_path / "credentials.sh", tmp_path / "aws-config"
    script.write_text(PROCESS.format(key=shlex.quote(key), secret=shlex.quote(secret)))
    config.write_text(f"[default]\ncredential_process = /bin/sh {script} {tmp_path / 'calls'}\n")
    env = {k: v for k, v in production.env.items() if not k.startswith(("APP_S3_", "AWS_"))}
    return env | {
        "AWS_CONFIG_FILE": str(config),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-credentials-file"),
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def _app(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    # Forked from the run's zygote with an S3 client's session of its own, made from `env`'s
    # AWS_* variables and files as a new process makes it (the zygote's was made from the
    # run's): tests/forked_app.py, `run_with_its_aws`. About 0.4 s of CPU less than a plain
    # start each (bench/README.md, "perf-remote74"); red team 45's AWS_PROFILE=nosuch case
    # fails if the child keeps the zygote's session.
    return forked_app.run_with_its_aws(env, list(args))


def test_without_s3_keys_the_clients_own_credentials_are_used_and_renewed(
    production: Production, s3_engine: S3Engine, tmp_path: Path
) -> None:
    env = _chain_env(production, tmp_path, s3_engine.access_key_id, s3_engine.secret_access_key)
    checked = _app(env, "data", "check")  # stamps the prefix: reads and writes objects
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # Keys that expire within the client's refresh window are asked for again as it goes.
    assert (tmp_path / "calls").read_text().count("call") >= 2
    doctor = _app(env, "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr


def test_credentials_the_chain_finds_that_the_store_refuses_are_named_by_where_they_came_from(
    production: Production, s3_engine: S3Engine, tmp_path: Path
) -> None:
    assert production.run("data", "check").returncode == 0  # stamped with the right keys
    env = _chain_env(production, tmp_path, s3_engine.access_key_id, "not-the-secret")
    doctor = _app(env, "doctor")
    said = " ".join((doctor.stdout + doctor.stderr).split())
    assert doctor.returncode == 69, said
    assert (
        "and that the credentials from the S3 client's own chain (its 'custom-process' "
        "provider found them; s3_access_key_id and s3_secret_access_key are unset, so it "
        "looks in AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, AWS_PROFILE, ~/.aws/config "
        "and ~/.aws/credentials, and an instance or container role) may use it"
    ) in said, said
    assert "s3_access_key_id / s3_secret_access_key may use it" not in said
    # And none to be found anywhere: said so, where every command stops.
    (tmp_path / "aws-config").write_text("")
    listed = _app(env, "data", "check")
    said = " ".join(listed.stderr.split())
    assert listed.returncode == 69, said
    assert "Unable to locate credentials" in said, said
    assert "the credentials from the S3 client's own chain (it found none;" in said, said


#: A credential_process that never exits, as one waiting for an answer no one gives does; it
#: starts a process of its own first ("escapes": in a session of its own, holding the
#: output open), and writes both pids down. A shell script, not Python: it has written the
#: pids within milliseconds, so the limit it is stopped at can be short.
HANGS = """\
if [ "$2" = escapes ]; then setsid sleep 600 & else sleep 600 & fi
echo "$$ $!" > "$1"
exec sleep 600
"""

#: Keys that expire 30 s from now at the first call, then a wait for ever at every later one.
HANGS_AT_RENEWAL = """\
if [ -e "$1" ]; then exec sleep 600; fi
: > "$1"
soon=$(date -u -d "+30 seconds" +%Y-%m-%dT%H:%M:%SZ)
printf '{{"Version": 1, "AccessKeyId": "%s", "SecretAccessKey": "%s", "Expiration": "%s"}}\\n' \\
    {key} {secret} "$soon"
"""


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("child", ["stays", "escapes"])
def test_a_credential_process_that_never_exits_is_stopped_and_the_command_refused(
    production: Production, tmp_path: Path, child: str
) -> None:
    # botocore waits for its credential_process without a time limit: every command of the
    # profile waited with it, for ever, saying nothing (red team 45's *not stopped*). A
    # child that leaves the process's group ("escapes", holding its output open) is out of
    # reach, but the command ends all the same.
    env = _chain_env(production, tmp_path, "unused", "unused")
    script = tmp_path / "credentials.sh"
    script.write_text(HANGS)
    (tmp_path / "aws-config").write_text(
        f"[default]\ncredential_process = /bin/sh {script} {tmp_path / 'pids'} {child}\n"
    )
    env["APP_S3_CREDENTIAL_PROCESS_SECONDS"] = "0.5"
    # Both commands for the child that stays; one for the child that escapes, whose wait
    # (the second after the kill) is the same whatever the command.
    for args in (("data", "check"), ("doctor",))[: 2 if child == "stays" else 1]:
        done = _app(env, *args)
        said = " ".join((done.stdout + done.stderr).split())
        assert done.returncode == 69, (args, said)
        assert (
            "the credential_process ran for longer than 0.5 s (s3_credential_process_seconds), "
            "so it was stopped, with every process it started"
        ) in said, (args, said)
        assert "custom-process" in said, (args, said)
        # Stopped with what it started: neither it nor its child is left running.
        process, started = map(int, (tmp_path / "pids").read_text().split())
        assert not _alive(process), (args, process)
        if child == "stays":
            assert not _alive(started), (args, started)
        else:
            os.kill(started, signal.SIGKILL)


def test_a_credential_process_that_hangs_when_asked_again_ends_the_request_it_renews_for(
    production: Production, s3_engine: S3Engine, tmp_path: Path
) -> None:
    # Keys that expire soon are asked for again as requests go; a process that hangs then
    # held the request (and its command) for ever.
    env = _chain_env(production, tmp_path, "unused", "unused")
    script = tmp_path / "credentials.sh"
    script.write_text(
        HANGS_AT_RENEWAL.format(
            key=shlex.quote(s3_engine.access_key_id),
            secret=shlex.quote(s3_engine.secret_access_key),
        )
    )
    (tmp_path / "aws-config").write_text(
        f"[default]\ncredential_process = /bin/sh {script} {tmp_path / 'calls'}\n"
    )
    env["APP_S3_CREDENTIAL_PROCESS_SECONDS"] = "0.5"
    done = _app(env, "data", "check")
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 69, said
    assert "the credential_process ran for longer than 0.5 s (s3_credential_process_seconds)" in (
        said
    ), said


#: A credential_process that fails after printing its whole answer, keys and all, on its
#: standard error (a debugging line left in), and a path.
PRINTS_ITS_KEYS = """\
import json, sys
print(json.dumps({{"Version": 1, "AccessKeyId": {key!r}, "SecretAccessKey": {secret!r},
                  "SessionToken": {token!r}}}), file=sys.stderr)
print("and cannot read /home/dev/.aws/sso/cache/0123456789abcdef0123456789abcdef01234567.json",
      file=sys.stderr)
sys.exit(1)
"""


def test_what_a_failing_credential_process_prints_is_quoted_without_its_keys(
    production: Production, tmp_path: Path
) -> None:
    # The refusal quotes the process's standard error (it is what says why): one that
    # printed its keys there had them in every command's output (red team 45's *not
    # stopped*). What looks like a key is hidden; the rest, a path included, is kept.
    key, secret = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    token = "IQoJb3JpZ2luX2VjE" + "Ab1Cd2Ef3Gh4" * 20
    env = _chain_env(production, tmp_path, "unused", "unused")
    script = tmp_path / "credentials.py"
    script.write_text(PRINTS_ITS_KEYS.format(key=key, secret=secret, token=token))
    (tmp_path / "aws-config").write_text(
        f"[default]\ncredential_process = {sys.executable} {script}\n"
    )
    for args in (("data", "check"), ("doctor",)):
        done = _app(env, *args)
        output = done.stdout + done.stderr
        said = " ".join(output.split())
        assert done.returncode == 69, (args, said)
        assert "Error when retrieving credentials from custom-process" in said, (args, said)
        assert '"AccessKeyId": "[a credential, hidden]"' in said, (args, said)
        for secret_part in (key, secret, token, "EXAMPLEKEY", "Ab1Cd2Ef3Gh4"):
            assert secret_part not in output, (args, secret_part, said)
        assert (
            "and cannot read /home/dev/.aws/sso/cache/0123456789abcdef0123456789abcdef01234567.json"
        ) in said, (args, said)

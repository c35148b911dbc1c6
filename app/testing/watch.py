"""The checks of what pytest and its plugins write, from a run's start to its end.

What pytest is told to write (``--junitxml``, ``--log-file``, its cache, a plugin's reports,
the bytecode Python writes) goes through none of the app's code, so the app's sandbox cannot
stop it: it is checked against the roots the run protects and the data roots on disk as the
run starts, again once the conftests have added their options, and as the run ends
(`app.testing.writes` says what each writes). Used by the app's plugin, active or inactive,
and by the fallback entry point where the plugin is switched off
(`app.testing.fallback`): this module has no effect at its import, where the plugin's module
says the run is starting.
"""

from __future__ import annotations

import contextlib
import copy
import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path

import pytest

from app.testing import guard, writes

__all__ = ["WritesOfConftests", "after_the_conftests", "refuse_pytest_writes", "say"]


def refuse_pytest_writes(
    config: pytest.Config,
    roots: dict[str, Path],
    inactive: str | None = None,
    *,
    switched_off: str | None = None,
) -> None:
    """What pytest and its plugins are told to write, checked now against `roots` and the
    data roots on disk, and again once the conftests have added their options.

    Args:
        config: the run's config.
        roots: the roots the run protects, by name.
        inactive: why the app's plugin is inactive in this run, if it is.
        switched_off: what switched the app's plugin off in this run (`app.testing.fallback`).

    Raises:
        pytest.UsageError: naming the path, what writes it and the data root.
    """
    __tracebackhide__ = True
    why = (
        f". The app's plugin is inactive in this run ({inactive}), and pytest writes there "
        "all the same"
        if inactive is not None
        else ""
    )
    if switched_off is not None:
        why = (
            f". The app's plugin is switched off in this run ({switched_off}), and pytest "
            "writes there all the same"
        )
    # What an option argparse opens as pytest parses it is checked against too (red team 51).
    writes.FILE_OPTION_ROOTS.update(roots)
    writes.refuse(config, config.known_args_namespace, roots, why)
    # Registered under no name of ours: pluggy names it by its id, which no `-p no:NAME`
    # can know in advance. Named `app-pytest-writes`, `-p no:app-pytest-writes` blocked it
    # with the run's plugin active, and a writer a conftest registered (`pytest_plugins =
    # ["_pytest.junitxml"]` under `-p no:junitxml`) rewrote a live record (red team 33).
    config.pluginmanager.register(WritesOfConftests(roots, why))


def after_the_conftests(early_config: pytest.Config, args: list[str], given: list[str]) -> None:
    """What pytest writes, checked again where the initial conftests or a plugin's
    ``pytest_load_initial_conftests`` changed it: pytest opens ``--debug`` right after,
    before any ``pytest_configure`` (red team 38). An initial conftest that changed the
    current directory as it was imported moved a relative ``--debug`` into a production
    session; a plugin that added ``--debug=<record>`` to ``args`` (which pytest parses
    again after this hook) got the record rewritten, and the run refused only after."""
    __tracebackhide__ = True
    changed = args != given
    with contextlib.suppress(OSError):
        if Path.cwd() == early_config.invocation_params.dir and not changed:
            return
    options, said = early_config.known_args_namespace, ""
    if changed:  # as pytest parses them next (private: see pyproject.toml)
        options = early_config._parser.parse_known_args(args, namespace=copy.copy(options))
        added = [arg for arg in args if arg not in given]
        said = (
            ". A plugin's pytest_load_initial_conftests changed pytest's arguments (added: "
            f"{' '.join(added) or 'none; some removed'}): change it there"
        )
    for plugin in early_config.pluginmanager.get_plugins():
        if isinstance(plugin, WritesOfConftests):
            writes.refuse(early_config, options, plugin.roots, f"{said}{plugin.why}")


def _as_checked(config: pytest.Config) -> tuple[str, str | None, str, str]:
    """What the check of pytest's writes read: the current directory, the bytecode prefix,
    the options (compared as text: a plugin's values need not compare as equal) and the
    environment (junitxml expands ``$VAR`` in its path as it is configured)."""
    try:
        here = str(Path.cwd())
    except OSError:
        here = ""
    options = repr(sorted(vars(config.option).items()))
    return here, sys.pycache_prefix, options, repr(sorted(os.environ.items()))


class WritesOfConftests:
    """The same check once a conftest's options are parsed: before the cache provider's
    and the logging plugin's own pytest_configure, which write (tryfirst, registered after
    them)."""

    def __init__(self, roots: dict[str, Path], why: str) -> None:
        self.roots, self.why = roots, why
        #: ``sys.pycache_prefix`` as it was checked, put back where code moves it into a
        #: data root later (`_pycache_prefix_moved`).
        self.prefix = sys.pycache_prefix
        #: What was put back during the run, said again as it ends (the run fails).
        self.moved: list[str] = []
        self.failed = False
        #: What the check in the first pytest_configure read (`_as_checked`).
        self.checked: tuple[str, str | None, str, str] | None = None

    @pytest.hookimpl(tryfirst=True)
    def pytest_configure(self, config: pytest.Config) -> None:
        __tracebackhide__ = True
        writes.refuse(config, config.option, self.roots, self.why)
        self.prefix = sys.pycache_prefix
        self.checked = _as_checked(config)

    def _pycache_prefix_moved(self, who: str) -> str | None:
        """Put ``sys.pycache_prefix`` back where code moved it into a data root since it was
        checked, and say so; None where it did not.

        A conftest of a subdirectory (imported as pytest collects, after every check of the
        start) that set it to a production root's ``sessions/`` got the bytecode of every
        test module imported after it written there, ``.pyc`` files under ``root/`` and
        ``tmp/`` beside the sessions (red team 38). It is read before each collector is
        collected, which imports the test modules, and after each test.
        """
        now = sys.pycache_prefix
        if now == self.prefix or not now:
            return None  # (with bytecode off too: code can turn it on again)
        where = writes.pycache_prefix_conflict(now, self.roots)
        if where is None:
            return None  # outside every data root: the code's own business
        sys.pycache_prefix = self.prefix
        message = (
            f"app: {who} set sys.pycache_prefix to {now}, {where}: Python and pytest's "
            "assertion rewriting write the bytecode of every module imported after it "
            f"there. It was put back to {self.prefix!r}; what that code imported itself "
            f"meanwhile may be written there already (`find {now} -name '*.pyc'`, and `app "
            "data check` lists what is not the app's). Set it outside every data root, or "
            "leave it alone"
        )
        self.moved.append(message)
        return message

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_make_collect_report(
        self, collector: pytest.Collector
    ) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
        moved = self._pycache_prefix_moved(
            "code run as pytest collected (a conftest, or a test module as it was imported), "
            f"before {collector.nodeid or 'the session'},"
        )
        if moved is not None:
            say(collector.config, moved, "app: sys.pycache_prefix moved into a data root")
        return (yield)

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_runtest_teardown(self, item: pytest.Item) -> Generator[None, object, object]:
        result = yield
        moved = self._pycache_prefix_moved(f"{item.nodeid} (or its fixtures)")
        if moved is not None:
            pytest.fail(moved, pytrace=False)
        return result

    @pytest.hookimpl(specname="pytest_configure")
    def pytest_configure_again(self, config: pytest.Config) -> None:
        """And again where a conftest's own ``pytest_configure`` changed what was checked:
        one that changed directory made a relative ``--log-file`` empty a production record,
        and one that set ``config.option.log_file`` to a record emptied it (red team 38).
        Neither tryfirst nor trylast: pluggy calls the plain implementations newest first,
        so this runs after the initial conftests' (registered after it) and before
        junitxml's, which makes its path absolute, and the logging plugin's (trylast),
        which opens its file."""
        __tracebackhide__ = True
        if _as_checked(config) == self.checked:
            return
        writes.refuse(config, config.option, self.roots, self.why, at_configure=True)

    @pytest.hookimpl(wrapper=True, trylast=True)
    def pytest_runtestloop(self, session: pytest.Session) -> Generator[None, object, object]:
        """Check again as the tests end (trylast: the innermost wrapper, so before
        pytest-cov's, which writes coverage's data file and reports right after the loop):
        a test may have planted a link since the start (red team 35)."""
        result = yield
        if not hasattr(session.config, "workerinput") and guard.flocks_due_at_end(session.config):
            # For the check of pytest's older directories just before it deletes them, at
            # the session's end: read while these checks run (no worker has that check).
            guard.read_flocks_ahead()
        self._check_again(session)
        return result

    @pytest.hookimpl(wrapper=True, tryfirst=True)
    def pytest_sessionfinish(self, session: pytest.Session) -> Iterator[None]:
        """And before anything writes at the session's end (tryfirst: before junitxml's and
        the cache provider's own hooks)."""
        self._check_again(session)
        try:
            return (yield)
        finally:
            guard.drop_flocks_ahead()

    def _check_again(self, session: pytest.Session) -> None:
        """Not in an xdist worker: its controller writes the report, the cache and the
        combined coverage data, and checks them then; two workers removing one link at
        once failed the second."""
        # A thread a test left running may have moved it since the last test's teardown;
        # pytest-cov imports coverage's reporters after this, and pytest its own modules.
        moved = self._pycache_prefix_moved(
            "code run after the last test (a thread it left, a hook)"
        )
        if moved is not None:
            say(session.config, moved, "app: sys.pycache_prefix moved into a data root")
        if self.moved and not self.failed:  # said as it was put back; fail the run once
            self.failed = True
            session.testsfailed += 1
            if session.exitstatus == pytest.ExitCode.OK:
                session.exitstatus = pytest.ExitCode.TESTS_FAILED
        if hasattr(session.config, "workerinput"):
            return
        message = writes.refuse_at_end(session.config, self.roots, self.why)
        if message is None:
            return
        say(session.config, message, "app: a test linked what pytest writes into a data root")
        # Both: after the loop, pytest sets the exit status from testsfailed (as pytest-cov's
        # --cov-fail-under does); at the session's end, it is set already.
        session.testsfailed += 1
        if session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED


def say(config: pytest.Config, message: str, title: str | None = None) -> None:
    """Show `message` in the terminal, under a separator with `title` if given (or on
    stderr, without pytest's terminal reporter)."""
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.ensure_newline()
        if title is not None:
            reporter.write_sep("!", title)
        reporter.write_line(message, red=True)
    else:
        sys.stderr.write(f"{message}\n")

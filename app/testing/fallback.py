"""What still guards a pytest run in which the app's plugin is switched off.

The package registers two pytest entry points: ``app`` (`app.testing.plugin`, the guard) and
``app_fallback``, this module. ``-p no:app`` switches off the first only. A test's child
``python -m pytest -p no:app --basetemp=<production>/sessions``, given a hand-built
environment, ran none of the app's code, and its pytest emptied a stopped production root's
``sessions/`` as its first test asked for ``tmp_path``. Here, where the app's plugin is not
registered, the ``--basetemp`` is checked before pytest empties it, against the roots of the
run this process belongs to (found through the process tree, as a child's configuration
finds it), and pytest's older numbered directories holding a live data root are kept;
what pytest and its plugins are told to write is checked as an inactive plugin checks it.
Outside any run, a ``--basetemp`` is checked against what is on disk, as an inactive
plugin checks it; inside one, pytest's temporary root (``TMPDIR``) is checked too.

Where the app's plugin runs, this does nothing: importing this module costs no more than
its own few lines, and the app's modules are imported only in a run without the plugin.
A pytest that loads neither entry point (autoload off, or ``-p no:app_fallback`` as well)
registers this module all the same, through ``app-pytest-guard.pth`` (`app.testing.startup`,
red team 42). What this does not cover: ``python -S``, which reads no ``.pth``.
"""

from __future__ import annotations

from collections.abc import Generator

import pytest


def pytest_addoption(parser: pytest.Parser, pluginmanager: pytest.PytestPluginManager) -> None:
    """Guard from the moment pytest registers this module, before any conftest is imported:
    a conftest's ``tryfirst`` ``pytest_configure`` that made pytest's base directory
    (``TempPathFactory.from_config(config).getbasetemp()``) ran before this module's
    `pytest_configure`, and its pytest emptied a production root given as the
    ``--basetemp`` (red team 40). And an option argparse opens for writing as it parses
    (``argparse.FileType("w")``), checked before it opens it, plugin on or off (red team 51)."""
    from app.testing import writes

    writes.guard_file_options(parser)
    if pluginmanager.is_blocked("app"):
        from app.testing import guard

        guard._guard_basetemps_in_this_process(switched_off=True)


@pytest.hookimpl(wrapper=True)
def pytest_load_initial_conftests(
    early_config: pytest.Config, args: list[str]
) -> Generator[None, None, None]:
    """Where the app's plugin is switched off, what pytest and its plugins are told to write
    is checked as an inactive plugin checks it (`app.testing.watch`): against the roots of
    the run this process belongs to, and what is on disk, now and again at the end. A
    wrapper, as the plugin's own: before pytest-cov's tryfirst implementation erases its
    data file.

    A test's child ``python -m pytest -p no:app`` given a hand-built environment and
    ``--junitxml`` naming a production session's ``session.json``, ``--log-file`` its
    profile stamp, or ``-o cache_dir=`` its ``sessions/``: pytest rewrote the record, emptied
    the stamp and made its cache among the sessions of a stopped production root (red team
    41; red team 27 closed it where the plugin runs).
    """
    __tracebackhide__ = True
    manager = early_config.pluginmanager
    if manager.get_plugin("app") is not None or manager.get_plugin("app.testing.plugin"):
        return (yield)
    from app import sandbox as sandboxing
    from app.testing import guard, watch

    given = list(args)
    off = sandboxing._switched_off_by() or "`-p no:app`"
    run = guard.enclosing_run_here()
    guard.guard_python_writes_without_the_plugin(run)  # before any conftest is imported
    enclosing = guard.enclosing_roots(run) if run is not None else {}
    watch.refuse_pytest_writes(early_config, enclosing, switched_off=off)
    result = yield
    # Again where an initial conftest moved the process or changed the arguments: pytest
    # opens --debug right after, before any pytest_configure (red team 41, as red team 38
    # found where the plugin runs).
    watch.after_the_conftests(early_config, args, given)
    return result


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    if config.pluginmanager.get_plugin("app") is not None:
        return
    from app.testing import guard

    guard._guard_basetemps_in_this_process(switched_off=True)

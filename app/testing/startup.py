"""The app's guard in a pytest that loads neither of the package's entry points, or runs
under a runner no command line shows (`announce`).

``app-pytest-guard.pth``, installed at the top of site-packages with its module
``_app_pytest_guard``, runs as every Python of the environment starts. Where pytest is
imported, every run it makes calls :func:`register_fallback` once its plugins are loaded
(entry points, ``-p``, ``PYTEST_PLUGINS``): a run that has not registered the app's plugin
then gets the fallback (`app.testing.fallback`), so pytest's ``--basetemp``, its temporary
root and what it is told to write are checked against the run this process belongs to and
what is on disk, as with ``-p no:app``.

A test's child ``python -m pytest --basetemp=<production root>`` with plugin autoload off
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD=1`` in a hand-built environment, or pytest's own
``--disable-plugin-autoload``), or with ``-p no:app -p no:app_fallback``, ran none of the
app's code, and its pytest emptied a stopped production root as its first test asked for
``tmp_path`` (red team 42; *not stopped* until then). What this does not cover: ``python
-S`` (no site, so no ``.pth``), an environment the package is not installed in, and code
that runs before pytest's configuration module is imported.
"""

from __future__ import annotations

import itertools
from typing import Any, Final

#: The fallback's entry point's name, and the names it is registered under where
#: ``-p no:app_fallback`` blocks that one (``-p no:<name>`` blocks any name given).
_NAME: Final = "app_fallback"
_UNDER_BLOCK: Final = "app.testing.startup:fallback"


def announce() -> None:
    """Say in the registry that a pytest run is starting in this process
    (`app.sandbox.announce_start`), before pytest imports its ``-p`` plugins.

    A ``-p`` plugin whose ``pytest_addoption`` started a child given production's settings
    alone, under ``python ci.py`` whose module calls ``pytest.main``: no command line showed
    pytest (red team 37 reads a runner that calls it itself), the app's plugin had not been
    imported to announce the run, and the child purged a stopped production root (red team
    42).
    """
    from app import sandbox

    # Only where no command line says that pytest runs here: a child finds those as before.
    if not sandbox._looks_like_pytest(sandbox._cmdline("self"), "self"):
        sandbox.announce_start()


def register_fallback(manager: Any) -> None:
    """Register the fallback with pytest's plugin ``manager`` unless the app's plugin, or
    the fallback, is registered already; say that this run has no plugin (`announce`)."""
    if manager.get_plugin("app") is not None or manager.get_plugin("app.testing.plugin"):
        return  # the app's plugin guards this run
    from app import sandbox
    from app.testing import fallback, guard

    sandbox.note_without_plugin()
    if manager.is_registered(fallback):
        return  # its entry point loaded it (`-p no:app` alone)
    # Switched off on purpose, the fallback still guards: a test's child is not its user.
    # pluggy registers nothing, and says nothing, under a blocked name.
    names = itertools.chain(
        [_NAME, _UNDER_BLOCK], (f"{_UNDER_BLOCK}-{n}" for n in itertools.count(1))
    )
    manager.register(fallback, next(name for name in names if not manager.is_blocked(name)))
    guard._guard_basetemps_in_this_process(switched_off=True)

"""Imported by ``app-pytest-guard.pth`` as every Python of the environment starts: where
pytest is imported, every run it makes registers the app's fallback if the app's plugin is
not registered once its plugins are loaded (`app.testing.startup`). Until pytest's
configuration module is imported this costs one look at the head of ``sys.meta_path`` and one
name compared per import; ``python -S``
(no site) skips this file. PYTEST_DONT_REWRITE: imported before pytest, by design.

A test's child ``python -m pytest --basetemp=<production root>`` with plugin autoload off
(``PYTEST_DISABLE_PLUGIN_AUTOLOAD``, ``--disable-plugin-autoload``), or with both of the
package's entry points switched off, ran none of the app's code, and its pytest emptied a
stopped production root (red team 42). Nothing of the app's is imported before pytest has
marked its plugins for assertion rewriting.
"""

from __future__ import annotations

import sys

# Not `typing`: a Python that imports nothing else would pay for it at every start.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_WATCHED = "_pytest.config"


def _arm(config_module: Any) -> None:
    """Wrap two steps of pytest's plugin loading: ``consider_preparse`` (``-p``, the first
    plugins imported after pytest's own, once pytest has marked its plugins for assertion
    rewriting) and ``consider_env``, the last before the initial conftests (after autoload,
    ``-p`` and ``PYTEST_PLUGINS``)."""
    manager_class = config_module.PytestPluginManager
    if getattr(manager_class.consider_env, "_app_armed", False):
        return
    preparse, env = manager_class.consider_preparse, manager_class.consider_env

    def consider_preparse(self: Any, *args: Any, **kwargs: Any) -> Any:
        if not kwargs.get("exclude_only"):  # the first call only reads `-p no:...`
            startup = _startup()
            if startup is not None:
                startup.announce()
        return preparse(self, *args, **kwargs)

    def consider_env(self: Any) -> None:
        env(self)
        startup = _startup()
        if startup is not None:
            startup.register_fallback(self)

    consider_env._app_armed = True  # type: ignore[attr-defined]
    manager_class.consider_preparse = consider_preparse
    manager_class.consider_env = consider_env


def _startup() -> Any:
    try:
        from app.testing import startup
    except ImportError:  # the app removed, this file left behind
        return None
    return startup


class _ArmAfter:
    """The loader of pytest's configuration module, wrapped: it runs the module, then arms
    it (`_arm`). A loader may serve many modules (a ``zipimporter`` serves every module of
    its archive): a first version set its ``exec_module`` in place, so every module pytest
    imported from a zip after its configuration module was "armed" too, and every run of a
    pytest imported from a zip (``PYTHONPATH=pytest.zip``, a zipapp) failed as it started
    (red team 43)."""

    def __init__(self, loader: Any) -> None:
        self.loader = loader

    def create_module(self, spec: Any) -> Any:
        return self.loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        # The module keeps the loader it came from (its source, its resources).
        module.__loader__ = self.loader
        if getattr(module, "__spec__", None) is not None:
            module.__spec__.loader = self.loader
        self.loader.exec_module(module)
        _arm(module)


class _ArmPytest:
    """A finder that finds nothing of its own: it lets the others find pytest's configuration
    module, and arms it (`_arm`) once it has run."""

    busy = False

    @classmethod
    def find_spec(cls, name: str, path: Any = None, target: Any = None) -> Any:
        if cls.busy:
            return None
        if sys.meta_path[0] is not cls:
            # A finder put ahead of this one after it (a `sitecustomize`'s import hook that
            # instruments every module) found pytest's configuration module itself, and the
            # run went unarmed (red team 43): first again at the next import that reaches
            # here, it asks that finder in its turn (`busy`), and wraps what it found.
            _first()
        if name != _WATCHED:
            if name.startswith("_pytest."):  # pytest's own imports after that module's
                _arm_if_imported()
            return None
        from importlib.util import find_spec

        cls.busy = True
        try:
            spec = find_spec(name)
        finally:
            cls.busy = False
        loader = getattr(spec, "loader", None)
        if loader is None or not hasattr(loader, "exec_module"):
            return spec
        spec.loader = _ArmAfter(loader)
        return spec


def _first() -> None:
    """Put the finder first on ``sys.meta_path``. Moved from where it is being asked, the
    others are still asked in their order (the list shifts before it)."""
    if _ArmPytest in sys.meta_path:
        sys.meta_path.remove(_ArmPytest)
    sys.meta_path.insert(0, _ArmPytest)


def _arm_if_imported() -> None:
    """Arm pytest's configuration module where another finder, or a program that ran
    before this file, imported it already (once its plugin manager is defined)."""
    module = sys.modules.get(_WATCHED)
    if module is not None and hasattr(module, "PytestPluginManager"):
        _arm(module)


_first()
_arm_if_imported()

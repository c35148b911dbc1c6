"""Ship ``app-pytest-guard.pth`` at the top of site-packages, in a wheel and in an editable
install, so that every Python of the environment arms the app's guard where pytest is
imported (`app.testing.startup`): a pytest with plugin autoload off loads no entry point."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py
from setuptools.command.editable_wheel import editable_wheel

HERE = Path(__file__).parent
#: Copied to the top of site-packages as they are: the .pth imports the module.
TOP_LEVEL = (HERE / "app-pytest-guard.pth", HERE / "_app_pytest_guard.py")


class BuildPyWithPth(build_py):
    def run(self) -> None:
        super().run()
        for path in TOP_LEVEL:
            self.copy_file(str(path), str(Path(self.build_lib) / path.name), preserve_mode=False)

    def get_outputs(self, include_bytecode: bool = True) -> list[str]:
        ours = [str(Path(self.build_lib) / path.name) for path in TOP_LEVEL]
        return [*super().get_outputs(include_bytecode), *ours]


class EditableWheelWithPth(editable_wheel):
    # An editable wheel maps the packages only; what this method writes into the unpacked
    # wheel is installed as it is, beside the editable install's own .pth.
    def _install_namespaces(self, installation_dir: str, pth_prefix: str) -> None:
        super()._install_namespaces(installation_dir, pth_prefix)
        for path in TOP_LEVEL:
            shutil.copyfile(path, Path(installation_dir, path.name))


setup(cmdclass={"build_py": BuildPyWithPth, "editable_wheel": EditableWheelWithPth})

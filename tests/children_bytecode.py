"""Where the run's Python children keep their bytecode under ``PYTHONDONTWRITEBYTECODE``
(tests/conftest.py, `_children_keep_their_bytecode`), and that place seeded with the bytecode
already installed.

Standard library only: scripts/test runs this file before the run (``python
tests/children_bytecode.py``), so that the run's controller starts with the prefix already
set, seeded, instead of rewriting its plugins' assertions afresh at every run (about 0.5 s of
CPU of the run's head, one core busy: bench/README.md, branch perf-suite72b).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

#: Where the run's Python children keep their bytecode, in the rootdir (.gitignore).
CHILDREN_BYTECODE = ".pytest_children_pycache"


def refusal(prefix: Path) -> str | None:
    """Why `prefix` (CHILDREN_BYTECODE in the project) may not take the run's bytecode, or
    None: where it is a symbolic link, or a filesystem is mounted at it or in it, it is no
    directory of the project's own, and the seeding's links, its `SEEDED` mark and the
    bytecode of every module the run's processes import went wherever it leads. A test that
    left it a link to a stopped production root had the next run write ``.seeded``, ``usr/``
    and the project's own directories into that root before the app's plugin refused the
    prefix (red team 74 on the guard). Mount points from this thread's mount table
    (`app.mountinfo.table`)."""
    from app.errors import shell_word  # each path a word a shell takes whole

    if os.path.islink(prefix):
        return (
            f"it is a symbolic link to {os.readlink(prefix)}, not a directory of the "
            f"project's own. Remove the link (`rm {shell_word(prefix)}`, without a trailing "
            "slash, which would remove what it leads to), then run again"
        )
    from app import mountinfo  # the app's reader of the table (its escapes undone)

    top = os.fspath(prefix)
    try:
        points = [os.fsdecode(entry.point) for entry in mountinfo.table()]
    except OSError:
        return None  # no table: nothing to compare
    for point in points:
        if point == top or point.startswith(top + os.sep):
            return (
                f"a filesystem is mounted {'at it' if point == top else f'in it at {point}'} "
                f"(`findmnt {shell_word(point)}` names what it shows), and the run's processes "
                "would write their bytecode into whatever it shows. Unmount it (`umount "
                f"{shell_word(point)}`), then run again"
            )
    return None


#: Written in CHILDREN_BYTECODE once it holds the installed bytecode (`seed_with_installed_
#: bytecode`), with the interpreter's cache tag and the directories it was linked from.
SEEDED = ".seeded"


def seed_with_installed_bytecode(prefix: Path, project: Path) -> None:
    """Hard links in `prefix`, laid out as ``PYTHONPYCACHEPREFIX`` wants, to the bytecode the
    standard library and the virtualenv already hold in their ``__pycache__`` directories.

    Under a prefix, Python looks for every module's bytecode there and nowhere else: in a
    fresh clone (CI's) the empty prefix had the first children (the three workers, the
    zygotes, the head starts) each compile the standard library and every package they
    import, fastapi, pydantic, boto3 and pytest among them, about 2.3 s of CPU a process,
    side by side: a cold run took 291.2 s where a warm one took 266.5 s (bench/README.md).
    A link is checked as any bytecode is (its source's size and mtime), is never written
    through (Python replaces a stale one by a rename), and costs no copy; where the prefix
    is on another filesystem, nothing is linked and the children compile as before. The
    project's own modules are left to compile: they change between runs."""
    tag = sys.implementation.cache_tag
    if tag is None:
        return
    roots = {os.path.realpath(entry) for entry in sys.path if entry and os.path.isdir(entry)}
    # The docs' and schemathesis' environments (scripts/test), whose children (mkdocs, the
    # fuzzer) run under the prefix too: unseeded, a fresh clone's first of them compiled
    # mkdocs, griffe, pydantic, schemathesis, hypothesis and rich again (about 1,000 modules).
    for other in (".venv-docs", ".venv-fuzz"):
        roots.update(map(os.path.realpath, project.glob(f"{other}/lib/python3*/site-packages")))
    inside = str(project.resolve()) + os.sep
    # Not the project's own code (its virtualenvs' packages are linked).
    roots = {r for r in roots if not (r + os.sep).startswith(inside) or "site-packages" in r}
    marker = prefix / SEEDED
    seeded = "\n".join([tag, *sorted(roots)])  # seeded again where an environment is new
    if marker.exists() and marker.read_text() == seeded:
        return
    for root in sorted(roots):
        for here, dirs, files in os.walk(root):
            # Another environment's packages (the interpreter's own, below its standard
            # library) are used only where they are on sys.path, as a root of their own.
            dirs[:] = [name for name in dirs if name != "site-packages"]
            if os.path.basename(here) != "__pycache__":
                continue
            # Not another interpreter's, nor an optimised one (.opt-1).
            suffix = f".{tag}.pyc"
            names = [name for name in files if name.endswith(suffix) and name.count(".") == 2]
            if not names:
                continue
            target = prefix / os.path.dirname(here).lstrip(os.sep)
            target.mkdir(parents=True, exist_ok=True)
            for name in names:
                try:
                    os.link(os.path.join(here, name), target / name)
                except FileExistsError:
                    continue
                except OSError:
                    return  # another filesystem, or no right to link: compile as before
    marker.write_text(seeded)


if __name__ == "__main__":
    project = Path(__file__).resolve().parent.parent
    prefix = project / CHILDREN_BYTECODE
    if (why := refusal(prefix)) is not None:
        sys.exit(f"{__file__}: refusing to keep the run's bytecode in {prefix}: {why}")
    prefix.mkdir(exist_ok=True)
    seed_with_installed_bytecode(prefix, project)
    print(prefix)

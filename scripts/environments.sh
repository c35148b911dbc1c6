# Sourced by scripts/test and scripts/serve, from the project directory: `set_up VENV
# PIP-ARGUMENTS...` makes a virtual environment and installs into it, both only when needed.
#
# The interpreter the environments are made from: PYTHON if set, else the distribution's own
# /usr/bin/python3 where it is Python 3.11 or later with venv, else python3 from PATH. A test
# run starts about two thousand Python processes (inner pytest runs, `app` commands, servers:
# bench/process_census.py), and Debian's build (optimised with a profile of its own runs and
# at link time, its library in the executable) runs each on about a fifth less CPU than
# pyenv's default build (no --enable-optimizations, libpython shared), which PATH's python3
# is on this machine kind (bench/interpreters.py; bench/README.md, "Two builds of Python").
if [ -n "${PYTHON:-}" ]; then
    python=$PYTHON
elif /usr/bin/python3 -c 'import sys, ensurepip, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
    python=/usr/bin/python3
else
    python=python3
fi
# Which Python an interpreter is: its installation and build (empty where it cannot import its
# own extension modules, as in an environment made over one of another installation).
built_as() { "$1" -c 'import math, ssl, sys; print(sys.base_prefix, sys.version)' 2>/dev/null || true; }
chosen=$(built_as "$python")
# pip runs only when what an install copies differs from what an environment was last set
# up from (its digest is kept in the environment): an unchanged check still costs pip 5 to
# 20 s, as it builds the editable wheel again. The package's code needs no reinstall
# (editable); the guard's .pth and the module it imports are copied into site-packages
# (setup.py), so a change to them does.
# Remove an environment (`remove_env DIR`), unless a filesystem is mounted at it or in it:
# `rm -rf` goes on into a mount and empties what it shows, and a test (run as root) that
# bound a data root into .venv, to look at it beside the installed app, had it emptied by the
# next set-up's removal (red team 74 on the guard). The mount points are this shell's
# (/proc/self/mountinfo's fifth field, `\040` for a blank); none are known elsewhere.
remove_env() {
    local dir esc found
    dir=$(realpath -m -- "$1")
    # Compared in the table's own spelling: a path with a blank (`~/my project/.venv`) was
    # compared as spelled, matched no mount, and was removed through it (red team 74 on
    # regress). From the environment, not `awk -v`, which reads `\040` back as a blank.
    esc=${dir//\\/\\134}
    esc=${esc// /\\040}
    esc=${esc//$'\t'/\\011}
    esc=${esc//$'\n'/\\012}
    found=$(D="$esc" awk '$5 == ENVIRON["D"] || index($5, ENVIRON["D"] "/") == 1 { print $5 }' \
        /proc/self/mountinfo 2>/dev/null || true)
    if [ -n "$found" ]; then
        local first
        first=$(printf '%b' "$(head -n 1 <<<"$found")")
        first=$(printf '%q' "$first")
        echo "$0: kept $1 instead of removing it: a filesystem is mounted in it at $first" \
            "($(wc -l <<<"$found") mount(s) in all; \`findmnt $first\` names what it shows)," \
            "and rm -rf would go on into the mount and empty what it shows. Unmount each" \
            "(umount $first), then run $0 again" >&2
        return 1
    fi
    rm -rf -- "$1"
}
install_files=(pyproject.toml setup.py app-pytest-guard.pth _app_pytest_guard.py)
wants=$(cat "${install_files[@]}" | sha256sum)
set_up() { # set_up VENV PIP-ARGUMENTS...
    local venv=$1
    shift
    # An environment made from another interpreter (one set up before this choice, or by
    # hand with another python3) is made afresh: `python -m venv` over one of another
    # installation keeps its links to the old executable and points them at the new one's
    # standard library, which then fails to import its own extension modules (`_ssl`).
    if [ -e "$venv" ] && [ "$(built_as "$venv/bin/python")" != "$chosen" ]; then
        echo "$0: $venv was made from another Python than $python; making it afresh" >&2
        remove_env "$venv"
    fi
    [ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
    [ "$(cat "$venv/.set-up-from" 2>/dev/null)" = "$wants" ] && return
    "$venv/bin/python" -m pip install -q --disable-pip-version-check "$@"
    echo "$wants" >"$venv/.set-up-from"
}

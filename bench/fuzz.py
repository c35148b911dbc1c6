"""The long schemathesis run: every check and phase, many examples, a fresh seed each time.

The test suite runs the same thing briefly (tests/test_openapi.py, 12 examples per operation
and a fixed seed); this one is for finding what that misses. It starts ``app serve`` on
127.0.0.1 with a data root in a temporary directory (removed afterwards), runs schemathesis
from its own environment, ``.venv-fuzz`` (``bash scripts/test`` creates it), and exits with
schemathesis's status: 0 when it found nothing.

Run: ``.venv/bin/python bench/fuzz.py [--max-examples 500] [--seed N] [-- more options]``
(options after ``--`` go to ``schemathesis run``, for example ``-- --max-failures 1``).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import PROJECT, TOKEN, app_server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--max-examples", type=int, default=500, help="per operation and phase")
    parser.add_argument("--seed", type=int, default=None, help="reproduce an earlier run")
    parser.add_argument("extra", nargs="*", help="more options for `schemathesis run`")
    args = parser.parse_args()
    cli = PROJECT / ".venv-fuzz" / "bin" / "schemathesis"
    if not cli.is_file():
        print(f"{cli} is missing; run `bash scripts/test` once to create it", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="app-fuzz-") as tmp:
        work = Path(tmp)
        with app_server(work / "data", work / "server.log") as server:
            argv = [
                str(cli),
                # The suite's configuration: what no schema can say (a digest is a function
                # of the body; metadata's numbers), explained in the file. Without it the
                # long run reported the digest refusals the suite's run takes as answers.
                f"--config-file={PROJECT / 'tests' / 'schemathesis.toml'}",
                "run",
                f"{server.url}/openapi.json",
                f"--header=Authorization: Bearer {TOKEN}",
                "--checks=all",
                f"--max-examples={args.max_examples}",
                "--generation-database=none",
                "--workers=1",
                *([f"--seed={args.seed}"] if args.seed is not None else []),
                *args.extra,
            ]
            start = time.perf_counter()
            result = subprocess.run(argv, cwd=work, check=False)
            print(f"schemathesis took {time.perf_counter() - start:.0f} s", file=sys.stderr)
            return result.returncode


if __name__ == "__main__":
    sys.exit(main())

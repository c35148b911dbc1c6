"""Run the example files that the documentation includes (docs/examples/).

The example tests are imported here so that pytest collects them with the app's fixtures;
a page that includes one of these files shows code that passed in this run.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "docs" / "examples"


def _import(name: str):  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location(f"_docs_example_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


_sessions = _import("session_tests")
test_the_testing_profile_is_forced = _sessions.test_the_testing_profile_is_forced
test_a_deleted_session_can_be_restored = _sessions.test_a_deleted_session_can_be_restored
test_upload_and_download_over_http = _sessions.test_upload_and_download_over_http
test_an_upload_is_stored_only_if_its_digest_matches = (
    _sessions.test_an_upload_is_stored_only_if_its_digest_matches
)

_profiles = _import("profile_tests")
test_development_listens_on_8000 = _profiles.test_development_listens_on_8000

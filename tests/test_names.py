"""The file-name rule (app.names): one rule, the same in the code and in the OpenAPI document."""

from __future__ import annotations

import pytest

from app.errors import InvalidNameError
from app.names import FILE_NAME_PATTERN, MAX_NAME_BYTES, check_file_name

REFUSED = [
    ("", "empty"),
    ("../x", "path separator"),
    ("C:\\x\\evil.txt", "path separator"),
    ("dir\uff0fevil.txt", "U+FF0F, which looks like a path separator"),  # fullwidth solidus
    ("dir\uff3cevil.txt", "U+FF3C, which looks like a path separator"),  # fullwidth backslash
    ("a\u2215b", "U+2215, which looks like a path separator"),  # division slash
    ("a\u2044b", "U+2044, which looks like a path separator"),  # fraction slash
    (".env", "starts with '.'"),
    ("\uff0eenv", "starts with U+FF0E, which looks like '.'"),
    ("a\u200bb", "invisible format character U+200B"),  # zero-width space
    ("a\u200db", "invisible format character U+200D"),  # zero-width joiner
    ("\ufeffnotes.txt", "invisible format character U+FEFF"),  # byte-order mark
    ("evil\u202etxt.exe", "invisible format character U+202E"),
    ("a\u00a0b", "space character U+00A0"),  # no-break space
    ("a\u3000b", "space character U+3000"),
    ("a\u2028b", "line separator U+2028"),
    ("a\x85b", "control character U+0085"),
    ("a\ue000b", "private-use character U+E000"),
    ("a\u0378b", "unassigned code point U+0378"),
    (" notes.txt", "starts or ends with a space"),
    ("notes.txt ", "starts or ends with a space"),
    ("a\udc80b", "not valid Unicode (the unpaired surrogate U+DC80)"),
    ("é" * 128, "256 bytes long in UTF-8"),
]

ACCEPTED = [
    "notes.txt",
    "résumé final (2).pdf",
    "日本語のファイル.txt",
    "файл.txt",
    "a.b.c",
    "trailing.",
    "100% done; a&b=c #1 [draft] {x} ~$tmp",
    "emoji \U0001f600.png",
    "x" * MAX_NAME_BYTES,
]


@pytest.mark.parametrize(("name", "problem"), REFUSED)
def test_a_name_that_is_not_plain_visible_text_is_refused_naming_why(
    name: str, problem: str
) -> None:
    with pytest.raises(InvalidNameError) as caught:
        check_file_name(name)
    assert problem in caught.value.message
    assert caught.value.http_status == 400


@pytest.mark.parametrize("name", ACCEPTED)
def test_plain_names_in_any_script_are_accepted(name: str) -> None:
    assert check_file_name(name) == name


def test_names_are_normalised_to_nfc_so_macos_and_linux_spellings_are_one_file() -> None:
    assert check_file_name("cafe\u0301.txt") == "caf\u00e9.txt"


# Examples a JSON Schema pattern can judge: valid Unicode, at most 255 characters.
PATTERN_CASES = [(n, False) for n, _ in REFUSED if "\udc80" not in n and len(n) < 128]
PATTERN_CASES += [(n, True) for n in ACCEPTED]


@pytest.mark.parametrize(("name", "accepted"), PATTERN_CASES)
def test_the_documented_pattern_accepts_what_the_code_accepts(name: str, accepted: bool) -> None:
    # The OpenAPI document states the rule as a JSON Schema pattern (ECMA-262, Unicode mode);
    # a JSON Schema validator must agree with the code on every example above.
    import jsonschema_rs

    schema = {"type": "string", "pattern": FILE_NAME_PATTERN, "maxLength": MAX_NAME_BYTES}
    assert jsonschema_rs.is_valid(schema, name) is accepted

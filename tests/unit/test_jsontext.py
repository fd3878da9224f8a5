"""`connector.jsontext.loads` gives Python's `json.loads` answer for every document, faster where it can."""

from __future__ import annotations

import json

import pytest

from connector import jsontext


@pytest.mark.parametrize("text", [
    '{"b":1,"a":[1.5,"é",null,true],"n":{"x":-0.0}}',
    '{"a": 1, "a": 2}',  # a repeated key: the last wins in both
    '[NaN, Infinity, -Infinity]',  # orjson refuses these; Python's reader takes them
    '{"big": 123456789012345678901234567890}',  # beyond 64 bits
    '"\\ud800"',  # a lone surrogate
    '1e400',
    '[18446744073709551616, -9223372036854775809, 9223372036854775807]',  # just past 64 bits, and the largest
])
def test_every_document_means_what_json_loads_says(text: str) -> None:
    expected = json.loads(text)
    got = jsontext.loads(text)
    assert repr(got) == repr(expected)
    assert repr(jsontext.loads(text.encode("utf-8", "surrogatepass"))) == repr(expected)


def test_text_that_is_not_utf8_goes_to_the_fallback_and_not_json_is_a_value_error() -> None:
    utf16 = '{"a": "é"}'.encode("utf-16")
    assert jsontext.loads(utf16, lambda: json.loads(utf16.decode("utf-16"))) == {"a": "é"}
    with pytest.raises(ValueError):
        jsontext.loads("<html>Bad gateway</html>")
    with pytest.raises(ValueError):
        jsontext.loads(b'{"cut": "short')

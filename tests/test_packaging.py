"""ssl/ must never shadow the standard library's TLS module."""
import os
import subprocess
import sys

from conftest import REPO


def test_ssl_folder_has_no_init():
    assert not os.path.exists(os.path.join(REPO, "ssl", "__init__.py"))


def test_import_ssl_from_repo_root_is_stdlib():
    code = "import ssl, sys; print(ssl.__file__); assert hasattr(ssl, 'SSLContext'), ssl.__file__"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert not out.stdout.strip().startswith(os.path.join(REPO, "ssl"))


def test_sslkit_namespace_imports_from_repo_root():
    code = "import ssl, sslkit.methods, sslkit.augmentations, sslkit.data; ssl.create_default_context()"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr

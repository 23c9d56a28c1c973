#!/usr/bin/env python3
"""The Python package as others get it: `meson install` and `pip install`.

Environment:
  EGRESS_BUILDDIR  a configured and built meson build directory (required)
  MESON            the meson command (else `meson` on PATH)
  EGRESS_LIBRARY   the built libegress.so, for the pip-installed package

Each installed copy is imported by a fresh interpreter run from a
temporary directory, so nothing of the source tree is on its path.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
PACKAGE_SRC = os.path.dirname(HERE)  # bindings/python
TMP = tempfile.mkdtemp(prefix="egress-py-install-")

PROBE = """
import json, egress
c = egress.Checker(["127.0.0.1/32:9"])
d = c.check("127.0.0.1", 9, runId="installed")
print(json.dumps({"file": egress.__file__, "library": egress.library_path,
                  "verdict": d.verdict, "runId": d.event["data"]["runId"],
                  "version": egress.version(), "package_version": egress.__version__}))
"""


def skip_or_fail(why):
    if os.environ.get("EGRESS_TEST_NO_SKIP"):
        raise RuntimeError(why + " (EGRESS_TEST_NO_SKIP is set)")
    raise unittest.SkipTest(why)


def clean_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("EGRESS_LIBRARY", "PYTHONPATH", "LD_LIBRARY_PATH", "PYTHONHOME")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    env.update(extra)
    return env


def probe(env, cwd):
    run = subprocess.run([sys.executable, "-c", PROBE], cwd=cwd, env=env,
                         capture_output=True, text=True, timeout=60)
    return run.returncode, run.stdout, run.stderr


def find(root, name, parent=None):
    for top, _, files in os.walk(root):
        if name in files and (parent is None or os.path.basename(top) == parent):
            return top
    return None


def loader_has_libegress():
    """Whether libegress.so.0 is already installed where the loader looks."""
    run = subprocess.run([sys.executable, "-c", "import ctypes; ctypes.CDLL('libegress.so.0')"],
                         env=clean_env(), capture_output=True, timeout=60)
    return run.returncode == 0


class TestMesonInstall(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        builddir = os.environ.get("EGRESS_BUILDDIR")
        meson = os.environ.get("MESON") or shutil.which("meson")
        if not builddir or not meson:
            skip_or_fail("EGRESS_BUILDDIR or meson missing: install test skipped")
        cls.dest = os.path.join(TMP, "destdir")
        run = subprocess.run([meson, "install", "-C", builddir, "--destdir", cls.dest,
                              "--no-rebuild", "--quiet", "--tags", "runtime,python-runtime"],
                             capture_output=True, text=True, timeout=240)
        if run.returncode != 0:
            raise RuntimeError("meson install failed:\n" + run.stdout + run.stderr)
        cls.site = find(cls.dest, "__init__.py", parent="egress")
        cls.libdir = find(cls.dest, "libegress.so.0")

    def test_package_installed_beside_the_library(self):
        self.assertIsNotNone(self.site, "no egress package under " + self.dest)
        self.assertIsNotNone(self.libdir, "no libegress.so.0 under " + self.dest)
        installed = sorted(os.listdir(self.site))
        self.assertEqual([f for f in installed if f.endswith(".py")],
                         ["__init__.py", "_http.py", "_native.py"])
        # Debian's layout for the interpreter that ran meson.
        self.assertIn(os.path.join("lib", "python3", "dist-packages"), self.site)

    def test_import_finds_the_installed_library_through_the_loader(self):
        site = os.path.dirname(self.site)
        code, out, err = probe(clean_env(PYTHONPATH=site, LD_LIBRARY_PATH=self.libdir),
                               cwd=TMP)
        self.assertEqual(code, 0, err)
        got = json.loads(out)
        self.assertTrue(got["file"].startswith(self.dest), got)
        self.assertTrue(os.path.realpath(got["library"]).startswith(os.path.realpath(self.dest)),
                        got)
        self.assertEqual((got["verdict"], got["runId"]), ("allow", "installed"))
        self.assertEqual(got["version"], got["package_version"])

    def test_installed_package_never_falls_back_to_a_build_tree(self):
        if loader_has_libegress():
            self.skipTest("a libegress.so.0 is installed system-wide")
        site = os.path.dirname(self.site)
        code, _, err = probe(clean_env(PYTHONPATH=site), cwd=TMP)
        self.assertNotEqual(code, 0)
        self.assertIn("libegress not found", err)
        self.assertIn("EGRESS_LIBRARY", err)


class TestPipInstall(unittest.TestCase):
    def test_pip_install_without_build_isolation(self):
        library = os.environ.get("EGRESS_LIBRARY")
        if not library:
            skip_or_fail("EGRESS_LIBRARY not set: pip install test skipped")
        for module in ("pip", "setuptools", "wheel"):
            run = subprocess.run([sys.executable, "-c", "import " + module],
                                 capture_output=True, timeout=60)
            if run.returncode != 0:
                skip_or_fail("%s has no %s (Debian: python3-%s)" % (sys.executable, module,
                                                                     module))
        # A copy: pip builds in the source directory it is given.
        src = os.path.join(TMP, "src")
        shutil.copytree(PACKAGE_SRC, src,
                        ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
        target = os.path.join(TMP, "target")
        run = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--no-build-isolation", "--no-index",
             "--no-deps", "--no-cache-dir", "--disable-pip-version-check", "--quiet",
             "--target", target, src],
            capture_output=True, text=True, timeout=240)
        self.assertEqual(run.returncode, 0, run.stdout + run.stderr)
        self.assertEqual(sorted(f for f in os.listdir(os.path.join(target, "egress"))
                                if f.endswith(".py")),
                         ["__init__.py", "_http.py", "_native.py"])
        self.assertFalse(os.path.exists(os.path.join(target, "tests")))
        code, out, err = probe(clean_env(PYTHONPATH=target, EGRESS_LIBRARY=library), cwd=TMP)
        self.assertEqual(code, 0, err)
        got = json.loads(out)
        self.assertTrue(got["file"].startswith(target), got)
        self.assertEqual(got["verdict"], "allow")
        run = subprocess.run(
            [sys.executable, "-c",
             "import importlib.metadata as m; print(m.version('libegress'))"],
            env=clean_env(PYTHONPATH=target), capture_output=True, text=True, timeout=60)
        self.assertEqual(run.stdout.strip(), got["package_version"], run.stderr)


if __name__ == "__main__":
    try:
        unittest.main(verbosity=2)
    finally:
        shutil.rmtree(TMP, ignore_errors=True)

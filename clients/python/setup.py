"""Build hook: generates the gRPC stubs of crossl.v1 from the repository's proto/ before the package is
built (wheel and editable install alike). The generated modules are never committed."""

from __future__ import annotations

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from gen_stubs import generate  # noqa: E402


class BuildWithStubs(build_py):
    def run(self) -> None:
        generate()
        super().run()


setup(cmdclass={"build_py": BuildWithStubs})

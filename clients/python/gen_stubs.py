"""Generates crossl_client/_proto/crossl_v1_pb2{,_grpc}.py(i) from proto/crossl/v1/crossl.proto with
grpcio-tools. Run by the package build (setup.py) and runnable by hand:

    .venv/bin/python clients/python/gen_stubs.py

The proto is compiled under the package's own module path (crossl_client/_proto/crossl_v1.proto), so the
generated code imports itself as `crossl_client._proto` and never collides with the training package
`crossl`; the wire names (package crossl.v1) are unchanged.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PROTO = HERE.parent.parent / "proto" / "crossl" / "v1" / "crossl.proto"
OUT = HERE / "src" / "crossl_client" / "_proto"
GENERATED = ("crossl_v1_pb2.py", "crossl_v1_pb2.pyi", "crossl_v1_pb2_grpc.py")


def generate() -> None:
    if not PROTO.is_file():
        # Outside the repository (an sdist): the stubs must already be there.
        missing = [name for name in GENERATED if not (OUT / name).is_file()]
        if missing:
            raise SystemExit(f"{PROTO} not found and no generated stubs ({', '.join(missing)})")
        return
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "src"
        out = Path(tmp) / "out"
        (src / "crossl_client" / "_proto").mkdir(parents=True)
        out.mkdir()
        shutil.copy(PROTO, src / "crossl_client" / "_proto" / "crossl_v1.proto")
        include = Path(protoc.__file__).parent / "_proto"
        code = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{src}",
                f"-I{include}",
                f"--python_out={out}",
                f"--pyi_out={out}",
                f"--grpc_python_out={out}",
                "crossl_client/_proto/crossl_v1.proto",
            ]
        )
        if code != 0:
            raise SystemExit(f"protoc failed on {PROTO}")
        OUT.mkdir(parents=True, exist_ok=True)
        for name in GENERATED:
            shutil.copy(out / "crossl_client" / "_proto" / name, OUT / name)


if __name__ == "__main__":
    generate()
    print(f"stubs written to {OUT}")

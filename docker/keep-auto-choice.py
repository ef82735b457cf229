"""Leave in a model cache only the export that `auto`'s recorded choice runs.

`baihua models prepare --backend auto` measures every backend and so builds every export (the
fp32 ONNX graph, its int8 copy, both OpenVINO copies: about 0.5 GB each for me5-small); a served
image needs only the chosen one. Usage: python keep-auto-choice.py CACHE_DIR
"""

import json
import shutil
import sys
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def main(cache: Path) -> None:
    choices = sorted(cache.glob("models/*.onnx/*/auto-*.json"))
    if not choices:
        sys.exit(
            f"no auto choice recorded under {cache}/models: run `baihua models prepare "
            "--backend auto` first"
        )
    for choice_file in choices:
        chosen = json.loads(choice_file.read_text())["backend"]
        print(f"{choice_file}: auto chose {chosen}")
        for export in sorted(choice_file.parent.iterdir()):
            if export.is_dir() and export.name != chosen:
                print(f"  removing {export.name} ({folder_bytes(export) / 1e6:.0f} MB)")
                shutil.rmtree(export)
            elif export.is_dir():
                print(f"  keeping {export.name} ({folder_bytes(export) / 1e6:.0f} MB)")


if __name__ == "__main__":
    main(Path(sys.argv[1]))

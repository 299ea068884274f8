import os
from pathlib import Path

# The data mirror beside the checkout (CI and offline machines); online machines download instead.
_mirror = Path(__file__).resolve().parents[2] / "shared" / "data"
if not os.environ.get("HYBRID_MLIR_DATA") and _mirror.is_dir():
    os.environ["HYBRID_MLIR_DATA"] = str(_mirror)

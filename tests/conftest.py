"""Shared test settings.

* Hypothesis: deterministic (derandomized), no deadline.
* CUDA: where this machine has no NVIDIA GPU, the CUDA backend's tests run in Numba's CUDA
  simulator. The simulator is chosen when numba.cuda is first imported, so the variable is
  set here, before any test module imports it; on a GPU machine the same tests run on the
  device. (The registry never picks the simulator for backend="auto".)
"""

import glob
import os

from hypothesis import HealthCheck, settings

if not glob.glob("/dev/nvidia[0-9]*"):
    os.environ.setdefault("NUMBA_ENABLE_CUDASIM", "1")

settings.register_profile(
    "tqref", deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow], max_examples=60
)
settings.load_profile("tqref")

"""The common evaluation harness.

Importing it pins the CPU kernels that PyTorch, oneDNN and MKL pick to AVX2 on x86-64 machines,
before torch runs anything: each library otherwise picks by the CPU it finds (AVX-512 where
there is one), and the last-place differences between those kernels grow through training, so
that a run re-executed on another machine of the same architecture would not give the logged
values. Pinned, the same run gives the same bits on any x86-64 CPU with AVX2 (every one since
2015), which is what `repro verify` relies on. A variable the user has set is left alone.
"""

import os
import platform

CPU_ISA_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2"}

if platform.machine().lower() in ("x86_64", "amd64"):
    for _name, _value in CPU_ISA_PIN.items():
        os.environ.setdefault(_name, _value)

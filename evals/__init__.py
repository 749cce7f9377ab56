"""The common evaluation harness.

Importing it pins the CPU kernels that PyTorch, oneDNN, MKL and numpy's OpenBLAS pick to AVX2 on
x86-64 machines, before torch runs anything: each library otherwise picks by the CPU it finds
(AVX-512 where there is one), and the last-place differences between those kernels grow through training, so
that a run re-executed on another machine of the same architecture would not give the logged
values. Pinned, the same run gives the same bits on any x86-64 CPU with AVX2 (every one since
2015) of the same vendor, which is what `repro verify` relies on. Across vendors it does not hold:
runs made on an AMD EPYC did not re-execute bit for bit on an Intel Xeon under any MKL_CBWR branch
(first PPO update: 0.68861167 vs 0.68861168 entropy), as MKL and oneDNN also choose blocking by
the CPU. A variable the user has set is left alone.
"""

import os
import platform

CPU_ISA_PIN = {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_CBWR": "AVX2",
               "OPENBLAS_CORETYPE": "Haswell"}  # numpy's own BLAS/LAPACK (np.polyfit and the like)

if platform.machine().lower() in ("x86_64", "amd64"):
    for _name, _value in CPU_ISA_PIN.items():
        os.environ.setdefault(_name, _value)

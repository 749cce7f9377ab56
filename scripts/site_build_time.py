"""How long the site takes to build at scale: 25 papers with 200 fixture records each.

Writes a demo spec per paper (the real paper's identity, fixture tiers) and its records into a
temporary folder, then times `mkdocs build --strict` over them. The aim is under 60 s.

    python scripts/site_build_time.py [--records 200] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from evals.spec import all_specs  # noqa: E402
from tests.fixtures.site.records import bench_results  # noqa: E402

AIM_S = 60.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--records", type=int, default=200, help="records per paper")
    ap.add_argument("--keep", type=Path, help="build here and keep the fixtures and the site")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.keep or Path(tmp)
        specs = all_specs()
        t0 = time.perf_counter()
        bench_results(root / "results", root / "specs", specs, args.records)
        n = len(list((root / "results").glob("*/*/*.json")))
        print(f"fixtures: {len(specs)} papers, {n} records written in {time.perf_counter() - t0:.1f} s")
        env = dict(os.environ, REPRO_SPECS=str(root / "specs"), REPRO_RESULTS=str(root / "results"),
                   NO_MKDOCS_2_WARNING="1", DISABLE_MKDOCS_2_WARNING="true")
        t0, cpu0 = time.perf_counter(), _children_cpu()
        done = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(ROOT / "mkdocs.yml"),
                               "-d", str(root / "site")], cwd=ROOT, env=env, capture_output=True, text=True)
        took, cpu = time.perf_counter() - t0, _children_cpu() - cpu0
        if done.returncode:
            print(done.stderr[-3000:], file=sys.stderr)
            print(f"site build failed after {took:.1f} s", file=sys.stderr)
            return 1
        for line in done.stderr.splitlines():
            if "records of" in line or "written in" in line or "built in" in line:
                print("  " + line.split("-", 1)[-1].strip())
        site = root / "site"
        total = sum(f.stat().st_size for f in site.rglob("*") if f.is_file())
        largest = max(site.rglob("*.html"), key=lambda f: f.stat().st_size)
        print(f"site size: {total / 1e6:.1f} MB in all; largest page {largest.relative_to(site)}, "
              f"{largest.stat().st_size / 1e3:.0f} KB")
        print(f"site build: {len(specs)} papers x {args.records} records: {took:.1f} s wall-clock, {cpu:.1f} s of CPU "
              f"({'within' if took < AIM_S else 'OVER'} the {AIM_S:.0f} s aim; {os.cpu_count()} CPU cores, "
              f"load average {os.getloadavg()[0]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

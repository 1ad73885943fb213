"""python -m benchmarks: every benchmark, each printing ratios against its baseline from the same run."""

from . import load

if __name__ == "__main__":
    load.main()

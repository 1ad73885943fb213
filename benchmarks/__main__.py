"""python -m benchmarks: every benchmark, each printing ratios against its baseline from the same run.

    python -m benchmarks            # bulk load (300 rows), encoder backends, ANN at 100k, latency at 10k
    python -m benchmarks.ann --sizes 100000,1000000     # each module alone, at full size

The default sizes keep the whole run to a few minutes on 2 cores; each module's --help gives the full ones.
"""

from . import ann, encode, latency, load

if __name__ == "__main__":
    load.main(["--limit", "300"])
    encode.main([])
    ann.main(["--sizes", "100000"])
    latency.main(["--sizes", "10000"])

"""python -m benchmarks: every benchmark, each printing ratios against its baseline from the same run.

    python -m benchmarks            # bulk load (300 rows), encoder backends, ANN at 100k, latency at 10k,
                                    # then txtai against ours on the FULL NewsArticles sample (the long part)
    python -m benchmarks.ann --sizes 100000,1000000     # each module alone, at full size

The first four keep to a few minutes on 2 cores. The txtai comparison (benchmarks.peer) embeds all 14,248 chunks
of the sample three times (txtai, ours torch, ours onnx int8): ~35-50 min on 2 free cores, far longer on a busy
machine; `python -m benchmarks.peer --limit 50 --queries 20` is its quick check. Each module's --help gives the
full sizes.
"""

from . import ann, encode, latency, load, peer

if __name__ == "__main__":
    load.main(["--limit", "300"])
    encode.main([])
    ann.main(["--sizes", "100000"])
    latency.main(["--sizes", "10000"])
    peer.main([])

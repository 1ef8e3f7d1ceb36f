"""Training-throughput benchmark (the same as `qbench bench`); see qbench/bench.py.

    python scripts/bench.py --methods fp,bnn --models vgg_small --batch-sizes 256 --reference model.width=3
"""
import sys

from qbench.cli import main

sys.exit(main(["bench", *sys.argv[1:]]))

"""Training throughput benchmark (the same as `smose bench throughput`); options: --help.

    python benchmarks/throughput.py --repeats 3 --out benchmarks/results/throughput
"""

from smose.experiments.bench import main

if __name__ == "__main__":
    main(prog="python benchmarks/throughput.py")

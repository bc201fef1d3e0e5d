"""``make bench``: every benchmark scenario, results written to bench/results/."""
import sys

from bench import pipeline


def main() -> int:
    pipeline.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: every benchmark scenario, results written to bench/results/."""
import sys

from bench import pipeline, quota


def main() -> int:
    pipeline.main()
    quota.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

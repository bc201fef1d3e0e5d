"""``make bench``: every benchmark scenario, results written to bench/results/."""
import sys

from bench import isolation, pipeline, quota


def main() -> int:
    pipeline.main()
    quota.main()
    isolation.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``make bench``: every benchmark scenario, results written to bench/results/."""
import sys

from bench import isolation, networks, pipeline, quota, report, simulator_rps


def main() -> int:
    simulator_rps.main()
    pipeline.main()
    quota.main()
    isolation.main()
    networks.main([])
    report.main()
    return 0


if __name__ == "__main__":
    sys.exit(main())

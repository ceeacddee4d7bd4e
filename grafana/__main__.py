"""`python -m grafana`: regenerate grafana/dashboards/*.json from grafana/generate.py."""

from __future__ import annotations

from grafana.generate import write_all


def main() -> None:
    for path in write_all():
        print(f"wrote {path}")


if __name__ == "__main__":
    main()

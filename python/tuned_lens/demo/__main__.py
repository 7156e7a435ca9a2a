"""``python -m tuned_lens.demo``: the same as ``tuned-lens demo``."""

from tuned_lens.demo.cli import main

if __name__ == "__main__":
    raise SystemExit(main())

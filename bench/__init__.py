"""`make bench`: the performance figures of DESIGN.md, as ratios against raw limits measured
in the same run on the same machine. Run with `python -m bench [--quick]`."""

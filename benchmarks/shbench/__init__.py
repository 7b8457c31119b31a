"""The spherical-harmonics benchmark behind benchmarks/sh_bench.py: points (plan, bytes), peers (implementations),
reference (float64 checks), timing (pools, do_bench, copy bandwidth), warm (parallel compile phase), runner
(scheduling, budgets), results (JSON), report (tables, targets, plots)."""

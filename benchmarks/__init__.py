"""Load scenarios for the bridge, its baselines (a bare aiohttp proxy, LiteLLM) and the report.

Run everything with `.venv/bin/python -m benchmarks.run_all`; docs/benchmarks.md is the output.
"""

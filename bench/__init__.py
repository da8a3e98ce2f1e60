"""Benchmarks: impl.MainLoop against bare epoll/selectors loops, asyncio and uvloop.

Run `python -m bench` (about 3 min) or `python -m bench --quick` (about 20 s); see bench/README.md.
"""

"""The batch runner behind ``wan-accel bench``: samples and the speed table, a shared queue, one worker per server,
live progress and the results file (``benchmarks/`` is the separate speed measurement of the pack)."""

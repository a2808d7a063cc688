"""The run: method discovery, the runner that drives one method through a benchmark's sessions,
the worker process each method runs in (its sandbox and limits), the grid over benchmarks x
methods x seeds, and the executors that spread a grid over processes."""

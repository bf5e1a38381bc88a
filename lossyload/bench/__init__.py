"""What the benchmarks and the reference trainer both use to report a measurement, on the library's side of
the line so that neither imports the other: the machine and software a figure came from
(:mod:`~lossyload.bench.machine`), the process's memory (:mod:`~lossyload.bench.memory`), the codec payload's
size in a shard set (:mod:`~lossyload.bench.payload`) and PNG charts (:mod:`~lossyload.bench.chart`, the
``lab`` extra's matplotlib)."""

//! Support code for the benchmarks and the `hub-load` tool.

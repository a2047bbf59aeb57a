"""Benchmarks of tf_alexnet, one module per question: run each from the repository root as
`python -m benchmarks.NAME` (see benchmarks/README.md); results go into docs/benchmarks/."""
